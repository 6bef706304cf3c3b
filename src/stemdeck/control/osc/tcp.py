"""OSC 1.0 over TCP (``--tcp``): each packet prefixed by its int32 big-endian length, replies on the same connection.

Control thread only, except :meth:`TcpClients.send`, which any thread may
call (the reporter's ``/beat``): it queues the frame and wakes the control
thread to write it. At most :data:`MAX_TCP_CLIENTS` connections, each with
at most :data:`TCP_OUT_LIMIT` bytes of replies queued; more are dropped and
counted.
"""

from __future__ import annotations

import logging
import socket
import threading

from stemdeck.control.osc.addresses import peer_text

MAX_TCP_CLIENTS = 16
TCP_OUT_LIMIT = 1 << 20          # bytes of replies queued per TCP client


class TcpClient:
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
        return f"tcp:{peer_text(self.peer)}"


class TcpClients:
    """The connections accepted on the transport's TCP listener."""

    def __init__(self, transport):
        self.t = transport
        self.clients: dict = {}           # id -> TcpClient
        self.on_closed = lambda client: None

    def accept(self, _writable=False):
        t = self.t
        try:
            sock, peer = t._tcp_listener.accept()
        except OSError:                   # BlockingIOError, InterruptedError, ...
            return
        if not t.allowed(peer):
            sock.close()
            return
        if len(self.clients) >= MAX_TCP_CLIENTS:
            t.ratelog(logging.WARNING, "OSC: refused a TCP connection from %s: %d clients "
                      "connected", peer_text(peer), MAX_TCP_CLIENTS)
            sock.close()
            return
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        client = TcpClient(sock, peer)
        client.callback = lambda writable, cl=client: self._on_io(cl, writable)
        self.clients[id(client)] = client
        t.c.tcp_clients = len(self.clients)
        t.watch(sock, client.callback)

    def _on_io(self, client: TcpClient, writable: bool):
        if client.closed:
            return
        if writable:
            self.flush(client)
            return
        try:
            chunk = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(client)
            return
        if not chunk:
            self.close(client)
            return
        t = self.t
        client.inbuf += chunk
        while len(client.inbuf) >= 4 and not client.closed:
            size = int.from_bytes(client.inbuf[:4], "big", signed=True)
            if size <= 0 or size > t.max_packet:
                t.c.oversized += 1
                t.on_refuse(client, "?", f"TCP packet size {size} is outside 1..{t.max_packet} "
                                         "bytes: each packet must be prefixed by its length as an "
                                         "int32 (OSC 1.0 framing); closing the connection")
                self.flush(client)
                self.close(client)
                return
            if len(client.inbuf) < 4 + size:
                break
            data = bytes(client.inbuf[4:4 + size])
            del client.inbuf[:4 + size]
            if not t.allowed(client.peer):
                continue
            t.c.packets += 1
            t.c.bytes += size
            t.on_packet(data, client)

    def send(self, client: TcpClient, data: bytes) -> bool:
        frame = len(data).to_bytes(4, "big") + data
        with client.lock:
            if client.closed:
                return False
            if len(client.outbuf) + len(frame) > TCP_OUT_LIMIT:
                self.t.c.replies_dropped += 1
                return False
            client.outbuf += frame
        if threading.get_ident() == self.t.control_ident:
            self.flush(client)
        else:
            self.t.wake()      # the control thread writes and watches for writability
        self.t.c.replies += 1
        return True

    def flush(self, client: TcpClient) -> None:
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
            self.t.watch(client.sock, client.callback, write=pending)

    def flush_all(self) -> None:
        for client in list(self.clients.values()):
            if client.outbuf:
                self.flush(client)

    def close(self, client: TcpClient) -> None:
        with client.lock:
            if client.closed:
                return
            client.closed = True
        self.t.unwatch(client.sock)
        self.clients.pop(id(client), None)
        self.t.c.tcp_clients = len(self.clients)
        self.on_closed(client)
        try:
            client.sock.close()
        except OSError:
            pass

    def close_all(self) -> None:
        for client in list(self.clients.values()):
            self.close(client)
