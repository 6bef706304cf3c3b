"""The soak benchmark's OSC client: it sets up the reference workload on a running
``stemdeck serve``, then churns stems (cue, start, stop, free; WAV and FLAC), sends
the reference knob stream and reads its ``/notify`` subscription.

Everything goes through one UDP socket, as one mix script would; one reader thread
takes every reply and event off it (:class:`Replies`). Used by benchmarks/soak.py
and tests/test_soak.py.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import threading
import time

import numpy as np
import soundfile as sf
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from stemdeck.tools.workload import DECK_BASE_IDS

SR = 44100
DECKS = "ABCD"
# The reference workload's sixteen stems (tools/workload.py's layout, four per deck),
# one ID above the deck's first: /cue always takes the deck's first ID (100, 1100, ...).
REFERENCE_IDS = [DECK_BASE_IDS[k % 4] + 1 + k // 4 for k in range(16)]
CUE_IDS = dict(zip(DECKS, DECK_BASE_IDS))
LOAD_ID = 3999                  # the /load_buffer churn's ID (deck D; no reference stem there)
CHURN_FILES = 4                 # of each format; with a small --cache-mb the FLACs are decoded every time
CHURN_SECONDS = 20.0
ANSWER_SECONDS = 15.0           # an asynchronous command with no /done or /fail by then is "unanswered"


# -- files ---------------------------------------------------------------------------------------

def write_reference_files(folder: str) -> list[str]:
    """The reference workload's sixteen 30 s sources as 32-bit float WAVs (memory-mapped by
    serve, played exactly as ``build_reference_workload`` plays them in-process)."""
    from stemdeck.tools.workload import reference_sources

    paths = []
    for k, data in enumerate(reference_sources(16, 30.0, SR)):
        path = os.path.join(folder, f"ref{k:02d}.wav")
        sf.write(path, data, SR, subtype="FLOAT")
        paths.append(path)
    return paths


def write_churn_files(folder: str) -> list[str]:
    """WAV (16-bit, mapped) and FLAC (decoded) stems, alternating: different content each,
    so no load is answered from another file's sample."""
    rng = np.random.default_rng(7)
    n = int(CHURN_SECONDS * SR)
    t = np.arange(n) / SR
    paths = []
    for k in range(2 * CHURN_FILES):
        tone = 0.1 * np.sin(2 * np.pi * (110.0 + 37.0 * k) * t)
        data = (tone[:, None] + 0.02 * rng.standard_normal((n, 2))).astype(np.float32)
        ext, subtype = ("wav", "PCM_16") if k % 2 == 0 else ("flac", "PCM_16")
        path = os.path.join(folder, f"churn{k}.{ext}")
        sf.write(path, data, SR, subtype=subtype)
        paths.append(path)
    return paths


# -- replies -------------------------------------------------------------------------------------

def message(address: str, args=()) -> bytes:
    b = OscMessageBuilder(address=address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


class Replies:
    """One UDP socket to the server and a thread reading everything that comes back:
    ``/done`` and ``/fail`` answers (waited on by :meth:`wait_answer`), ``/status.json``
    replies, and ``/notify`` events (counted by address)."""

    EVENTS = ("/loaded", "/ended", "/underrun", "/late", "/beat")

    def __init__(self, server_address):
        self.server = server_address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.cond = threading.Condition()
        self.answers: collections.deque = collections.deque(maxlen=10000)   # (address, args)
        self.fails: list = []                       # every /fail (address, reason), kept for the report
        self.events: collections.Counter = collections.Counter()
        self.status: dict | None = None
        self.status_serial = 0
        self.unparsed = 0
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="soak-replies", daemon=True)
        self._thread.start()

    def send(self, address: str, *args) -> None:
        self.sock.sendto(message(address, args), self.server)
        self.sent += 1

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, OSError):
                continue
            try:
                msg = OscMessage(data)
                address, args = msg.address, list(msg.params)
            except Exception:                        # noqa: BLE001 - counted: a reply python-osc cannot parse
                self.unparsed += 1
                continue
            with self.cond:
                if address == "/status.json.reply":
                    self.status = json.loads(args[0])
                    self.status_serial += 1
                elif address in self.EVENTS:
                    self.events[address] += 1
                else:
                    if address == "/fail":
                        self.fails.append(args)
                    self.answers.append((address, args))
                self.cond.notify_all()

    def wait_answer(self, command: str, buffer_id: int | None = None, timeout: float = ANSWER_SECONDS):
        """The ``/done command [id]`` or ``/fail command ...`` answer to an asynchronous command
        (taken off the queue): ("done"|"fail", args), or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i, (address, args) in enumerate(self.answers):
                    if address == "/done" and args[:1] == [command] and (
                            buffer_id is None or args[1:2] == [buffer_id]):
                        del self.answers[i]
                        return "done", args
                    if address == "/fail" and args[:1] == [command]:
                        del self.answers[i]
                        return "fail", args
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def ask_status(self, timeout: float = 5.0) -> dict | None:
        """``/status.json`` now; None if no reply came within ``timeout``."""
        with self.cond:
            serial = self.status_serial
        self.send("/status.json")
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.status_serial == serial:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return self.status

    def event_counts(self) -> dict:
        with self.cond:
            return dict(self.events)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


# -- the load ------------------------------------------------------------------------------------

def start_reference_workload(replies: Replies, paths: list[str], timeout: float = 120.0) -> None:
    """Load and play the reference workload over OSC (``tools/workload.build_reference_workload``
    in a client's words): sixteen stems looping at rate 1.05, EQ 40/60/45 on every deck, the
    A/B faders at the constant-power centre; the limiter is on by default. Raises RuntimeError
    if a load fails."""
    from stemdeck.engine.dsp.crossfade import crossfader_gains
    from stemdeck.tools.workload import EQ_KNOBS

    for bid, path in zip(REFERENCE_IDS, paths):
        replies.send("/load_buffer", bid, path)
    for bid in REFERENCE_IDS:
        answer = replies.wait_answer("/load_buffer", bid, timeout)
        if answer is None or answer[0] != "done":
            raise RuntimeError(f"reference stem {bid} did not load: {answer}")
    for k, bid in enumerate(REFERENCE_IDS):
        replies.send("/play_stem", bid, 1.05, 0.5, 1, (k * 0.037) % 1.0)
    for deck in DECKS:
        replies.send("/deck_eq_all", deck, *EQ_KNOBS)
    replies.send("/crossfade_levels", *[float(g) for g in crossfader_gains(0.5, "constant-power")])


class Churn:
    """Every ``period`` seconds: ``/cue`` a file on the next deck and ``/start_group`` it,
    ``/load_buffer`` another into :data:`LOAD_ID` and ``/play_stem`` it, let both play,
    then ``/stop_stem`` and ``/free_buffer`` both. Files alternate WAV and FLAC.
    :attr:`busy` is held from the cue to the frees' answers: whoever takes it between
    cycles sees the server with no churn stem loaded (the benchmark samples there)."""

    def __init__(self, replies: Replies, files: list[str], period: float = 3.0):
        self.replies = replies
        self.files = files
        self.period = period
        self.busy = threading.Lock()
        self.stop = threading.Event()
        self.cycles = 0
        self.asked: collections.Counter = collections.Counter()      # command -> sent
        self.done: collections.Counter = collections.Counter()       # command -> /done
        self.failed: collections.Counter = collections.Counter()     # command -> /fail
        self.unanswered: collections.Counter = collections.Counter()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="soak-churn", daemon=True)

    def _ask(self, command: str, buffer_id: int, *args) -> bool:
        self.replies.send(command, *args)
        self.asked[command] += 1
        answer = self.replies.wait_answer(command, buffer_id)
        if answer is None:
            self.unanswered[command] += 1
            return False
        (self.done if answer[0] == "done" else self.failed)[command] += 1
        return answer[0] == "done"

    def _cycle(self, k: int) -> None:
        deck = DECKS[k % 4]
        cue_file = self.files[k % len(self.files)]
        load_file = self.files[(k + 1) % len(self.files)]      # the other format
        if self._ask("/cue", CUE_IDS[deck], deck, cue_file):
            self.replies.send("/start_group", 0.0, deck)
        if self._ask("/load_buffer", LOAD_ID, LOAD_ID, load_file):
            self.replies.send("/play_stem", LOAD_ID, 1.0, 0.5, 1)
        self.stop.wait(self.period / 2)
        for bid in (CUE_IDS[deck], LOAD_ID):
            self.replies.send("/stop_stem", bid)
        for bid in (CUE_IDS[deck], LOAD_ID):
            self._ask("/free_buffer", bid, bid)

    def _run(self) -> None:
        try:
            t0 = time.monotonic()
            while not self.stop.is_set():
                with self.busy:
                    self._cycle(self.cycles)
                self.cycles += 1
                self.stop.wait(max(0.0, t0 + self.cycles * self.period - time.monotonic()))
        except BaseException as exc:                 # noqa: BLE001 - reported by the benchmark
            self.error = exc

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        self.stop.set()
        self.thread.join(3 * ANSWER_SECONDS)

    def figures(self) -> dict:
        return {"cycles": self.cycles, "asked": dict(self.asked), "done": dict(self.done),
                "failed": dict(self.failed), "unanswered": dict(self.unanswered),
                "error": repr(self.error) if self.error else None}


def knob_stream(replies: Replies):
    """benchmarks/live_jack.py's 500 messages/s knob sender (tools/workload's reference
    stream) on this client's socket. Returns (stresser, thread); ``stresser.stop.set()``
    ends it and ``stresser.sent`` counts."""
    from live_jack import Stress

    stresser = Stress(None, lambda address, args: replies.send(address, *args))
    thread = threading.Thread(target=stresser.messages, name="soak-knobs", daemon=True)
    return stresser, thread
