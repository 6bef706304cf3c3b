"""Helpers for the OSC server tests: a live engine on a real-time clock,
recorded from frame 0, an OscServer on a free loopback port (assembled by
:mod:`stemdeck.app`, with the production MediaLoader), and a python-osc
client that also reads the replies.

:class:`RealtimeDriver` paces ``Engine.run_callback`` on absolute deadlines
(``t0 + k * block / rate``, like the null backend) and knows its own ``t0``,
so a test can say which frame was due at which monotonic time; it drains the
engine's record ring after every block into a circular buffer indexed by
engine frame.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import numpy as np
import soundfile as sf
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient

from stemdeck import app
from stemdeck.control import osc_wire as wire
from stemdeck.engine import Engine
from signals import amplitude, sine  # noqa: F401 (test_jack_restart.py imports them from here)

SR = 44100
KEEP_FRAMES = 1 << 22            # ~95 s of recording kept


class RealtimeDriver:
    """The engine rendered in real time by a thread of its own, recorded."""

    def __init__(self, engine: Engine, block: int = 256):
        self.engine = engine
        self.block = block
        self.t0_ns = 0
        self.late_blocks = 0
        self.recorded = 0
        self._ring = np.zeros((KEEP_FRAMES, 2), np.float32)
        self._stop = threading.Event()
        self._thread = None
        self._lock = threading.Lock()

    def start(self):
        self.engine.set_recording(True)
        self.engine.run_callback(np.zeros((self.block, 2), np.float32))   # compile / warm up
        self._drain(np.zeros((8192, 2), np.float32))
        self._thread = threading.Thread(target=self._run, name="test-audio", daemon=True)
        self._thread.start()
        return self

    def _run(self):
        engine, block, sr = self.engine, self.block, self.engine.sample_rate
        out = np.zeros((block, 2), np.float32)
        tmp = np.zeros((8192, 2), np.float32)
        first = self.engine.frame
        self.t0_ns = time.monotonic_ns() - first * 1_000_000_000 // sr
        k = first // block
        flags = 0
        while not self._stop.is_set():
            engine.run_callback(out, flags)
            flags = 0
            self._drain(tmp)
            k += 1
            deadline = self.t0_ns + k * block * 1_000_000_000 // sr
            late = time.monotonic_ns() - deadline
            if late > 0:
                if late > block * 1_000_000_000 // sr:   # as the null backend: an underflow
                    self.late_blocks += 1
                    flags = 0x4
                continue
            time.sleep(-late / 1e9)

    def _drain(self, tmp):
        while True:
            n = self.engine.drain_recording(tmp)
            if n == 0:
                return
            with self._lock:
                start = self.recorded % KEEP_FRAMES
                first = min(n, KEEP_FRAMES - start)
                self._ring[start:start + first] = tmp[:first]
                if n > first:
                    self._ring[:n - first] = tmp[first:n]
                self.recorded += n

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def wait_frame(self, frame: int, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while self.recorded < frame:
            if time.monotonic() > deadline:
                raise TimeoutError(f"recording stuck at frame {self.recorded}, waiting for {frame}")
            time.sleep(0.005)

    def samples(self, start: int, stop: int) -> np.ndarray:
        """Recorded frames [start, stop) of channel 0 (waits for them)."""
        self.wait_frame(stop)
        with self._lock:
            if self.recorded - start > KEEP_FRAMES:
                raise ValueError("those frames are no longer kept")
            idx = np.arange(start, stop) % KEEP_FRAMES
            return self._ring[idx, 0].copy()

    def frame_at_monotonic(self, t_ns: int) -> float:
        """The frame due at monotonic time ``t_ns`` on this driver's schedule."""
        return (t_ns - self.t0_ns) * self.engine.sample_rate / 1e9


class Client:
    """A python-osc UDP client; replies are read from its own socket."""

    def __init__(self, address):
        self.address = address
        self.osc = SimpleUDPClient(address[0], address[1])
        self.sock = self.osc._sock
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.bind(("127.0.0.1", 0))
        self.inbox: list = []

    def send(self, address, *args):
        self.osc.send_message(address, list(args))

    def send_raw(self, data: bytes):
        self.sock.sendto(data, self.address)

    def send_bundle(self, timetag_ntp: int, messages):
        """``messages``: (address, args) pairs or already built bundles (python-osc)."""
        self.send_raw(bundle_bytes(timetag_ntp, messages))

    def _read(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, BlockingIOError):
            return None
        msg = OscMessage(data)
        return (msg.address, list(msg.params))

    def drain(self, timeout: float = 0.05) -> list:
        """Every reply that arrives within ``timeout`` of the last one."""
        out = self.inbox
        self.inbox = []
        while True:
            got = self._read(timeout)
            if got is None:
                return out
            out.append(got)

    def expect(self, address: str, timeout: float = 3.0, first=None):
        """The next reply with ``address`` (and first argument ``first``);
        others are kept for later."""
        deadline = time.monotonic() + timeout
        for i, (addr, args) in enumerate(self.inbox):
            if addr == address and (first is None or (args and args[0] == first)):
                del self.inbox[i]
                return args
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {address} {first or ''} within {timeout} s; got "
                                     f"{self.inbox[-10:]}")
            got = self._read(left)
            if got is None:
                continue
            if got[0] == address and (first is None or (got[1] and got[1][0] == first)):
                return got[1]
            self.inbox.append(got)

    def ask(self, address, *args, reply=None, timeout=3.0):
        self.send(address, *args)
        return self.expect(reply or address + ".reply", timeout)

    def status(self) -> dict:
        """The server's summary figures (/status.json; /status.reply has scsynth's layout)."""
        import json

        return json.loads(self.ask("/status.json")[0])

    def close(self):
        self.sock.close()


def message_bytes(address, args=()):
    b = OscMessageBuilder(address=address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


def bundle_bytes(timetag_ntp: int, messages) -> bytes:
    """A bundle built by python-osc, with our exact NTP timetag patched in
    (python-osc takes float seconds)."""
    builder = OscBundleBuilder(0)
    for m in messages:
        if isinstance(m, tuple):
            b = OscMessageBuilder(address=m[0])
            for a in m[1]:
                b.add_arg(a)
            builder.add_content(b.build())
        else:
            builder.add_content(m)
    data = bytearray(builder.build().dgram)
    data[8:16] = int(timetag_ntp).to_bytes(8, "big")
    return bytes(data)


def ntp_in(seconds: float) -> int:
    """The NTP timetag ``seconds`` from now."""
    return wire.ntp_from_unix_ns(time.time_ns() + int(seconds * 1e9))


def mono_of_ntp(timetag: int) -> int:
    """Monotonic ns of an NTP timetag (by the wall-clock offset now)."""
    wall_ns = ((timetag * 1_000_000_000) >> 32) - wire.NTP_UNIX_OFFSET * 1_000_000_000
    return wall_ns - (time.time_ns() - time.monotonic_ns())


class Rig:
    """Engine + real-time driver + OscServer on 127.0.0.1:<free port> + a client.

    ``loader``: the Controller's loader (default: the production MediaLoader,
    ``cache_mb`` MB); ``controller_kwargs``: the Controller's own options;
    the rest are the OscServer's."""

    def __init__(self, block: int = 256, *, eq: bool = False, loader=None, cache_mb: float = 512,
                 controller_kwargs=None, **server_kwargs):
        self.engine = Engine(SR, max_block=max(block, 1024))
        self.engine.set_eq_enabled(eq)
        self.block = block
        self.driver = RealtimeDriver(self.engine, block)
        server_kwargs.setdefault("host", "127.0.0.1")
        server_kwargs.setdefault("port", 0)
        if loader is None:
            loader = app.live_loader(self.engine, cache_mb=cache_mb)
        parts = app.assemble(self.engine, loader, lookahead=block, osc=server_kwargs,
                             **(controller_kwargs or {}))
        self.controller, self.server = parts.controller, parts.osc
        self.client = None

    def start(self):
        self.driver.start()
        self.server.start(self.controller)
        self.client = Client(self.server.address)
        return self

    def stop(self):
        if self.client is not None:
            self.client.close()
        self.server.stop()
        self.driver.stop()
        self.controller.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def now(self) -> int:
        return self.engine.frame

    def after(self, seconds: float) -> tuple[int, int]:
        """Wait ``seconds`` of audio; returns (frame before, frame after)."""
        a = self.engine.frame
        b = a + int(seconds * SR)
        self.driver.wait_frame(b)
        return a, b


def write_wav(folder, name: str, data: np.ndarray) -> str:
    path = os.path.join(str(folder), name)
    sf.write(path, data, SR, subtype="FLOAT")
    return path
