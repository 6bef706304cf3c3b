"""``stemdeck serve``: the mixing server, playing live (the command; the server itself is :mod:`stemdeck.live`).

    stemdeck serve [--buffer-size N] [--sample-rate HZ] [--device INDEX|NAME]
                   [--backend portaudio|null] [--latency low|high|SECONDS]
                   [--record FILE.wav] [--score FILE] [--realtime] [--reconnect SECONDS]
                   [--stats-interval SECONDS] [--host ADDR] [--port PORT] [--config FILE]
                   [crowdstream's --a/--b/--c/--d FILE --rate --vol --ab --levels --c_at ...]

Resolves the settings (flag > environment > stemdeck.toml > platform
default, :mod:`stemdeck.config`) and prints each with its source, then runs
a :class:`~stemdeck.live.Server` with the OSC server until SIGINT or
SIGTERM (a signal during start-up, while the engine compiles, also ends it
cleanly). ``--score FILE`` plays a score file live; ``--record FILE``
records the master output (see :mod:`stemdeck.live`). crowdstream's start-up
flags become OSC messages played the same way (:mod:`stemdeck.control.startup_flags`).
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys

from stemdeck import app, config
from stemdeck.errors import ScoreError, UsageError
from stemdeck.live import DEFAULT_RECONNECT, Server, say_line


def _reconnect(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--reconnect {text!r}: give seconds, e.g. 30 (0: do not reconnect)") from None
    if not math.isfinite(value) or not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"--reconnect {text!r}: give 0 to 86400 seconds")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser, app.SERVE_SETTINGS)
    g = parser.add_argument_group("serve")
    g.add_argument("--record", metavar="FILE", help="record the master output to FILE (.wav: 32-bit float, "
                   ".flac: 24-bit) from a writer thread; the callback never waits for the disk")
    g.add_argument("--score", metavar="FILE", help="play a score file live (one timed OSC message per line, "
                   "as for stemdeck render); its time 0 is half a second after 'ready'")
    g.add_argument("--realtime", action="store_true", help="ask for real-time (SCHED_FIFO) scheduling of the "
                   "audio thread where the host API allows it; says why if the system refuses")
    g.add_argument("--reconnect", metavar="SECONDS", type=_reconnect, default=DEFAULT_RECONNECT,
                   help=f"when the audio device is lost, keep trying to reopen it this long "
                        f"(default {DEFAULT_RECONNECT:g}; 0: exit at once)")
    g.add_argument("--no-movement-bpm", dest="movement_bpm", action=_DeprecatedMovementFlag, nargs=0,
                   help="deprecated: give --movement-bpm off")
    g.add_argument("-v", "--verbose", action="store_true", help="also log debugging detail")
    from stemdeck.control import startup_flags
    from stemdeck.media import preload

    app.add_osc_arguments(parser)
    preload.add_arguments(parser)
    startup_flags.add_arguments(parser)


class _DeprecatedMovementFlag(argparse.Action):
    """``--no-movement-bpm``: the one way is ``--movement-bpm off`` (a setting); this still works, with a note."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.movement_bpm = "off"
        namespace.deprecated = [*getattr(namespace, "deprecated", []),
                                "--no-movement-bpm is deprecated: give --movement-bpm off"]


def _start_up_actions(server, lines) -> None:
    """Play the crowdstream flags' messages once the server is ready, as
    ``--score`` plays its lines (the Controller's handlers, at exact frames)."""
    if not lines:
        return
    import asyncio
    import threading

    from stemdeck.control.osc.server import CLOCK_ADDRESSES
    from stemdeck.control.score_player import play_score

    class WakingController:
        """The Controller, plus the wake the OSC server gives the reporter after a
        clock message (``--watch``'s /print_clock would otherwise wait for one)."""

        def dispatch(self, call, **kw):
            server.controller.dispatch(call, **kw)
            if call.address in CLOCK_ADDRESSES and server.osc is not None:
                server.osc.reporter.wake()

    def start():
        if server.wait_ready():
            server.call_soon(lambda: asyncio.ensure_future(
                play_score(server.engine, WakingController(), lines, on_start=lambda frame: None)))

    threading.Thread(target=start, name="sd-startup-flags", daemon=True).start()


def _setup_logging(verbose: bool) -> None:
    root = logging.getLogger("stemdeck")
    if not any(getattr(h, "_stemdeck", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s: %(message)s", "%H:%M:%S"))
        handler._stemdeck = True
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


class _StopDuringStartup(Exception):
    pass


def _stop_during_startup(signum, frame):
    raise _StopDuringStartup(signal.Signals(signum).name)


def run(args) -> int:
    from stemdeck.control import startup_flags

    startup_flags.apply_stretch_method(args)
    settings = config.resolve(args, app.SERVE_SETTINGS)
    start_up = startup_flags.plan(args)
    _setup_logging(getattr(args, "verbose", False))
    say_line("stemdeck serve")
    for line in settings.describe() + startup_flags.describe(start_up):
        say_line(line)
    for warning in settings.warnings + getattr(args, "deprecated", []):
        say_line(f"warning: {warning}", sys.stderr)
    for note in startup_flags.notes(args):
        say_line(f"note: {note}", sys.stderr)
    try:
        from stemdeck.media.preload import read_sources

        preload = read_sources(args.preload)    # a bad folder or list line stops here, with file:line
        server = Server(settings, record=args.record, score=args.score, realtime=args.realtime,
                        reconnect=args.reconnect, osc_options=app.osc_options(args), preload=preload)
    except ScoreError as exc:
        raise UsageError(str(exc)) from None
    # A signal before the asyncio loop takes over (compiling can take a while
    # on a first start) still ends the server cleanly.
    previous = {sig: signal.signal(sig, _stop_during_startup) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.build()
        _start_up_actions(server, start_up)
        return server.run()
    except _StopDuringStartup as exc:
        say_line(f"stopped by {exc} during start-up")
        server.abort()
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
