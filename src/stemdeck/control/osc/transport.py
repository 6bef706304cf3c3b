"""The OSC server's sockets and its control loop: UDP (and optional TCP) in and out, the ``--allow`` list, size limits.

Threads: the **control thread** runs here. Without an asyncio ``loop`` it is
this module's own thread (``sd-osc``), waiting in ``select``; given a loop
(``stemdeck serve``'s control loop) the sockets are watched with
``loop.add_reader``, so every Controller call stays on that loop's thread.
Either way it sleeps until there is work: a packet, a :meth:`Transport.wake`
from another thread, the engine's event descriptor
(:mod:`stemdeck.control.engine_wakeup`), or the housekeeping's own
:class:`~stemdeck.control.osc.deadline.Deadline`; there is no tick. Every
packet from an allowed sender goes to ``on_packet(data, sender)`` on that
thread; the other threads only :meth:`Transport.wake` it.

Bounds. Packets over ``max_packet`` bytes (32 KiB) are refused with
``/fail``. UDP replies that the socket cannot take at once are dropped and
counted. The kernel's own drops of a full receive buffer are read from
``/proc/net/udp`` (:meth:`Transport.socket_drops`). ``--allow CIDR``
(repeatable) drops, without a reply, packets from other sources.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import threading
import time
from typing import Callable

from stemdeck.control.access import parse_allow
from stemdeck.control.osc.deadline import Deadline
from stemdeck.control.osc import listening
from stemdeck.control.osc.addresses import bind_failure, in_networks, peek_address, peer_text, resolve
from stemdeck.control.osc.tcp import TcpClient, TcpClients
from stemdeck.errors import UsageError
from stemdeck.threads import thread

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 57120
DEFAULT_MAX_PACKET = 32768       # bytes, UDP datagrams and TCP frames alike
MAX_UDP_REPLY = 65507
RECV_BUFFER = 1 << 21            # requested SO_RCVBUF
BATCH = 256                      # packets read per wake before timers get a turn


class Transport:
    """Sockets, the allow-list and the control loop that watches them.

    ``counters``: the server's :class:`~stemdeck.control.osc.counters.Counters`
    (packets, bytes, drops). ``stop``: the server's stop event (set by
    ``/quit`` or :meth:`stop`). Callbacks are given to :meth:`start`.
    """

    def __init__(self, *, host: str, port: int, tcp: bool, allow, max_packet: int, counters,
                 ratelog, log: logging.Logger, stop: threading.Event):
        self.host = host
        self.port = int(port)
        self.tcp = bool(tcp)
        self.allow = parse_allow(allow)
        self.max_packet = int(max_packet)
        self.c = counters
        self.ratelog = ratelog
        self.log = log
        self.loop = None
        self._stop = stop
        self.tcp_clients = TcpClients(self)
        self._allowed_cache: dict = {}
        self._udp: socket.socket | None = None
        self._tcp_listener: socket.socket | None = None
        self._sel: selectors.BaseSelector | None = None
        self._wake_r = self._wake_w = None
        self._thread: threading.Thread | None = None
        self.control_ident: int | None = None
        self.deadline = Deadline()
        self._engine_wakeup = None
        self._closed = False
        self._inode: int | None = None
        self._drops_read: tuple = (0.0, None)
        self._rbuf = bytearray(65536)
        self.on_packet: Callable = lambda data, sender: None
        self.on_refuse: Callable = lambda sender, address, reason: None
        self._housekeeping: Callable = lambda: None
        self._on_woken: Callable = lambda: None
        self._on_engine: Callable = lambda: None

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self, *, on_packet, on_refuse, on_woken, housekeeping, on_tcp_closed, loop=None,
              engine_wakeup=None, on_engine=None) -> None:
        """Bind (UsageError if the address cannot be bound) and start the control
        loop: on ``loop`` (an asyncio loop; call this on its thread), else on a thread of its own.
        ``on_packet(data, sender)``, ``on_refuse(sender, address, reason)``
        (a packet too big), ``on_woken()`` (another thread called :meth:`wake`),
        ``housekeeping()`` (when :attr:`deadline` falls due; returns the seconds
        until it wants to run again, or None), ``on_engine()`` (the engine posted
        events: ``engine_wakeup``, an :class:`~stemdeck.control.engine_wakeup.EngineWakeup`,
        became readable), ``on_tcp_closed(client)``: control thread."""
        self.on_packet, self.on_refuse = on_packet, on_refuse
        self._on_woken, self._housekeeping = on_woken, housekeeping
        self._on_engine = on_engine or (lambda: None)
        self.tcp_clients.on_closed = on_tcp_closed
        self.loop = loop
        self.deadline = Deadline(loop, self._tick)
        self._bind()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        if self.loop is None:
            self._sel = selectors.DefaultSelector()
        self.watch(self._wake_r, self._on_wake)
        self.watch(self._udp, self._on_udp)
        if self._tcp_listener is not None:
            self.watch(self._tcp_listener, self.tcp_clients.accept)
        self._engine_wakeup = engine_wakeup
        if engine_wakeup is not None:
            self.watch(engine_wakeup, self._on_engine_events)
        self.deadline.after(0.0)             # the first housekeeping at once; it says when the next is
        if self.loop is None:
            self._thread = thread(self._run, "sd-osc")
            self._thread.start()
        else:
            self.control_ident = threading.get_ident()

    def stop(self, timeout: float) -> None:
        """Close the sockets once the control loop let go of them (the stop event is set)."""
        me = threading.current_thread()
        if self.loop is None:
            if self._thread is not None and self._thread is not me and self._thread.is_alive():
                self._thread.join(timeout)
            if self._thread is None or not self._thread.is_alive():
                self._close_sockets()
            return
        if threading.get_ident() == self.control_ident:
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

    @property
    def bound(self) -> bool:
        return self._udp is not None and not self._closed

    @property
    def running(self) -> bool:
        if self.loop is not None:
            return self._udp is not None and not self._stop.is_set()
        return self._thread is not None and self._thread.is_alive()

    @property
    def address(self) -> tuple[str, int]:
        if self._udp is None:
            return (self.host, self.port)
        name = self._udp.getsockname()
        return (name[0], name[1])

    def _bind(self):
        family, addr = resolve(self.host, self.port)
        udp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            try:
                udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
            except OSError:
                pass
            udp.bind(addr)
        except OSError as exc:
            udp.close()
            raise UsageError(bind_failure("UDP", self.host, self.port, exc)) from None
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
                raise UsageError(bind_failure("TCP", self.host, port, exc)) from None
            tcp.setblocking(False)
            self._tcp_listener = tcp

    def _close_sockets(self):
        if self._closed:
            return
        self._closed = True
        self.deadline.cancel()
        if self._engine_wakeup is not None:
            self.unwatch(self._engine_wakeup)     # the engine owns the descriptor: not closed here
        self.tcp_clients.close_all()
        for sock in (self._udp, self._tcp_listener, self._wake_r, self._wake_w):
            if sock is not None:
                self.unwatch(sock)
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

    def soon(self, delay: float | None) -> None:
        """Control thread: run the housekeeping within ``delay`` seconds (a bundle
        was queued for later); an earlier deadline stays."""
        self.deadline.within(delay)

    def wake(self) -> None:
        """Any thread: make the control loop run ``on_woken`` soon."""
        w = self._wake_w
        if w is None:
            return
        try:
            w.send(b"\x00")
        except (BlockingIOError, OSError):
            pass

    # -- socket watching: a private selector, or the caller's asyncio loop --------------------------------

    def watch(self, sock, callback, write: bool = False) -> None:
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

    def unwatch(self, sock) -> None:
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
        """The deadline fell due: housekeeping, which sets the next one."""
        self.deadline.fired()
        if self._stop.is_set():
            return
        delay = 0.01
        try:
            delay = self._housekeeping()
        except Exception:
            self.c.internal_errors += 1
            self.log.exception("OSC: housekeeping error (continuing)")
        if not self._stop.is_set():
            self.deadline.within(delay)

    def _run(self):
        """The private control thread (no ``loop``): sleeps in ``select`` until
        a descriptor is ready or the deadline falls due."""
        self.control_ident = threading.get_ident()
        try:
            while not self._stop.is_set():
                try:
                    for key, mask in self._sel.select(self.deadline.timeout()):
                        key.data(bool(mask & selectors.EVENT_WRITE))
                        if self._stop.is_set():
                            break
                    if self.deadline.due():
                        self._tick()
                except Exception:   # the loop must survive anything a packet can cause
                    self.c.internal_errors += 1
                    self.log.exception("OSC: control loop error (continuing)")
                    time.sleep(0.01)
        finally:
            self._close_sockets()

    def _on_engine_events(self, _writable=False):
        self._engine_wakeup.clear()          # first: an event posted from now on wakes us again
        self._on_engine()

    def _on_wake(self, _writable=False):
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            pass
        self._on_woken()
        self.tcp_clients.flush_all()

    # -- UDP in and out ------------------------------------------------------------------------------------

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
            if not self.allowed(sender):
                continue
            self.c.packets += 1
            self.c.bytes += n
            if n > self.max_packet:
                self.c.oversized += 1
                self.on_refuse(sender, "#bundle" if buf[:1] == b"#" else peek_address(view[:n]),
                               f"packet of {n} bytes is over the {self.max_packet}-byte limit: "
                               "send fewer messages per bundle")
                continue
            self.on_packet(bytes(view[:n]), sender)
            if self._stop.is_set():
                return

    def allowed(self, sender) -> bool:
        if not self.allow:
            return True
        host = sender[0] if isinstance(sender, tuple) else sender
        ok = self._allowed_cache.get(host)
        if ok is None:
            ok = in_networks(host, self.allow)
            if len(self._allowed_cache) > 4096:
                self._allowed_cache.clear()
            self._allowed_cache[host] = ok
        if not ok:
            self.c.not_allowed += 1
            self.ratelog(logging.WARNING, "OSC: dropped a packet from %s: not in --allow",
                         peer_text(sender))
        return ok

    @staticmethod
    def fits(sender, data: bytes) -> bool:
        """Whether a reply fits the sender's transport (one UDP datagram; TCP takes any)."""
        return isinstance(sender, TcpClient) or len(data) <= MAX_UDP_REPLY

    def send(self, sender, data: bytes) -> bool:
        if isinstance(sender, TcpClient):
            return self.tcp_clients.send(sender, data)
        sock = self._udp
        if sock is None:
            return False
        try:
            sock.sendto(data, sender)
        except (OSError, TypeError, ValueError):     # BlockingIOError: the socket is full
            self.c.replies_dropped += 1
            return False
        self.c.replies += 1
        return True

    def socket_drops(self, max_age: float = 0.0) -> int | None:
        """Datagrams the kernel dropped because the receive buffer was full
        (Linux ``/proc/net/udp``); None where that is not available. A value
        read less than ``max_age`` seconds ago is reused."""
        if self._inode is None:
            return None
        now = time.monotonic()
        if max_age and now - self._drops_read[0] < max_age:
            return self._drops_read[1]
        self._drops_read = (now, listening.kernel_drops(self._inode))
        return self._drops_read[1]

    def describe(self) -> list[str]:
        """The start-up lines: where it listens, who may send."""
        return listening.describe(self.address, self.host, self.tcp, self.allow)

    def log_startup(self):
        listening.log_startup(self.log, self.address, self.host, self.tcp, self.allow)
