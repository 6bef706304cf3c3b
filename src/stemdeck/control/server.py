"""The live OSC server: UDP (and optional TCP) in, Controller calls, replies out.

Every packet that reaches the socket is parsed by our own code
(:mod:`stemdeck.control.osc_wire`), counted, and either applied, refused
with one ``/fail <address> <reason>`` to its sender, or dropped and counted
(a sender outside ``--allow``, a flood the engine cannot take). Nothing a
client sends can stop the receive loop, block it, or grow memory without
bound. python-osc's server classes are not used: they drop parse errors
silently, let handler exceptions escape into socketserver and sleep in the
receiving thread for future-timetagged bundles.

Threads:

- the **control thread** (``stemdeck-osc``, started by :meth:`OscServer.start`)
  owns the :class:`~stemdeck.control.handlers.Controller` and the engine's
  producer side: it reads the sockets, parses, converts timetags to engine
  frames, calls the Controller, finishes loads (``Controller.poll``), drains
  the engine's events (``/ended``, late commands; the one consumer of
  ``engine.events()``) and sends replies. It never sleeps to schedule: it
  waits in ``select`` with a short timeout and posts commands with ``at=``
  their frame. Given an asyncio ``loop`` (``stemdeck serve``'s control
  loop), the server runs on that loop's thread instead (``add_reader`` and a
  5 ms timer), so the Controller has one thread whoever else calls it.
- the **reporter thread** (``stemdeck-osc-reporter``) sends ``/beat bar beat``
  (at most once per beat) and ``/underrun count`` to ``/notify`` subscribers
  and logs the clock for ``/print_clock``. It only reads counters.

Time. A bundle's NTP timetag becomes the engine frame heard at that time
(:class:`~stemdeck.control.frame_clock.FrameClock`: estimated from
``engine.frame`` against the monotonic clock, locked so that bundles N
frames apart land N frames apart; about half a block of absolute error). A
timetag of 1 (or 0) means "immediately". A bundle due within ``horizon``
(0.1 s) is posted to the engine at once with its frame; a later one waits in
a bounded heap in the control thread and is posted ``horizon`` before its
frame (so replies such as ``/synced`` in a future bundle come when it runs,
as scsynth does). A bundle whose frame has already been rendered runs at
once, is counted (``late_commands`` in ``/status.reply``) and reported as
``/late seconds address`` (its first message) to subscribers; commands the
engine itself applied late come as ``/late seconds <command>``. Nested
bundles run at their own timetag, never before the enclosing one. A bundle
that is not valid OSC is refused whole (``/fail #bundle <reason>; nothing in
the bundle ran``). When the audio clock is not running, bundles run by the
wall clock.

Bounds. Packets over ``max_packet`` bytes (32 KiB) are refused. The
engine's command ring is checked before each message: when fewer than
:data:`RING_RESERVE` slots are free the message is dropped with ``/fail ...
server busy`` and counted, never waited for. Future bundles hold at most
:data:`MAX_SCHEDULED` messages. UDP replies that the socket cannot take at
once are dropped and counted. The kernel's own drops of a full receive
buffer are read from ``/proc/net/udp`` and reported.

Safety. The server listens on 127.0.0.1 unless told otherwise; ``--host
0.0.0.0`` logs a warning. ``--allow CIDR`` (repeatable) drops, without a
reply, packets from other sources. ``--media-root DIR`` (repeatable) makes
``/load_buffer``, ``/play`` and ``/cue`` refuse any path with a ``..``
component or whose real path (symlinks followed) is outside every root,
with ``/fail <address> outside media root: ...``; relative paths are looked
up in the roots (:mod:`stemdeck.control.access`). Files are only ever
opened by the audio decoder (libsndfile), which refuses what is not audio;
no message writes a file or runs code. ``--tcp`` also accepts OSC 1.0 over
TCP on the same port (each packet prefixed by its int32 big-endian length,
as scsynth clients send), replies going back on the connection.
"""

from __future__ import annotations

import argparse
import errno
import heapq
import ipaddress
import itertools
import logging
import os
import selectors
import socket
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable

from stemdeck.config import QUIT_FROM_WORDS, SETTINGS
from stemdeck.control import osc_wire as wire
from stemdeck.control import spec
from stemdeck.control.access import MediaRoots, parse_allow
from stemdeck.control.frame_clock import FrameClock
from stemdeck.errors import CommandError, UsageError

__all__ = ["OscServer", "Counters", "RateLimitedLog", "FrameClock", "MediaRoots", "parse_allow",
           "add_arguments", "server_options"]

log = logging.getLogger("stemdeck.osc")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 57120
DEFAULT_MAX_PACKET = 32768       # bytes, UDP datagrams and TCP frames alike
MAX_UDP_REPLY = 65507
MAX_SCHEDULED = 8192             # messages waiting in the future-bundle heap
RING_RESERVE = 256               # engine command slots a message must find free
HORIZON_S = 0.1                  # future bundles are posted to the engine this early
TICK_S = 0.005                   # the control loop wakes at least this often
MAX_AHEAD_S = 86400.0            # a timetag further ahead is a client clock problem
MAX_TCP_CLIENTS = 16
TCP_OUT_LIMIT = 1 << 20          # bytes of replies queued per TCP client
RECV_BUFFER = 1 << 21            # requested SO_RCVBUF
BATCH = 256                      # packets read per wake before timers get a turn
LOAD_ADDRESSES = frozenset({"/load_buffer", "/play", "/cue"})
#: Messages that post nothing to the engine: answered even when its queue is full.
NO_ENGINE_COMMANDS = frozenset({"/status", "/get_status", "/status.json", "/sync", "/version",
                                "/notify", "/quit", "/set_meter", "/print_clock", "/quantize"})


# -- counters ---------------------------------------------------------------------------------

@dataclass
class Counters:
    """What the server has seen since start (``/status.json`` "osc", benchmarks)."""
    packets: int = 0             # datagrams / TCP frames received (allowed senders)
    bytes: int = 0
    messages: int = 0            # messages handed to the dispatcher (bundled or not)
    bundles: int = 0
    accepted: int = 0            # messages the Controller took (applied, or waiting for a load)
    failed: int = 0              # messages answered /fail (validation, busy, ...)
    parse_errors: int = 0        # packets that were not valid OSC
    oversized: int = 0
    not_allowed: int = 0         # packets dropped: sender outside --allow
    busy_dropped: int = 0        # messages dropped: engine command ring nearly full
    engine_dropped: int = 0      # commands the engine ring refused anyway
    late: int = 0                # bundles that ran after their frame
    scheduled: int = 0           # messages waiting in the future-bundle heap now
    schedule_dropped: int = 0    # messages refused: heap full or timetag absurd
    replies: int = 0
    replies_dropped: int = 0     # replies the socket could not take
    notifications: int = 0
    internal_errors: int = 0
    tcp_clients: int = 0


# -- rate-limited logging ----------------------------------------------------------------------

class RateLimitedLog:
    """At most ``per_second`` lines (bursts of ``burst``); the rest are counted
    and summarised in one line when logging is allowed again."""

    def __init__(self, logger: logging.Logger, per_second: float = 5.0, burst: int = 20):
        self.logger = logger
        self.rate = per_second
        self.burst = burst
        self._tokens = float(burst)
        self._last = time.monotonic()
        self.suppressed = 0
        self._lock = threading.Lock()

    def __call__(self, level: int, msg: str, *args) -> None:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens < 1.0:
                self.suppressed += 1
                return
            self._tokens -= 1.0
            suppressed, self.suppressed = self.suppressed, 0
        if suppressed:
            self.logger.log(level, "(%d similar lines suppressed)", suppressed)
        self.logger.log(level, msg, *args)

    def flush(self) -> None:
        with self._lock:
            suppressed, self.suppressed = self.suppressed, 0
        if suppressed:
            self.logger.warning("(%d similar lines suppressed)", suppressed)


# -- TCP connections -------------------------------------------------------------------------------------

class _TcpClient:
    """One TCP connection: length-prefixed OSC packets in and out."""

    __slots__ = ("sock", "peer", "inbuf", "outbuf", "lock", "closed", "want_write", "callback",
                 "__weakref__")

    def __init__(self, sock: socket.socket, peer):
        self.sock = sock
        self.peer = peer
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.lock = threading.Lock()
        self.closed = False
        self.want_write = False
        self.callback = None

    def __repr__(self):
        return f"tcp:{_peer_text(self.peer)}"


def _peer_text(peer) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = peer[0]
        return f"[{host}]:{peer[1]}" if ":" in str(host) else f"{host}:{peer[1]}"
    return str(peer)


@dataclass(order=True)
class _Due:
    frame: int
    seq: int
    messages: tuple = ()
    sender: Any = None
    timetag: int = 0


# -- the server ------------------------------------------------------------------------------------------

class OscServer:
    """The live OSC front end of a :class:`~stemdeck.control.handlers.Controller`.

    ``controller``: built by the caller with a
    :class:`~stemdeck.control.handlers.ThreadedLoader` and ``lookahead`` = the
    block size (see :meth:`build_controller`); this server installs its
    ``reply``, ``on_load_ready``, ``check_path`` (with ``media_roots``) and the
    ``notify`` / ``quit`` / ``status`` hooks. From :meth:`start` on, only the
    server's control thread may call the Controller or post to the engine.

    ``engine``: the running :class:`~stemdeck.engine.engine.Engine`.
    ``host``, ``port``: where to listen (port 0: any free port; see
    :attr:`address`). ``allow``: CIDR strings; packets from other sources are
    dropped and counted. ``media_roots``: folders files may come from.
    ``tcp``: also listen for OSC over TCP on the same port.
    ``stats``: a callable returning the ``/status.reply`` fields only the
    audio side knows (``buffer_size``, ``latency_ms``, ``underruns``,
    ``dsp_load_avg``, ``dsp_load_peak``, ``cpu_percent``, ``uptime_s``); it
    is called from the control and reporter threads, never at once.
    Without it, rough figures come from the engine's counters.
    ``output_latency``: seconds from render to the listener's ear (the
    stream's output latency), or a callable returning it (read again every
    20 ms: a device's latency may change on reconnect), so a timetag means
    when it is heard.
    ``on_quit``: called on the control thread after ``/quit`` was answered;
    :meth:`wait` returns True from then on and the server stops receiving.
    """

    def __init__(self, controller, engine, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 allow: Iterable[str] = (), media_roots: Iterable[str] = (), tcp: bool = False,
                 stats: Callable[[], dict] | None = None, output_latency=0.0,
                 max_packet: int = DEFAULT_MAX_PACKET, horizon: float = HORIZON_S,
                 on_quit: Callable[[], None] | None = None, loop=None,
                 drain_events: bool = True, logger: logging.Logger | None = None,
                 quit_from: Iterable[str] | None = None):
        self.controller = controller
        self.loop = loop
        self.drain_events = drain_events
        self.engine = engine
        self.host = host
        self.port = int(port)
        self.tcp = bool(tcp)
        self.allow = parse_allow(allow)
        # who may /quit (the quit_from setting; default: this machine's loopback addresses)
        self.quit_from = parse_allow(QUIT_FROM_WORDS["local"] if quit_from is None else quit_from)
        self._stopping_told = False
        roots = [r for r in (media_roots or ()) if r]
        self.media = MediaRoots(roots) if roots else None
        self.max_packet = int(max_packet)
        self.sample_rate = int(engine.sample_rate)
        self.horizon = float(horizon)
        self.on_quit = on_quit
        self.log = logger or log
        self.ratelog = RateLimitedLog(self.log)
        self.c = Counters()
        self.by_address: dict[str, list[int]] = {}     # address -> [accepted, refused]
        self.clock = FrameClock(engine, output_latency=output_latency)

        self._stats = stats
        self._stats_lock = threading.Lock()
        self._subscribers: dict = {}
        self._subs_snapshot: tuple = ()
        self._heap: list[_Due] = []
        self._seq = itertools.count()
        self._allowed_cache: dict = {}
        self._loads_dirty = False
        self._load_snapshot: dict = {}
        self._warned_clock = False
        self._tcp_clients: dict = {}           # fileno -> _TcpClient
        self._path_args = {m.address: [i for i, a in enumerate(m.args) if a.type == "path"]
                           for m in spec.MESSAGES if any(a.type == "path" for a in m.args)}
        self._udp: socket.socket | None = None
        self._tcp_listener: socket.socket | None = None
        self._sel: selectors.BaseSelector | None = None
        self._wake_r = self._wake_w = None
        self._thread: threading.Thread | None = None
        self._reporter: threading.Thread | None = None
        self._control_ident: int | None = None
        self._timer = None
        self._started = False
        self._closed = False
        self._last_loading = 0
        self._last_flush = time.monotonic()
        self._stop = threading.Event()
        self._quit = threading.Event()
        self._started_at = time.monotonic()
        self._cpu_mark = (time.monotonic(), time.process_time())
        self._inode: int | None = None
        self._drops_read: tuple = (0.0, None)
        self._rbuf = bytearray(65536)
        self._ring = self._dropped = None
        state = getattr(engine, "state", None)
        if state is not None:     # the engine's ring fill and drop counter, read directly
            from stemdeck.engine import layout as L

            self._ring = (state.ring_index, state.ring.shape[0], L.IX_WRITE, L.IX_READ)
            self._dropped = (state.counters, L.CT_DROPPED)
        self._engine_dropped_seen = 0
        self._wire_controller()

    # -- construction helpers -------------------------------------------------------------------

    @staticmethod
    def build_controller(engine, *, block_size: int, base_bpm: float = 120.0, loader_workers: int = 1,
                         **kwargs):
        """A Controller set up for live use: a threaded loader (loads never block
        the control thread) and ``lookahead`` = one block (multi-command
        messages land on one frame)."""
        from stemdeck.control.handlers import Controller, ThreadedLoader

        return Controller(engine, loader=ThreadedLoader(workers=loader_workers),
                          lookahead=int(block_size), base_bpm=base_bpm, **kwargs)

    def _wire_controller(self):
        ctl = self.controller
        ctl.reply_to = self._reply
        ctl.on_load_ready = self._wake
        if self.media is not None:
            previous = ctl.check_path

            def check(path, _prev=previous, _media=self.media):
                _media.check(path)
                if _prev is not None:
                    _prev(path)

            ctl.check_path = check
        hooks = dict(ctl.hooks or {})
        # hooks the caller installed keep working: its status fields and its quit
        self._prev_status = hooks.get("status")
        self._prev_quit = hooks.get("quit")
        hooks.update(notify=self._on_notify, quit=self._on_quit, status=self._status_extra)
        ctl.hooks = hooks

    # -- lifecycle ------------------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound (the port chosen by the system for port 0)."""
        if self._udp is None:
            return (self.host, self.port)
        name = self._udp.getsockname()
        return (name[0], name[1])

    def start(self) -> "OscServer":
        """Bind the sockets and start serving. Raises UsageError when the
        address cannot be bound.

        Without ``loop`` the server runs its own control thread. With
        ``loop`` (an asyncio loop, e.g. ``stemdeck serve``'s control loop)
        call this *on that loop's thread*: the sockets are watched with
        ``loop.add_reader`` and a timer ticks every few milliseconds, so every
        Controller call stays on that thread."""
        if self._started:
            raise RuntimeError("OscServer already started")
        self._started = True
        self._bind()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._started_at = time.monotonic()
        self._engine_dropped_seen = self._engine_dropped()
        self._load_snapshot = {b: (i, i.state) for b, i in self.controller.buffers.items()}
        self.clock.sample(force=True)
        if self.loop is None:
            self._sel = selectors.DefaultSelector()
        self._watch(self._wake_r, self._on_wake)
        self._watch(self._udp, self._on_udp)
        if self._tcp_listener is not None:
            self._watch(self._tcp_listener, self._on_accept)
        if self.loop is None:
            self._thread = threading.Thread(target=self._run, name="stemdeck-osc", daemon=True)
            self._thread.start()
        else:
            self._control_ident = threading.get_ident()
            self._timer = self.loop.call_later(TICK_S, self._tick)
        self._reporter = threading.Thread(target=self._report_loop, name="stemdeck-osc-reporter",
                                          daemon=True)
        self._reporter.start()
        self._log_startup()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving and close the sockets (idempotent). From any thread;
        with ``loop``, from another thread it waits for the loop to close them."""
        if self._udp is not None and not self._closed:
            self._tell_stopping("shutting down")
        self._stop.set()
        self._wake()
        me = threading.current_thread()
        if self._reporter is not None and self._reporter is not me and self._reporter.is_alive():
            self._reporter.join(timeout)
        if self.loop is None:
            if self._thread is not None and self._thread is not me and self._thread.is_alive():
                self._thread.join(timeout)
            if self._thread is None or not self._thread.is_alive():
                self._close_sockets()
            return
        if threading.get_ident() == self._control_ident:
            self._close_sockets()
        elif not self.loop.is_closed():
            done = threading.Event()

            def close():
                self._close_sockets()
                done.set()

            try:
                self.loop.call_soon_threadsafe(close)
            except RuntimeError:          # the loop is closed already
                self._close_sockets()
                return
            done.wait(timeout)

    # -- socket watching: a private selector, or the caller's asyncio loop --------------------------------

    def _watch(self, sock, callback, write: bool = False) -> None:
        """Call ``callback(writable)`` when ``sock`` is readable (and writable, if ``write``)."""
        if self.loop is None:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if write else 0)
            try:
                self._sel.modify(sock, events, callback)
            except KeyError:
                self._sel.register(sock, events, callback)
        else:
            self.loop.add_reader(sock, self._guarded, callback, False)
            if write:
                self.loop.add_writer(sock, self._guarded, callback, True)
            else:
                self.loop.remove_writer(sock)

    def _unwatch(self, sock) -> None:
        try:
            if self.loop is None:
                self._sel.unregister(sock)
            else:
                self.loop.remove_reader(sock)
                self.loop.remove_writer(sock)
        except (KeyError, ValueError, OSError, RuntimeError):
            pass

    def _guarded(self, callback, writable: bool) -> None:
        """Run one I/O callback on the caller's loop; nothing escapes into asyncio."""
        if self._stop.is_set():
            return
        try:
            callback(writable)
        except Exception:
            self.c.internal_errors += 1
            self.log.exception("OSC: receive error (continuing)")

    def _tick(self) -> None:
        """The loop mode's timer: housekeeping every TICK_S."""
        self._timer = None
        if self._stop.is_set():
            return
        try:
            self._housekeeping()
        except Exception:
            self.c.internal_errors += 1
            self.log.exception("OSC: housekeeping error (continuing)")
        if not self._stop.is_set():
            self._timer = self.loop.call_later(TICK_S, self._tick)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until ``/quit`` (True) or ``timeout`` (False)."""
        return self._quit.wait(timeout)

    @property
    def quit_requested(self) -> bool:
        return self._quit.is_set()

    @property
    def running(self) -> bool:
        if self.loop is not None:
            return self._started and not self._stop.is_set()
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _bind(self):
        family, addr = _resolve(self.host, self.port)
        udp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            try:
                udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
            except OSError:
                pass
            udp.bind(addr)
        except OSError as exc:
            udp.close()
            raise UsageError(_bind_failure("UDP", self.host, self.port, exc)) from None
        udp.setblocking(False)
        self._udp = udp
        try:
            self._inode = os.fstat(udp.fileno()).st_ino
        except OSError:
            self._inode = None
        if self.tcp:
            port = udp.getsockname()[1]
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((addr[0], port) + tuple(addr[2:]))
                tcp.listen(8)
            except OSError as exc:
                tcp.close()
                udp.close()
                self._udp = None
                raise UsageError(_bind_failure("TCP", self.host, port, exc)) from None
            tcp.setblocking(False)
            self._tcp_listener = tcp

    def describe(self) -> list[str]:
        """Start-up lines in the style of the other components' ``describe()``."""
        host, port = self.address
        lines = [f"{'osc':<15} UDP {_peer_text((host, port))}" + (" and TCP" if self.tcp else "")
                 + ("" if not _is_wildcard(self.host) else " (all interfaces)")]
        if self.allow:
            senders = ", ".join(map(str, self.allow))
        elif _is_wildcard(self.host):
            senders = "anyone on the network (no --allow)"
        else:
            senders = f"anyone who can reach {host}"
        lines.append(f"{'osc senders':<15} {senders}")
        if self.media is not None:
            lines.append(f"{'media root':<15} " + ", ".join(self.media.roots))
        return lines

    def _log_startup(self):
        host, port = self.address
        where = f"{_peer_text((host, port))}"
        self.log.info("OSC: listening on UDP %s%s", where, " and TCP" if self.tcp else "")
        if _is_wildcard(self.host):
            if self.allow:
                self.log.warning("OSC: listening on all interfaces (%s); only %s may send",
                                 where, ", ".join(map(str, self.allow)))
            else:
                self.log.warning(
                    "OSC: listening on all interfaces (%s): anyone who can reach this machine "
                    "can control stemdeck and make it load audio files; limit senders with "
                    "--allow CIDR (e.g. --allow 192.168.1.0/24) and files with --media-root DIR",
                    where)
        elif self.allow:
            self.log.info("OSC: only %s may send", ", ".join(map(str, self.allow)))
        if self.media is not None:
            self.log.info("OSC: files only from %s", ", ".join(self.media.roots))

    def _close_sockets(self):
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for client in list(self._tcp_clients.values()):
            self._close_tcp(client)
        for sock in (self._udp, self._tcp_listener, self._wake_r, self._wake_w):
            if sock is not None:
                self._unwatch(sock)
                try:
                    sock.close()
                except OSError:
                    pass
        self._wake_w = None
        if self._sel is not None:
            try:
                self._sel.close()
            except Exception:
                pass

    def _wake(self):
        w = self._wake_w
        if w is None:
            return
        try:
            w.send(b"\x00")
        except (BlockingIOError, OSError):
            pass

    # -- the control loop ------------------------------------------------------------------------------

    def _run(self):
        """The private control thread (no ``loop``)."""
        self._control_ident = threading.get_ident()
        try:
            while not self._stop.is_set():
                try:
                    for key, mask in self._sel.select(TICK_S):
                        key.data(bool(mask & selectors.EVENT_WRITE))
                        if self._stop.is_set():
                            break
                    self._housekeeping()
                except Exception:   # the loop must survive anything a packet can cause
                    self.c.internal_errors += 1
                    self.log.exception("OSC: control loop error (continuing)")
                    time.sleep(0.01)
        finally:
            self._close_sockets()

    def _housekeeping(self):
        self.clock.sample()
        loading = self.controller.loading
        if loading:
            self.controller.poll()
        if loading != self._last_loading:      # a load finished (here or in someone's poll)
            self._last_loading = loading
            self._loads_dirty = True
        if self._loads_dirty:
            self._check_loads()
        if self.drain_events:
            self.on_engine_events(self.engine.events())
        self._run_due()
        now = time.monotonic()
        if now - self._last_flush > 1.0:
            self._last_flush = now
            self.ratelog.flush()

    def _on_wake(self, _writable=False):
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            pass
        if self.controller.loading and self.controller.poll():    # a load finished: answer now
            self._loads_dirty = True
            self._check_loads()
        self._flush_tcp_writers()

    def _on_udp(self, _writable=False):
        sock = self._udp
        buf = self._rbuf
        view = memoryview(buf)
        for _ in range(BATCH):
            try:
                n, sender = sock.recvfrom_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:          # e.g. ECONNREFUSED echoed from an earlier reply
                if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    continue
                raise
            if not self._allowed(sender):
                continue
            self.c.packets += 1
            self.c.bytes += n
            if n > self.max_packet:
                self.c.oversized += 1
                self._fail(sender, "#bundle" if buf[:1] == b"#" else _peek_address(view[:n]),
                           f"packet of {n} bytes is over the {self.max_packet}-byte limit: "
                           "send fewer messages per bundle")
                continue
            self._packet(bytes(view[:n]), sender)
            if self._stop.is_set():
                return

    def _allowed(self, sender) -> bool:
        if not self.allow:
            return True
        host = sender[0] if isinstance(sender, tuple) else sender
        ok = self._allowed_cache.get(host)
        if ok is None:
            ok = _in_networks(host, self.allow)
            if len(self._allowed_cache) > 4096:
                self._allowed_cache.clear()
            self._allowed_cache[host] = ok
        if not ok:
            self.c.not_allowed += 1
            self.ratelog(logging.WARNING, "OSC: dropped a packet from %s: not in --allow",
                         _peer_text(sender))
        return ok

    # -- packets and bundles --------------------------------------------------------------------------

    def _packet(self, data: bytes, sender) -> None:
        try:
            packet = wire.parse_packet(data)
        except wire.WireError as exc:
            self.c.parse_errors += 1
            if data[:1] == b"#":
                self._fail(sender, "#bundle", exc.reason + "; nothing in the bundle ran")
            else:
                self._fail(sender, exc.address or "?", exc.reason)
            return
        except RecursionError:
            self.c.parse_errors += 1
            self._fail(sender, "#bundle", "bundles nested too deep")
            return
        if isinstance(packet, wire.Message):
            self._dispatch(packet, sender, None)
            return
        self.c.bundles += 1
        groups: list = []
        _flatten(packet, None, groups)
        for timetag, messages in groups:
            self._schedule(timetag, messages, sender)

    def _schedule(self, timetag: int | None, messages: list, sender) -> None:
        if timetag is None:
            for m in messages:
                self._dispatch(m, sender, None)
            return
        self.clock.sample(force=True)
        frame = self.clock.frame_for(timetag)
        if frame is None:
            if not self._warned_clock:
                self._warned_clock = True
                self.log.warning("OSC: the audio clock is not running: timetagged bundles run "
                                 "as soon as they arrive")
            for m in messages:
                self._dispatch(m, sender, None)
            return
        now = int(self.engine.frame)
        ahead = frame - now
        if ahead > MAX_AHEAD_S * self.sample_rate:
            self.c.schedule_dropped += len(messages)
            self._fail(sender, messages[0].address,
                       f"bundle timetag is {ahead / self.sample_rate:.0f} s in the future (more "
                       "than a day): check the sending machine's clock; bundle dropped")
            return
        if ahead > self._horizon_frames():
            if self.c.scheduled + len(messages) > MAX_SCHEDULED:
                self.c.schedule_dropped += len(messages)
                self._fail(sender, messages[0].address,
                           f"{self.c.scheduled} messages already wait in future bundles (limit "
                           f"{MAX_SCHEDULED}): bundle dropped; send bundles closer to their time")
                return
            self.c.scheduled += len(messages)
            heapq.heappush(self._heap, _Due(frame, next(self._seq), tuple(messages), sender, timetag))
            return
        self._run_at(frame, messages, sender)

    def _horizon_frames(self) -> int:
        block = self.clock.block or 0
        return int(max(self.horizon * self.sample_rate, 4 * block))

    def _run_due(self) -> None:
        if not self._heap:
            return
        if not self.clock.running:
            # the audio clock stopped (a lost device): what is due by the wall
            # clock runs as soon as possible rather than waiting for frames
            limit_tt = wire.ntp_now() + int(self.horizon * 2**32)
            due_now = [d for d in self._heap if d.timetag <= limit_tt]
            if due_now:
                self._heap = [d for d in self._heap if d.timetag > limit_tt]
                heapq.heapify(self._heap)
                for due in sorted(due_now):
                    self.c.scheduled -= len(due.messages)
                    for m in due.messages:
                        self._dispatch(m, due.sender, None)
            return
        limit = int(self.engine.frame) + self._horizon_frames()
        while self._heap and self._heap[0].frame <= limit:
            due = heapq.heappop(self._heap)
            self.c.scheduled -= len(due.messages)
            self._run_at(due.frame, list(due.messages), due.sender)

    def _run_at(self, frame: int, messages: list, sender) -> None:
        now = int(self.engine.frame)
        if frame < now:
            late = (now - frame) / self.sample_rate
            self.c.late += 1
            address = messages[0].address
            self.ratelog(logging.WARNING, "OSC: bundle %s from %s ran %.1f ms late",
                         address, _peer_text(sender), late * 1000)
            self._notify("/late", float(late), address)
            frame = None
        for m in messages:
            self._dispatch(m, sender, frame)

    # -- one message ---------------------------------------------------------------------------------------

    def _ring_free(self) -> int:
        if self._ring is None:
            return RING_RESERVE
        idx, cap, w, r = self._ring
        return cap - int(idx[w] - idx[r])

    def _engine_dropped(self) -> int:
        if self._dropped is None:
            return 0
        counters, i = self._dropped
        return int(counters[i])

    def _count(self, address: str, ok: bool) -> None:
        """Per-address tallies (table addresses only, so the dict stays small)."""
        row = self.by_address.get(address if address in spec.BY_ADDRESS else "other")
        if row is None:
            row = self.by_address[address if address in spec.BY_ADDRESS else "other"] = [0, 0]
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
        if address not in NO_ENGINE_COMMANDS and self._ring_free() < RING_RESERVE:
            c.busy_dropped += 1
            self._count(address, False)
            self._fail(sender, address, "server busy: the engine's command queue is full; message "
                                        "dropped (send fewer messages per second)")
            return
        args = msg.args
        if self.media is not None and address in self._path_args:
            args = list(args)
            for i in self._path_args[address]:
                if i < len(args) and isinstance(args[i], str) and args[i].strip():
                    args[i] = self.media.resolve(args[i])
        try:
            out = self.controller.handle(address, args, at=at, sender=sender)
        except Exception as exc:   # the Controller catches handler errors; this is a last resort
            c.internal_errors += 1
            self._count(address, False)
            self.log.exception("OSC: %s failed", address)
            self._fail(sender, address, f"internal error: {type(exc).__name__}")
            return
        self._count(address, not any(a == "/fail" and r and r[0] == address for a, r in out))
        if address in LOAD_ADDRESSES:
            self._loads_dirty = True
        dropped = self._engine_dropped()
        if dropped != self._engine_dropped_seen:
            c.engine_dropped += dropped - self._engine_dropped_seen
            self._engine_dropped_seen = dropped
            self.ratelog(logging.WARNING, "OSC: the engine's command queue overflowed: "
                         "%d commands dropped so far", c.engine_dropped)

    # -- replies ---------------------------------------------------------------------------------------------

    def _reply(self, sender, address: str, args: tuple) -> None:
        """The Controller's ``reply``: send to whoever sent the message."""
        if address == "/fail":
            self.ratelog(logging.WARNING, "OSC: /fail %s %s (from %s)",
                         args[0] if args else "?", args[1] if len(args) > 1 else "",
                         _peer_text(getattr(sender, "peer", sender)))
        if sender is None:
            return
        try:
            data = wire.encode_message(address, args)
        except Exception:
            self.c.internal_errors += 1
            self.log.exception("OSC: cannot encode reply %s", address)
            return
        if not isinstance(sender, _TcpClient) and len(data) > MAX_UDP_REPLY:
            self._reply(sender, "/fail", (address.replace(".reply", ""),
                                          f"the reply is {len(data)} bytes, too big for one UDP "
                                          "datagram: ask over TCP (server --tcp) or use /status"))
            return
        self._send(sender, data)

    def _fail(self, sender, address: str, reason: str) -> None:
        self._reply(sender, "/fail", (address, reason))

    def _send(self, sender, data: bytes) -> bool:
        if isinstance(sender, _TcpClient):
            return self._tcp_send(sender, data)
        sock = self._udp
        if sock is None:
            return False
        try:
            sock.sendto(data, sender)
        except (BlockingIOError, InterruptedError):
            self.c.replies_dropped += 1
            return False
        except (OSError, TypeError, ValueError):
            self.c.replies_dropped += 1
            return False
        self.c.replies += 1
        return True

    def notify(self, address: str, *args) -> None:
        """Send an event to every /notify subscriber (control thread)."""
        self._notify(address, *args)

    def notify(self, address: str, *args) -> None:
        """Send an event to every /notify subscriber (e.g. ``/device lost``; any thread)."""
        self._notify(address, *args)

    def _notify(self, address: str, *args) -> None:
        subs = self._subs_snapshot
        if not subs:
            return
        data = wire.encode_message(address, args)
        for sender in subs:
            if self._send(sender, data):
                self.c.notifications += 1

    # -- hooks the Controller calls ----------------------------------------------------------------------------

    def _on_notify(self, sender, on: bool) -> None:
        if sender is None:
            raise CommandError("/notify needs a sender to send events to")
        if on:
            if sender not in self._subscribers and len(self._subscribers) >= 64:
                raise CommandError("64 clients already subscribed: send /notify 0 from one first")
            self._subscribers[sender] = True
        else:
            self._subscribers.pop(sender, None)
        self._subs_snapshot = tuple(self._subscribers)

    def _may_quit(self, sender) -> bool:
        """The quit_from setting: a /quit from elsewhere gets /fail and changes nothing."""
        peer = getattr(sender, "peer", sender)
        if _in_networks(peer[0] if isinstance(peer, tuple) else peer, self.quit_from):
            return True
        self._count("/quit", False)
        self._fail(sender, "/quit", f"not allowed from {_peer_text(peer)}: the quit_from setting "
                   f"(--quit-from, STEMDECK_QUIT_FROM, [osc] quit_from) allows "
                   f"{SETTINGS['quit_from'].show(tuple(map(str, self.quit_from)))}; the server plays on")
        return False

    def _tell_stopping(self, why: str) -> None:
        """``/server stopping <why>`` to subscribers, once, before the sockets close."""
        if not self._stopping_told:
            self._stopping_told = True
            self._notify("/server", "stopping", why)

    def _on_quit(self, sender) -> None:
        self.log.info("OSC: /quit from %s", _peer_text(getattr(sender, "peer", sender)))
        self._tell_stopping(f"/quit from {_peer_text(getattr(sender, 'peer', sender))}")
        self._quit.set()
        self._stop.set()
        for action in (self._prev_quit, self.on_quit):
            if action is None:
                continue
            try:
                action(sender) if action is self._prev_quit else action()
            except Exception:
                self.log.exception("OSC: the quit action failed")

    def _status_extra(self) -> dict:
        """The Controller's ``status`` hook: the audio side's figures (``stats``,
        or the hook the caller had installed, else the engine's counters),
        late bundles added to ``late_commands``, and the server's counters."""
        sources = [f for f in (self._prev_status, self._stats) if f is not None]
        info = {} if sources else self._basic_stats()
        for source in sources:
            try:
                with self._stats_lock:
                    info.update(source() or {})
            except Exception:
                self.log.exception("OSC: the stats callable failed")
        st = self.engine.stats()
        info["late_commands"] = int(st.get("late_commands", 0)) + self.c.late
        info["osc"] = self.counters(max_age=0.5)
        return info

    def _basic_stats(self) -> dict:
        """Figures from the engine's own counters, for when no telemetry is given."""
        st = self.engine.stats()
        block = self.clock.block or (st["frame"] / st["callbacks"] if st.get("callbacks") else 0)
        period_ns = block / self.sample_rate * 1e9 if block else 0.0
        info: dict = {"uptime_s": time.monotonic() - self._started_at,
                      "buffer_size": int(round(block)),
                      "latency_ms": (self.clock.output_latency_ns() / 1e9
                                     + block / self.sample_rate) * 1000.0,
                      "underruns": int(st.get("underflows", 0))}
        durations = getattr(self.engine, "callback_durations", None)
        if durations is not None and period_ns:
            d = durations()[-512:]
            if len(d):
                info["dsp_load_avg"] = float(d.mean() / period_ns * 100.0)
                info["dsp_load_peak"] = float(d.max() / period_ns * 100.0)
        now, cpu = time.monotonic(), time.process_time()
        then, cpu0 = self._cpu_mark
        if now - then > 0.05:
            info["cpu_percent"] = (cpu - cpu0) / (now - then) * 100.0
            self._cpu_mark = (now, cpu)
        return info

    # -- loads and engine events ---------------------------------------------------------------------------------

    def _check_loads(self) -> None:
        """Send ``/loaded id`` for every buffer that became ready since last time."""
        self._loads_dirty = False
        buffers = self.controller.buffers
        snap = self._load_snapshot
        new = {}
        for bid, info in buffers.items():
            state = info.state
            new[bid] = (info, state)
            old = snap.get(bid)
            if state == "ready" and (old is None or old[0] is not info or old[1] != "ready"):
                self._notify("/loaded", int(bid))
        self._load_snapshot = new

    def on_engine_events(self, events) -> None:
        """Turn engine events into notifications: ``/ended id`` for a one-shot
        that finished, ``/late seconds command`` for a command the engine ran
        after its frame. The server drains ``engine.events()`` itself unless
        built with ``drain_events=False``; then whoever drains (on the control
        thread) passes the events here."""
        from stemdeck.engine import commands as C

        for kind, a, b, _c in events:
            if kind == C.EV_ENDED:
                self._notify("/ended", int(a))
            elif kind == C.EV_LATE:
                self._notify("/late", float(b) / self.sample_rate,
                             _OP_NAMES.get(int(a), "command"))
            elif kind == C.EV_VOICES_FULL:
                self.ratelog(logging.WARNING, "OSC: no free voice to play buffer %d", int(a))

    # -- reporter thread -------------------------------------------------------------------------------------

    def _report_loop(self):
        """Reporter thread: ``/beat`` once per beat (when the engine renders the
        beat's first frame), the ``/print_clock`` log line, ``/underrun``."""
        from stemdeck.control.tempo import ClockReporter

        beats = ClockReporter(self.controller)
        last_underruns = None
        next_underrun_check = 0.0
        while not self._stop.wait(0.005):
            try:
                for ev in beats.poll():
                    self._notify("/beat", int(ev.bar), int(ev.beat))
                    if self.controller.print_clock:
                        self.log.info("%s", ev.line())
                now = time.monotonic()
                if now >= next_underrun_check:
                    next_underrun_check = now + 0.1
                    underruns = self._underruns()
                    if last_underruns is not None and underruns > last_underruns:
                        self._notify("/underrun", int(underruns))
                    last_underruns = underruns
            except Exception:
                self.log.exception("OSC: reporter error (continuing)")
                self._stop.wait(0.1)

    def _underruns(self) -> int:
        for source in (self._stats, self._prev_status):
            if source is None:
                continue
            try:
                with self._stats_lock:
                    value = (source() or {}).get("underruns")
            except Exception:
                continue
            if value is not None:
                return int(value)
        return int(self.engine.stats().get("underflows", 0))

    # -- TCP -----------------------------------------------------------------------------------------------

    def _on_accept(self, _writable=False):
        try:
            sock, peer = self._tcp_listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        if not self._allowed(peer):
            sock.close()
            return
        if len(self._tcp_clients) >= MAX_TCP_CLIENTS:
            self.ratelog(logging.WARNING, "OSC: refused a TCP connection from %s: %d clients "
                         "connected", _peer_text(peer), MAX_TCP_CLIENTS)
            sock.close()
            return
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        client = _TcpClient(sock, peer)
        client.callback = lambda writable, cl=client: self._on_tcp(cl, writable)
        self._tcp_clients[id(client)] = client
        self.c.tcp_clients = len(self._tcp_clients)
        self._watch(sock, client.callback)

    def _on_tcp(self, client: _TcpClient, writable: bool):
        if client.closed:
            return
        if writable:
            self._tcp_flush(client)
            return
        try:
            chunk = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close_tcp(client)
            return
        if not chunk:
            self._close_tcp(client)
            return
        client.inbuf += chunk
        while len(client.inbuf) >= 4 and not client.closed:
            size = int.from_bytes(client.inbuf[:4], "big", signed=True)
            if size <= 0 or size > self.max_packet:
                self.c.oversized += 1
                self._fail(client, "?", f"TCP packet size {size} is outside 1..{self.max_packet} "
                                        "bytes: each packet must be prefixed by its length as an "
                                        "int32 (OSC 1.0 framing); closing the connection")
                self._tcp_flush(client)
                self._close_tcp(client)
                return
            if len(client.inbuf) < 4 + size:
                break
            data = bytes(client.inbuf[4:4 + size])
            del client.inbuf[:4 + size]
            if not self._allowed(client.peer):
                continue
            self.c.packets += 1
            self.c.bytes += size
            self._packet(data, client)

    def _tcp_send(self, client: _TcpClient, data: bytes) -> bool:
        frame = len(data).to_bytes(4, "big") + data
        with client.lock:
            if client.closed:
                return False
            if len(client.outbuf) + len(frame) > TCP_OUT_LIMIT:
                self.c.replies_dropped += 1
                return False
            client.outbuf += frame
        if threading.get_ident() == self._control_ident:
            self._tcp_flush(client)
        else:
            self._wake()      # the control thread writes and watches for writability
        self.c.replies += 1
        return True

    def _tcp_flush(self, client: _TcpClient) -> None:
        """Control thread: write what the socket takes; watch for writability if more is left."""
        with client.lock:
            if client.closed:
                return
            try:
                while client.outbuf:
                    n = client.sock.send(client.outbuf)
                    if n <= 0:
                        break
                    del client.outbuf[:n]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                client.outbuf.clear()
            pending = bool(client.outbuf)
        if pending != client.want_write:
            client.want_write = pending
            self._watch(client.sock, client.callback, write=pending)

    def _flush_tcp_writers(self) -> None:
        for client in list(self._tcp_clients.values()):
            if client.outbuf:
                self._tcp_flush(client)

    def _close_tcp(self, client: _TcpClient) -> None:
        with client.lock:
            if client.closed:
                return
            client.closed = True
        self._unwatch(client.sock)
        self._tcp_clients.pop(id(client), None)
        self.c.tcp_clients = len(self._tcp_clients)
        if client in self._subscribers:
            self._subscribers.pop(client, None)
            self._subs_snapshot = tuple(self._subscribers)
        try:
            client.sock.close()
        except OSError:
            pass

    # -- reporting ----------------------------------------------------------------------------------------------

    def socket_drops(self, max_age: float = 0.0) -> int | None:
        """Datagrams the kernel dropped because the receive buffer was full
        (Linux ``/proc/net/udp``); None where that is not available. A value
        read less than ``max_age`` seconds ago is reused."""
        if self._inode is None:
            return None
        now = time.monotonic()
        if max_age and now - self._drops_read[0] < max_age:
            return self._drops_read[1]
        value = None
        inode = str(self._inode)
        for name in ("/proc/net/udp", "/proc/net/udp6"):
            try:
                with open(name, encoding="ascii") as fh:
                    next(fh, None)
                    for line in fh:
                        parts = line.split()
                        if len(parts) >= 13 and parts[9] == inode:
                            value = int(parts[-1])
                            break
            except (OSError, ValueError):
                continue
            if value is not None:
                break
        self._drops_read = (now, value)
        return value

    def counters(self, max_age: float = 0.0) -> dict:
        """The server's counters (a snapshot), with the kernel's socket drops
        (re-read unless read less than ``max_age`` seconds ago)."""
        out = asdict(self.c)
        out["socket_drops"] = self.socket_drops(max_age=max_age)
        out["subscribers"] = len(self._subs_snapshot)
        out["clock_relocks"] = self.clock.relocks
        out["by_address"] = {k: list(v) for k, v in sorted(self.by_address.items())}
        return out


# -- helpers -----------------------------------------------------------------------------------------------

def _flatten(bundle: wire.Bundle, outer: int | None, groups: list) -> None:
    """Bundle -> ``groups``: [(timetag or None, [messages])] in packet order,
    consecutive messages with one timetag together. A nested bundle never
    runs before its enclosing one; timetags 0 and 1 mean immediately."""
    tt = bundle.timetag
    if tt in (0, wire.IMMEDIATELY):
        tt = outer
    elif outer is not None and tt < outer:
        tt = outer
    for element in bundle.elements:
        if isinstance(element, wire.Message):
            if groups and groups[-1][0] == tt:
                groups[-1][1].append(element)
            else:
                groups.append((tt, [element]))
        else:
            _flatten(element, tt, groups)


_OP_NAMES = {1: "bind", 2: "unbind", 3: "play", 4: "stop", 5: "volume", 6: "rate",
             7: "deck_level", 8: "deck_eq", 9: "crossfade", 10: "master", 11: "tempo",
             12: "stop_all", 13: "stem_bpm", 14: "deck_stop"}


def _peek_address(data) -> str:
    raw = bytes(data[:256]).split(b"\x00", 1)[0]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "?"
    return text if text.startswith("/") else "?"


def _in_networks(host, nets) -> bool:
    """Is ``host`` (an address; IPv4-mapped IPv6 counts as IPv4) in one of ``nets``?"""
    try:
        ip = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in nets)


def _is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "", "0:0:0:0:0:0:0:0")


def _resolve(host: str, port: int):
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_DGRAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: cannot resolve it ({exc.strerror}); use an IP address "
                         "such as 127.0.0.1 or 0.0.0.0") from None
    family, _type, _proto, _canon, addr = infos[0]
    return family, addr


def _bind_failure(proto: str, host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (f"OSC {proto} port {port} on {host} is already in use (another stemdeck, or "
                "SuperCollider's scsynth/sclang on 57120?): stop it or choose --port")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"--host {host} is not an address of this machine: use 127.0.0.1 or 0.0.0.0"
    if exc.errno == errno.EACCES:
        return f"not allowed to listen on {proto} port {port}: ports below 1024 need root; choose --port"
    return f"cannot listen on {proto} {host}:{port}: {exc.strerror or exc}"


# -- command line -------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
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


def server_options(args: argparse.Namespace) -> dict:
    """Keyword arguments for :class:`OscServer` from the flags of :func:`add_arguments`."""
    return {"allow": list(getattr(args, "allow", None) or ()),
            "media_roots": list(getattr(args, "media_root", None) or ()),
            "tcp": bool(getattr(args, "tcp", False))}
