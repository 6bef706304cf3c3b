"""``stemdeck devices``: list PortAudio host APIs and output devices.

Marks the default output device, and, when a device is configured
(``--device``, ``STEMDECK_DEVICE`` or stemdeck.toml), which one that
setting selects, so a user can check a name before starting the server.
Exit status: 0; 1 when there is no output device at all; 2 when the
configured device does not resolve.

Main thread only. sounddevice is imported inside :func:`run` (through
:mod:`stemdeck.audio.devices`) so that ``stemdeck --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys

from stemdeck import config
from stemdeck.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--all", action="store_true", help="also list input-only devices (they cannot be used for output)"
    )
    config.add_arguments(parser, ["device"])
    parser.epilog = (
        "PortAudio sees a JACK server only if it is running when stemdeck starts; "
        "JACK_DEFAULT_SERVER selects a named server."
    )


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def format_listing(system, show_inputs: bool = False, selected=None) -> list[str]:
    """The lines ``stemdeck devices`` prints for an :class:`AudioSystem`."""
    lines = [system.portaudio_version, "", "Host APIs:"]
    by_index = {d.index: d for d in system.devices}
    rows = []
    for h in system.hostapis:
        default = by_index.get(h.default_output) if h.default_output is not None else None
        rows.append([str(h.index), h.name, str(h.device_count), f"#{default.index} {default.name}" if default else "none"])
    lines += _table(["#", "name", "devices", "default output"], rows, right={0, 2})

    devices = system.devices if show_inputs else system.outputs
    title = "Devices" if show_inputs else "Output devices"
    lines += ["", f"{title} (* = default output" + (", > = selected by --device)" if selected else ")") + ":"]
    if not devices:
        lines.append("  none")
        return lines
    rows = []
    for d in devices:
        mark = ("*" if d.is_default else " ") + (">" if selected is not None and d.index == selected.index else " ")
        rows.append(
            [
                mark,
                str(d.index),
                d.name,
                d.hostapi,
                str(d.output_channels),
                str(d.input_channels),
                f"{d.default_samplerate:g} Hz",
                f"{d.low_output_latency * 1000:.1f} / {d.high_output_latency * 1000:.1f} ms",
            ]
        )
    lines += _table(
        ["", "#", "name", "host API", "out", "in", "default rate", "output latency low / high"],
        rows,
        right={1, 4, 5, 6},
    )
    return lines


def run(args: argparse.Namespace) -> int:
    from stemdeck.audio.devices import find_output_device, no_output_device_error, query

    settings = config.resolve(args, ["device"])
    for warning in settings.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    system = query()
    selected = None
    problem = None
    if settings.device is not None and system.outputs:
        try:
            selected = find_output_device(settings.device, system)
        except UsageError as exc:  # raised after the listing, which shows how to fix it
            problem = exc
    print("\n".join(format_listing(system, show_inputs=args.all, selected=selected)))
    if problem is not None:
        print(file=sys.stderr)
        raise UsageError(f"device setting ({settings.source('device')}): {problem}")
    if selected is not None:
        print(f"\n--device {settings.device!r} (from {settings.source('device')}) selects {selected.label()}")
    if not system.outputs:
        print(f"\nstemdeck devices: {no_output_device_error(system)}", file=sys.stderr)
        return 1
    return 0
