"""The live OSC server: wires the transport, the schedule and the reporter to one Controller.

Every packet that reaches the socket is parsed by our own code
(:mod:`stemdeck.control.osc_wire`), counted, and either applied, refused
with one ``/fail <address> <reason>`` to its sender, or dropped and counted
(a sender outside ``--allow``, a flood the engine cannot take). Nothing a
client sends can stop the receive loop, block it, or grow memory without
bound. python-osc's server classes are not used: they drop parse errors
silently, let handler exceptions escape into socketserver and sleep in the
receiving thread for future-timetagged bundles.

Assembly (:mod:`stemdeck.app`): build the server, then the Controller with
the server's :meth:`OscServer.controller_hooks` (replies, wake-up on a
finished load, the media-root check, ``/notify``, ``/quit``, status), then
:meth:`OscServer.start` with that Controller. From then on only the
control thread (:mod:`~stemdeck.control.osc.transport`) calls the
Controller or posts to the engine: it parses, schedules
(:mod:`~stemdeck.control.osc.schedule`), dispatches, and calls
``Controller.poll`` (loads that finished, the engine's events, which the
Controller hands to :meth:`Reporter.on_engine_events
<stemdeck.control.osc.reporter.Reporter.on_engine_events>`) when a loader
thread wakes it or the engine signals events
(:mod:`stemdeck.control.engine_wakeup`), never on a tick.

Bounds. The engine's command ring is checked before each message: when
fewer than :data:`RING_RESERVE` slots are free the message is dropped with
``/fail ... server busy`` and counted, never waited for.

Safety. The server listens on 127.0.0.1 unless told otherwise; ``--host
0.0.0.0`` logs a warning. ``--media-root DIR`` (repeatable) makes
``/load_buffer``, ``/play`` and ``/cue`` refuse any path with a ``..``
component or whose real path (symlinks followed) is outside every root,
with ``/fail <address> outside media root: ...``; relative paths are looked
up in the roots (:mod:`stemdeck.control.access`). Files are only ever
opened by the audio decoder (libsndfile), which refuses what is not audio;
no message writes a file or runs code. ``/quit`` is taken only from the
addresses of the ``quit_from`` setting.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict
from typing import Callable, Iterable

from stemdeck.config import QUIT_FROM_WORDS, SETTINGS
from stemdeck.control import osc_wire as wire
from stemdeck.control import spec
from stemdeck.control.access import MediaRoots, parse_allow
from stemdeck.control.frame_clock import FrameClock
from stemdeck.control.osc.addresses import in_networks, peer_text
from stemdeck.control.osc.counters import Counters, RateLimitedLog
from stemdeck.control.osc.reporter import Reporter
from stemdeck.control.osc.schedule import HORIZON_S, Schedule
from stemdeck.control.osc.transport import DEFAULT_HOST, DEFAULT_MAX_PACKET, DEFAULT_PORT, Transport

log = logging.getLogger("stemdeck.osc")

RING_RESERVE = 256               # engine command slots a message must find free
LOAD_ADDRESSES = frozenset({"/load_buffer", "/play", "/cue"})
#: Messages that move the beat clock or what the reporter says of it: its thread is woken.
CLOCK_ADDRESSES = frozenset({"/set_tempo", "/reset", "/set_meter", "/print_clock", "/dance/total_movement"})
#: Messages that post nothing to the engine: answered even when its queue is full.
NO_ENGINE_COMMANDS = frozenset({"/status", "/get_status", "/status.json", "/sync", "/version",
                                "/notify", "/quit", "/set_meter", "/print_clock", "/quantize"})


class OscServer:
    """The live OSC front end of a :class:`~stemdeck.control.controller.Controller`.

    ``engine``: the running :class:`~stemdeck.engine.engine.Engine`.
    ``host``, ``port``: where to listen (port 0: any free port; see
    :attr:`address`). ``allow``: CIDR strings; packets from other sources are
    dropped and counted. ``media_roots``: folders files may come from.
    ``tcp``: also listen for OSC over TCP on the same port.
    ``stats``: the audio side's ``/status.reply`` fields (see
    :class:`~stemdeck.control.osc.reporter.Reporter`).
    ``output_latency``: seconds from render to the listener's ear (the
    stream's output latency), or a callable returning it (read again every
    20 ms: a device's latency may change on reconnect), so a timetag means
    when it is heard.
    ``on_quit``: called on the control thread after ``/quit`` was answered;
    :meth:`wait` returns True from then on and the server stops receiving.
    ``quit_from``: who may ``/quit``
    (default: this machine's loopback addresses).
    """

    def __init__(self, engine, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 allow: Iterable[str] = (), media_roots: Iterable[str] = (), tcp: bool = False,
                 stats: Callable[[], dict] | None = None, output_latency=0.0,
                 max_packet: int = DEFAULT_MAX_PACKET, horizon: float = HORIZON_S,
                 on_quit: Callable[[], None] | None = None,
                 logger: logging.Logger | None = None, quit_from: Iterable[str] | None = None):
        self.engine = engine
        self.host, self.port, self.tcp = host, int(port), bool(tcp)
        self.quit_from = parse_allow(QUIT_FROM_WORDS["local"] if quit_from is None else quit_from)
        roots = [r for r in (media_roots or ()) if r]
        self.media = MediaRoots(roots) if roots else None
        self.sample_rate = int(engine.sample_rate)
        self.on_quit = on_quit
        self.log = logger or log
        self.ratelog = RateLimitedLog(self.log)
        self.c = Counters()
        self.by_address: dict[str, list[int]] = {}     # address -> [accepted, refused]
        self._ignored_said: set[str] = set()             # addresses whose extra arguments were logged
        self.clock = FrameClock(engine, output_latency=output_latency)
        self.controller = None
        self._stop = threading.Event()
        self._quit = threading.Event()
        self._started = False
        self._loads_dirty = False
        self._last_loading = 0
        self._last_flush = time.monotonic()
        self.transport = Transport(host=host, port=port, tcp=tcp, allow=allow, max_packet=max_packet,
                                   counters=self.c, ratelog=self.ratelog, log=self.log,
                                   stop=self._stop)
        self.reporter = Reporter(engine=engine, transport=self.transport, clock=self.clock,
                                 counters=self.c, ratelog=self.ratelog, log=self.log, stop=self._stop,
                                 stats=stats, counter_snapshot=lambda: self.counters(max_age=0.5))
        self.schedule = Schedule(engine=engine, clock=self.clock, counters=self.c, horizon=horizon,
                                 ratelog=self.ratelog, log=self.log, dispatch=self._dispatch,
                                 fail=self.reporter.fail, notify=self.reporter.notify)
        self._engine_dropped_seen = 0

    def controller_hooks(self) -> dict:
        """The Controller's keyword arguments that connect it to this server:
        ``reply``, ``on_load_ready``, ``check_path`` (``--media-root``), ``hooks``
        (``notify``, ``quit``, ``status``) and ``on_events`` (engine events as
        notifications)."""
        return {"reply": self.reporter.reply, "on_load_ready": self.transport.wake,
                "check_path": self.media.check if self.media is not None else None,
                "on_events": self.reporter.on_engine_events,
                "hooks": {"notify": self.reporter.subscribe, "quit": self._on_quit,
                          "status": self.reporter.status_fields}}

    # -- lifecycle ------------------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound (the port chosen by the system for port 0)."""
        return self.transport.address

    def start(self, controller, loop=None) -> "OscServer":
        """Bind the sockets and serve ``controller`` (built with
        :meth:`controller_hooks`). Raises UsageError when the address cannot
        be bound. ``loop``: an asyncio loop whose thread is to be the control
        thread (call this on that thread); without it the server runs a
        thread of its own."""
        if self._started:
            raise RuntimeError("OscServer already started")
        self._started = True
        self.controller = controller
        from stemdeck.control.engine_wakeup import engine_wakeup   # numba: only for a running server

        self._engine_dropped_seen = self.engine.commands_dropped()
        self.clock.sample(force=True)
        self.transport.start(on_packet=self._packet, on_refuse=self.reporter.fail,
                             on_woken=self._on_woken, housekeeping=self._housekeeping,
                             on_tcp_closed=self.reporter.forget, loop=loop,
                             engine_wakeup=engine_wakeup(self.engine), on_engine=self._poll)
        self.reporter.start(controller)
        self.transport.log_startup()
        if self.media is not None:
            self.log.info("OSC: files only from %s", ", ".join(self.media.roots))
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving and close the sockets (idempotent). From any thread;
        with ``loop``, from another thread it waits for the loop to close them."""
        if self.transport.bound:
            self.reporter.tell_stopping("shutting down")
        self._stop.set()
        self.transport.wake()
        self.reporter.join(timeout)
        self.transport.stop(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until ``/quit`` (True) or ``timeout`` (False)."""
        return self._quit.wait(timeout)

    @property
    def quit_requested(self) -> bool:
        return self._quit.is_set()

    @property
    def running(self) -> bool:
        return self._started and self.transport.running

    def describe(self) -> list[str]:
        """Start-up lines in the style of the other components' ``describe()``."""
        lines = self.transport.describe()
        if self.media is not None:
            lines.append(f"{'media root':<15} " + ", ".join(self.media.roots))
        return lines

    def notify(self, address: str, *args) -> None:
        """Send an event to every /notify subscriber (e.g. ``/device lost``; any thread)."""
        self.reporter.notify(address, *args)

    def socket_drops(self, max_age: float = 0.0) -> int | None:
        """Datagrams the kernel dropped because the receive buffer was full (None: unknown)."""
        return self.transport.socket_drops(max_age)

    def counters(self, max_age: float = 0.0) -> dict:
        """The server's counters (a snapshot), with the kernel's socket drops
        (re-read unless read less than ``max_age`` seconds ago)."""
        out = asdict(self.c)
        out["socket_drops"] = self.socket_drops(max_age=max_age)
        out["subscribers"] = self.reporter.subscribers
        out["clock_relocks"] = self.clock.relocks
        out["by_address"] = {k: list(v) for k, v in sorted(self.by_address.items())}
        return out

    # -- the control thread ------------------------------------------------------------------------------

    def _housekeeping(self) -> float | None:
        """Returns the seconds until it wants to run again (the transport's deadline)."""
        self.clock.sample()
        self._poll()
        self.schedule.run_due()
        now = time.monotonic()
        if now - self._last_flush > 1.0:
            self._last_flush = now
            self.ratelog.flush()
        wake = self.schedule.next_wake()
        if self.ratelog.suppressed:                  # their summary line, a second on
            wake = 1.0 if wake is None else min(wake, 1.0)
        return wake

    def _on_woken(self):
        """A loader thread finished a load: answer now rather than at the next tick."""
        if self.controller.loading:
            self._poll()

    def _poll(self):
        """Finished loads, engine events (through the Controller), ``/loaded``."""
        controller = self.controller
        controller.poll()
        loading = controller.loading
        if loading != self._last_loading:
            self._last_loading = loading
            self._loads_dirty = True
        if self._loads_dirty:
            self._loads_dirty = False
            self.reporter.check_loads()

    def _packet(self, data: bytes, sender) -> None:
        try:
            packet = wire.parse_packet(data)
        except wire.WireError as exc:
            self.c.parse_errors += 1
            if data[:1] == b"#":
                self.reporter.fail(sender, "#bundle", exc.reason + "; nothing in the bundle ran")
            else:
                self.reporter.fail(sender, exc.address or "?", exc.reason)
            return
        except RecursionError:
            self.c.parse_errors += 1
            self.reporter.fail(sender, "#bundle", "bundles nested too deep")
            return
        if isinstance(packet, wire.Message):
            self._dispatch(packet, sender, None)
            return
        self.c.bundles += 1
        self.schedule.bundle(packet, sender)
        self.transport.soon(self.schedule.next_wake())

    def _count(self, address: str, ok: bool) -> None:
        """Per-address tallies (table addresses only, so the dict stays small)."""
        key = address if address in spec.BY_ADDRESS else "other"
        row = self.by_address.get(key)
        if row is None:
            row = self.by_address[key] = [0, 0]
        row[0 if ok else 1] += 1
        if ok:
            self.c.accepted += 1
        else:
            self.c.failed += 1

    def _dispatch(self, msg: wire.Message, sender, at: int | None) -> None:
        c = self.c
        c.messages += 1
        address = msg.address
        if address == "/quit" and not self._may_quit(sender):
            return
        if address not in NO_ENGINE_COMMANDS and self.engine.ring_free() < RING_RESERVE:
            c.busy_dropped += 1
            self._count(address, False)
            self.reporter.fail(sender, address, "server busy: the engine's command queue is full; "
                                                "message dropped (send fewer messages per second)")
            return
        args, ignored = spec.wire_args(address, msg.args)
        if ignored:
            self._ignored(address, ignored)
        paths = spec.path_args(address) if self.media is not None else ()
        if paths:
            args = list(args)
            for i in paths:
                if i < len(args) and isinstance(args[i], str) and args[i].strip():
                    args[i] = self.media.resolve(args[i])
        try:
            out = self.controller.handle(address, args, at=at, sender=sender)
        except Exception as exc:   # the Controller catches handler errors; this is a last resort
            c.internal_errors += 1
            self._count(address, False)
            self.log.exception("OSC: %s failed", address)
            self.reporter.fail(sender, address, f"internal error: {type(exc).__name__}")
            return
        self._count(address, not any(a == "/fail" and r and r[0] == address for a, r in out))
        if address in LOAD_ADDRESSES:
            self._loads_dirty = True
        elif address in CLOCK_ADDRESSES:
            self.reporter.wake()
        dropped = self.engine.commands_dropped()
        if dropped != self._engine_dropped_seen:
            c.engine_dropped += dropped - self._engine_dropped_seen
            self._engine_dropped_seen = dropped
            self.ratelog(logging.WARNING, "OSC: the engine's command queue overflowed: "
                         "%d commands dropped so far", c.engine_dropped)

    def _ignored(self, address: str, n: int) -> None:
        """Extra arguments (or python-osc's empty array), ignored as crowdstream
        did: counted, and said once per address."""
        self.c.ignored_arguments += n
        if address in spec.BY_ADDRESS and address not in self._ignored_said:
            self._ignored_said.add(address)
            self.log.info("OSC: %s: %d argument%s ignored (usage: %s); further ones are only "
                          "counted (/status.json osc.ignored_arguments)", address, n,
                          "" if n == 1 else "s", spec.BY_ADDRESS[address].usage())

    # -- /quit ------------------------------------------------------------------------------------------------

    def _may_quit(self, sender) -> bool:
        """The quit_from setting: a /quit from elsewhere gets /fail and changes nothing."""
        peer = getattr(sender, "peer", sender)
        if in_networks(peer[0] if isinstance(peer, tuple) else peer, self.quit_from):
            return True
        self._count("/quit", False)
        self.reporter.fail(sender, "/quit", f"not allowed from {peer_text(peer)}: the quit_from "
                           f"setting (--quit-from, STEMDECK_QUIT_FROM, [osc] quit_from) allows "
                           f"{SETTINGS['quit_from'].show(tuple(map(str, self.quit_from)))}; "
                           "the server plays on")
        return False

    def _on_quit(self, sender) -> None:
        """The Controller's ``quit`` hook, after ``/done /quit`` was sent."""
        who = peer_text(getattr(sender, "peer", sender))
        self.log.info("OSC: /quit from %s", who)
        self.reporter.tell_stopping(f"/quit from {who}")
        self._quit.set()
        self._stop.set()
        if self.on_quit is not None:
            try:
                self.on_quit()
            except Exception:
                self.log.exception("OSC: the quit action failed")
