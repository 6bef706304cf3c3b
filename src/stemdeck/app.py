"""The one assembly: engine, loader, Controller (and the OSC server when asked) built from resolved settings.

``serve`` (:class:`stemdeck.live.Server`), ``render``, ``tune``, the
benchmarks and the tests' ``Rig`` all build their parts here, so a part is
put together one way everywhere. The order is fixed by who needs whom: the
engine first; the loader (it adds samples to the engine); the OSC server
(sockets not yet bound) when asked; then the Controller, given every
collaborator at construction (the loader, where replies go, who is woken
when a load finishes, the OSC server's hooks); nothing is patched afterwards.
The OSC server then starts serving that Controller
(:meth:`OscServer.start <stemdeck.control.osc.server.OscServer.start>`).

Also here: the settings each command resolves (:data:`TEMPO_SETTINGS`,
:data:`SERVE_SETTINGS`), their mapping to Engine and Controller arguments
(:func:`tempo_options`), and the OSC server's own flags
(:func:`add_osc_arguments`, :func:`osc_options`).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from typing import Any

TEMPO_SETTINGS = ("bpm", "stretch", "keylock_engine", "bpm_config", "movement_bpm")   # serve's and render's
SERVE_SETTINGS = ("buffer_size", "sample_rate", "device", "backend", "latency", "host", "port",
                  "quit_from", "stats_interval", "cache_mb") + TEMPO_SETTINGS

log = logging.getLogger("stemdeck")


@dataclass
class App:
    """The parts, built and connected (nothing started)."""
    engine: Any
    loader: Any
    controller: Any
    osc: Any = None          # an OscServer, when asked for


def tempo_options(settings, warn=log.warning) -> tuple[dict, dict]:
    """The Engine's and the Controller's keyword arguments for the tempo
    settings (``bpm``, ``stretch``, ``keylock_engine``, ``bpm_config``,
    ``movement_bpm``); ``({}, {})`` (the defaults) for None. ``warn`` gets a
    bad ``--bpm-config``'s message."""
    return _engine_tempo(settings), controller_tempo(settings, warn)


def _engine_tempo(settings) -> dict:
    if settings is None:
        return {}
    return {"base_bpm": settings.bpm, "keylock_engine": settings.keylock_engine}


def controller_tempo(settings, warn=log.warning) -> dict:
    """The Controller's half of :func:`tempo_options` (reads ``--bpm-config``)."""
    if settings is None:
        return {}
    from stemdeck.control.movement import load_movement_config

    return {"base_bpm": settings.bpm, "stretch": settings.stretch,
            "movement": load_movement_config(settings.bpm_config, warn),
            "movement_bpm": settings.movement_bpm}


def build_engine(sample_rate: int, *, tempo=None, **engine_kw):
    """An :class:`~stemdeck.engine.engine.Engine` at ``sample_rate`` with the
    tempo settings ``tempo`` (resolved; None: defaults)."""
    from stemdeck.engine.engine import Engine

    return Engine(sample_rate, **engine_kw, **_engine_tempo(tempo))


def assemble(engine, loader, *, lookahead: int = 0, tempo=None, osc: dict | None = None,
             warn=log.warning, **controller_kw) -> App:
    """Connect ``engine`` and ``loader`` to a new Controller.

    ``lookahead``: the block size for a live engine (a message's several
    commands land on one frame), 0 offline. ``tempo``: resolved tempo
    settings (None: defaults, or :func:`controller_tempo` given in ``controller_kw``). ``osc``: keyword arguments of an
    :class:`~stemdeck.control.osc.server.OscServer` to build (it gives the
    Controller its replies and hooks; start it with the Controller).
    ``controller_kw``: the Controller's other collaborators (``reply``,
    ``on_load_ready``, ``hooks``, ``on_events``, ...), given without ``osc``.
    """
    from stemdeck.control.controller import Controller

    server = None
    if osc is not None:
        from stemdeck.control.osc.server import OscServer

        server = OscServer(engine, **osc)
        controller_kw = {**controller_kw, **server.controller_hooks()}
    tempo_kw = controller_tempo(tempo, warn)
    controller = Controller(engine, loader=loader, lookahead=lookahead, **{**tempo_kw, **controller_kw})
    return App(engine, loader, controller, server)


def live_loader(engine, cache_mb=None, **kw):
    """The production loader: :class:`~stemdeck.media.loader.MediaLoader`
    (memory-mapped PCM at the engine's rate plays at once; the rest decodes
    in the background, through the sample cache)."""
    from stemdeck.media.loader import MediaLoader

    if cache_mb is not None:
        kw["cache_mb"] = cache_mb
    return MediaLoader(engine, **kw)


# -- the OSC server's flags ---------------------------------------------------------------------------

def add_osc_arguments(parser: argparse.ArgumentParser) -> None:
    """The OSC server's own flags (``--allow``, ``--media-root``, ``--tcp``);
    ``--host`` and ``--port`` are settings (stemdeck.config)."""
    group = parser.add_argument_group("OSC access")
    group.add_argument("--allow", metavar="CIDR", action="append", default=None,
                       help="accept OSC only from this address or network (e.g. 192.168.1.0/24); "
                            "repeatable; packets from elsewhere are dropped and counted "
                            "(default: anyone who can reach --host)")
    group.add_argument("--media-root", metavar="DIR", action="append", default=None,
                       dest="media_root",
                       help="/load_buffer, /play and /cue may only open files under DIR "
                            "(symlinks followed, '..' refused; relative paths are looked up "
                            "here); repeatable (default: any file the server can read)")
    group.add_argument("--tcp", action="store_true", default=False,
                       help="also accept OSC over TCP on the same port (OSC 1.0 "
                            "length-prefixed packets, as SuperCollider clients send)")


def osc_options(args: argparse.Namespace) -> dict:
    """Keyword arguments for the OSC server from the flags of :func:`add_osc_arguments`."""
    return {"allow": list(getattr(args, "allow", None) or ()),
            "media_roots": list(getattr(args, "media_root", None) or ()),
            "tcp": bool(getattr(args, "tcp", False))}
