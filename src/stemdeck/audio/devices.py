"""PortAudio host APIs and output devices: a snapshot of them, and the one a user named.

Holds :func:`query` (a snapshot, :class:`AudioSystem`), :func:`current` and
:func:`rescan`, :func:`find_output_device` (resolves ``--device INDEX|NAME``)
and :class:`NoOutputDeviceError`. On top of :mod:`stemdeck.audio.pa_runtime`
(the library); the output (:mod:`stemdeck.audio.portaudio`) is on top of both.

Control thread only (start-up, ``stemdeck devices``, reconnecting after a
device loss); never the audio thread. ``sounddevice`` is imported on first
use (by the runtime), because importing it initialises PortAudio, which
scans every host API (slow, and noisy on ALSA).

PortAudio's JACK host API connects to the server named by the environment
variable ``JACK_DEFAULT_SERVER`` *when PortAudio initialises*, i.e. on the
first ``import sounddevice`` in the process (or on :func:`rescan`). Set it
before that, or run the audio in a subprocess. When no JACK server is
running, the JACK host API is simply absent from the list.
"""

from __future__ import annotations

from dataclasses import dataclass

from stemdeck.audio.pa_runtime import runtime
from stemdeck.errors import DeviceError, UsageError


class NoOutputDeviceError(DeviceError, UsageError):
    """No output device exists at all.

    Also a UsageError because the fix is a different command line
    (``--backend null``), so the CLI exits with status 2.
    """


@dataclass(frozen=True)
class HostApi:
    index: int
    name: str
    device_count: int
    default_output: int | None  # device index, None if it has no output device


@dataclass(frozen=True)
class Device:
    index: int
    name: str
    hostapi_index: int
    hostapi: str  # host API name, e.g. "ALSA", "JACK Audio Connection Kit"
    output_channels: int
    input_channels: int
    default_samplerate: float
    low_output_latency: float  # seconds, PortAudio's defaults for this device
    high_output_latency: float
    is_default: bool  # PortAudio's default output device

    @property
    def is_output(self) -> bool:
        return self.output_channels > 0

    def label(self) -> str:
        """``#0 'system' (JACK Audio Connection Kit)``, for messages."""
        return f"#{self.index} '{self.name}' ({self.hostapi})"


@dataclass(frozen=True)
class AudioSystem:
    """What PortAudio saw when it was (re)initialised."""

    portaudio_version: str
    hostapis: tuple[HostApi, ...]
    devices: tuple[Device, ...]

    @property
    def outputs(self) -> tuple[Device, ...]:
        return tuple(d for d in self.devices if d.is_output)

    @property
    def default_output(self) -> Device | None:
        return next((d for d in self.devices if d.is_default), None)


def query() -> AudioSystem:
    """A snapshot of PortAudio's host APIs and devices.

    The first call in a process initialises PortAudio (see the module
    docstring about ``JACK_DEFAULT_SERVER``); later calls see the same
    devices until :func:`rescan`.
    """
    sd = runtime().module()
    hostapis = tuple(
        HostApi(
            index=i,
            name=h["name"],
            device_count=len(h["devices"]),
            default_output=h["default_output_device"] if h["default_output_device"] >= 0 else None,
        )
        for i, h in enumerate(sd.query_hostapis())
    )
    # PortAudio's default output is the default host API's default output
    # device. sd.default.device is not used: it is a user-settable preference.
    default_index = None
    try:
        default_api = sd.default.hostapi
    except sd.PortAudioError:
        default_api = -1
    if 0 <= default_api < len(hostapis):
        default_index = hostapis[default_api].default_output
    devices = tuple(
        Device(
            index=i,
            name=d["name"],
            hostapi_index=d["hostapi"],
            hostapi=hostapis[d["hostapi"]].name,
            output_channels=d["max_output_channels"],
            input_channels=d["max_input_channels"],
            default_samplerate=d["default_samplerate"],
            low_output_latency=d["default_low_output_latency"],
            high_output_latency=d["default_high_output_latency"],
            is_default=(i == default_index and d["max_output_channels"] > 0),
        )
        for i, d in enumerate(sd.query_devices())
    )
    return AudioSystem(sd.get_portaudio_version()[1], hostapis, devices)


def current() -> AudioSystem:
    """A snapshot from a usable PortAudio: a fresh copy is loaded first if
    the current one was abandoned (its JACK server died under it)."""
    rt = runtime()
    with rt.lock:
        rt.ready()
        return query()


def rescan() -> AudioSystem:
    """Re-initialise PortAudio and take a new snapshot.

    Needed to see a device plugged in (or a JACK server started) after the
    first scan, e.g. when reconnecting after a device loss. PortAudio
    closes every open stream when it terminates, so call this only while
    no stream is open. Goes through the PortAudio runtime, which knows when
    terminating would abort the process (a JACK server died under it) and
    loads a fresh PortAudio instead.
    """
    rt = runtime()
    with rt.lock:
        rt.reinitialise()
        return query()


def _listing(devices) -> str:
    return "; ".join(d.label() for d in devices) or "none"


def no_output_device_error(system: AudioSystem) -> NoOutputDeviceError:
    apis = ", ".join(f"{h.name} ({h.device_count} device{'' if h.device_count == 1 else 's'})" for h in system.hostapis)
    return NoOutputDeviceError(
        f"no audio output device found (PortAudio host APIs: {apis or 'none'}). "
        "Connect a sound card, or start your JACK server first (JACK_DEFAULT_SERVER names a "
        "non-default one), or run without audio output with --backend null"
    )


def find_output_device(spec: int | str | None, system: AudioSystem | None = None) -> Device:
    """The output device ``spec`` names.

    ``spec`` is an index (int, or a string of digits), or part of
    ``"NAME, HOST API"`` as ``stemdeck devices`` lists it, matched without
    regard to case; it must match exactly one output device, except that a
    name equal to the whole device name wins over longer names containing
    it. None means PortAudio's default output. ``system`` defaults to
    :func:`query`.

    Raises :class:`NoOutputDeviceError` when there is no output device at
    all, and :class:`UsageError` (listing the candidates) for an unknown,
    ambiguous or input-only device.
    """
    system = query() if system is None else system
    outputs = system.outputs
    if not outputs:
        raise no_output_device_error(system)
    hint = "run 'stemdeck devices' to list them"

    if spec is None:
        if system.default_output is not None:
            return system.default_output
        raise UsageError(
            f"PortAudio reports no default output device; choose one with --device: {_listing(outputs)}"
        )

    if isinstance(spec, bool) or not isinstance(spec, (int, str)):
        raise TypeError(f"device spec must be an int or str, not {type(spec).__name__}")
    text = spec.strip() if isinstance(spec, str) else str(spec)
    if isinstance(spec, int) or text.isdigit():
        index = int(text)
        device = next((d for d in system.devices if d.index == index), None)
        if device is None:
            raise UsageError(f"there is no device #{index}; output devices: {_listing(outputs)} ({hint})")
        if not device.is_output:
            raise UsageError(
                f"device {device.label()} has no output channels (it is an input device); "
                f"output devices: {_listing(outputs)}"
            )
        return device

    if not text:
        raise UsageError(f"empty device name; output devices: {_listing(outputs)}")
    wanted = text.lower()
    matches = [d for d in system.devices if wanted in f"{d.name}, {d.hostapi}".lower()]
    output_matches = [d for d in matches if d.is_output]
    if len(output_matches) == 1:
        return output_matches[0]
    if not output_matches:
        if matches:
            raise UsageError(
                f"device '{text}' matches only input devices ({_listing(matches)}), which have no "
                f"output channels; output devices: {_listing(outputs)}"
            )
        raise UsageError(f"no output device matches '{text}'; output devices: {_listing(outputs)} ({hint})")
    exact = [d for d in output_matches if d.name.lower() == wanted or f"{d.name}, {d.hostapi}".lower() == wanted]
    if len(exact) == 1:
        return exact[0]
    raise UsageError(
        f"device '{text}' is ambiguous: it matches {_listing(output_matches)}; give more of the "
        f"name, add the host API (e.g. '{output_matches[0].name}, {output_matches[0].hostapi}'), "
        f"or use the index"
    )
