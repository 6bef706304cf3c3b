"""The reference workload on SuperCollider's scsynth, live on JACK and offline (NRT), for side-by-side figures.

    .venv/bin/python benchmarks/scsynth_ref.py nrt [--seconds 300] [-o out.wav]
    .venv/bin/python benchmarks/scsynth_ref.py live [--seconds 5] [--period 128]

The workload is src/stemdeck/tools/workload.py's, as close as scsynth comes
(Debian: ``apt-get install --no-install-recommends supercollider-server``;
sclang is not needed):

- sixteen 30 s stereo stems (the same sources, written as 32-bit float WAVs
  by benchmarks/soak_client.py), four per deck, each a ``PlayBuf`` looping at
  ``1.05 * BufRateScale`` (cubic interpolation; stemdeck's is Hermite), volume
  0.5, started at stemdeck's start fractions, summed on a private bus per deck;
- per deck, ``BLowShelf`` 250 Hz / ``BPeakEQ`` 790 Hz / ``BHiShelf`` 2500 Hz
  at the gains of knobs 40/60/45 % (stemdeck's is an LR4 isolator: six
  biquads a channel against three here), then the deck level: decks A and B
  at the constant-power crossfader centre (cos/sin 45 deg), C and D at 1;
- on the master, ``Limiter`` at -0.3 dBFS (per channel; stemdeck's is
  stereo-linked) to the two outputs.

The SynthDefs are written here in SCgf version 2, the binary format sclang
compiles to (:func:`synthdef_bytes`), so neither sclang nor supriya is needed.
scsynth runs at its own control block of 64 frames whatever the JACK period.

:func:`nrt_render` renders the workload offline (``scsynth -N``, a binary
OSC score) and returns the wall seconds; :class:`LiveScsynth` runs it on a
JACK server (benchmarks/cpu.py measures its CPU). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))          # tests/jackserver.py, tests/serveproc.py
sys.path.insert(0, str(HERE))

import soak_client  # noqa: E402  (the reference stems as WAVs, message(), Replies)

from stemdeck.engine.dsp.crossfade import crossfader_gains  # noqa: E402
from stemdeck.engine.dsp.eq import HIGH_CROSSOVER_HZ, LOW_CROSSOVER_HZ, knob_to_gain  # noqa: E402
from stemdeck.tools.workload import EQ_KNOBS  # noqa: E402

SR = 44100
RATE = 1.05
STEM_VOLUME = 0.5
STEMS = 16
DECKS = 4
LIMIT = 10 ** (-0.3 / 20)              # stemdeck's limiter threshold, -0.3 dBFS
DECK_BUS0 = 16                          # private audio buses: past -i 2 -o 2 with room to spare
MASTER_BUS = DECK_BUS0 + 2 * DECKS
STEM_SECONDS = 30.0
AR, KR, IR = 2, 1, 0                    # calculation rates in SCgf
MUL = 2                                 # BinaryOpUGen's special index for '*'
NODE0 = 1000


def missing() -> str | None:
    """Why scsynth cannot run here, or None."""
    if shutil.which("scsynth") is None:
        return "needs scsynth (Debian: apt-get install --no-install-recommends supercollider-server)"
    return None


# -- SynthDefs in SCgf v2 ------------------------------------------------------------------------

class Graph:
    """One SynthDef: constants, named controls (one ``Control.kr``) and UGens in execution order.
    An input is ``(ugen index, output index)``, with ugen index -1 for a constant."""

    def __init__(self, name: str, params: list[tuple[str, float]]):
        self.name, self.params = name, params
        self.constants: list[float] = []
        self.ugens: list[tuple] = []
        self.ctl = {p: o for p, o in zip((n for n, _ in params), self.ugen("Control", KR, [], len(params)))}

    def k(self, value: float) -> tuple[int, int]:
        if value not in self.constants:
            self.constants.append(float(value))
        return -1, self.constants.index(float(value))

    def _in(self, x):
        return self.ctl[x] if isinstance(x, str) else self.k(x) if isinstance(x, (int, float)) else x

    def ugen(self, cls: str, rate: int, inputs: list, outputs: int, special: int = 0) -> list[tuple[int, int]]:
        self.ugens.append((cls, rate, [self._in(i) for i in inputs], outputs, special))
        return [(len(self.ugens) - 1, o) for o in range(outputs)]

    def encode(self) -> bytes:
        pstr = lambda s: bytes([len(s)]) + s.encode()            # noqa: E731
        out = [pstr(self.name), struct.pack(">i", len(self.constants)),
               struct.pack(f">{len(self.constants)}f", *self.constants),
               struct.pack(">i", len(self.params)), struct.pack(f">{len(self.params)}f", *(v for _, v in self.params)),
               struct.pack(">i", len(self.params))]
        out += [pstr(n) + struct.pack(">i", i) for i, (n, _) in enumerate(self.params)]
        out.append(struct.pack(">i", len(self.ugens)))
        for cls, rate, inputs, outputs, special in self.ugens:
            out.append(pstr(cls) + struct.pack(">biih", rate, len(inputs), outputs, special))
            out += [struct.pack(">ii", u, o) for u, o in inputs]
            out.append(bytes([rate]) * outputs)
        out.append(struct.pack(">h", 0))                          # no variants
        return b"".join(out)


def _stem_def() -> Graph:
    g = Graph("sdref_stem", [("buf", 0), ("rate", RATE), ("amp", STEM_VOLUME), ("start", 0), ("out", DECK_BUS0)])
    (scale,) = g.ugen("BufRateScale", KR, ["buf"], 1)
    (rate,) = g.ugen("BinaryOpUGen", KR, ["rate", scale], 1, MUL)
    left, right = g.ugen("PlayBuf", AR, ["buf", rate, 1, "start", 1, 0], 2)   # trigger 1, loop 1, doneAction 0
    chans = [g.ugen("BinaryOpUGen", AR, [c, "amp"], 1, MUL)[0] for c in (left, right)]
    g.ugen("Out", AR, ["out", *chans], 0)
    return g


def _deck_def() -> Graph:
    db = [20 * math.log10(knob_to_gain(k)) for k in EQ_KNOBS]
    g = Graph("sdref_deck", [("in", DECK_BUS0), ("out", MASTER_BUS), ("lo", db[0]), ("mid", db[1]),
                             ("hi", db[2]), ("level", 1.0)])
    mid_hz = math.sqrt(LOW_CROSSOVER_HZ * HIGH_CROSSOVER_HZ)
    chans = []
    for x in g.ugen("In", AR, ["in"], 2):
        (x,) = g.ugen("BLowShelf", AR, [x, LOW_CROSSOVER_HZ, 1, "lo"], 1)
        (x,) = g.ugen("BPeakEQ", AR, [x, mid_hz, 2, "mid"], 1)
        (x,) = g.ugen("BHiShelf", AR, [x, HIGH_CROSSOVER_HZ, 1, "hi"], 1)
        chans.append(g.ugen("BinaryOpUGen", AR, [x, "level"], 1, MUL)[0])
    g.ugen("Out", AR, ["out", *chans], 0)
    return g


def _master_def() -> Graph:
    g = Graph("sdref_master", [("in", MASTER_BUS), ("limit", LIMIT)])
    chans = [g.ugen("Limiter", AR, [x, "limit", 0.01], 1)[0] for x in g.ugen("In", AR, ["in"], 2)]
    g.ugen("Out", AR, [0, *chans], 0)
    return g


def synthdef_bytes() -> bytes:
    """The three SynthDefs (stem, deck, master) as one SCgf v2 file, for ``/d_recv``."""
    defs = [_stem_def(), _deck_def(), _master_def()]
    return b"SCgf" + struct.pack(">ih", 2, len(defs)) + b"".join(d.encode() for d in defs)


# -- the workload as OSC commands -----------------------------------------------------------------

def load_commands(paths: list[str]) -> list[list]:
    """``/d_recv`` and the sixteen ``/b_allocRead`` (buffer k = stem k)."""
    return [["/d_recv", synthdef_bytes()]] + [["/b_allocRead", k, p, 0, -1] for k, p in enumerate(paths)]


def play_commands() -> list[list]:
    """The synths, stems then decks then master (each added at the tail of the root group, so
    they run in that order every block)."""
    frames = int(STEM_SECONDS * SR)
    gain_a, gain_b = crossfader_gains(0.5, "constant-power")
    levels = [gain_a, gain_b, 1.0, 1.0]               # the crossfader acts on decks A and B
    cmds, node = [], NODE0
    for k in range(STEMS):
        start = int(((k * 0.037) % 1.0) * frames)      # workload.py's start fractions
        cmds.append(["/s_new", "sdref_stem", node, 1, 0, "buf", k, "start", start,
                     "out", DECK_BUS0 + 2 * (k % DECKS)])
        node += 1
    for d in range(DECKS):
        cmds.append(["/s_new", "sdref_deck", node, 1, 0, "in", DECK_BUS0 + 2 * d, "level", float(levels[d])])
        node += 1
    cmds.append(["/s_new", "sdref_master", node, 1, 0])
    return cmds


def bundle(seconds: float, messages: list[list]) -> bytes:
    """An OSC bundle at ``seconds`` from the score's start (NRT time tags count from 0)."""
    body = b"".join(struct.pack(">i", len(m)) + m for m in (soak_client.message(c[0], c[1:]) for c in messages))
    return b"#bundle\0" + struct.pack(">Q", int(round(seconds * 2**32))) + body


def write_score(path: str | os.PathLike, paths: list[str], seconds: float) -> None:
    """The NRT score: everything at time 0, then a no-op at ``seconds`` that sets the length."""
    with open(path, "wb") as f:
        for b in (bundle(0.0, load_commands(paths) + play_commands()), bundle(seconds, [["/c_set", 0, 0]])):
            f.write(struct.pack(">i", len(b)) + b)


def reference_files(folder: str) -> list[str]:
    """The sixteen stems as WAVs in ``folder`` (written once; reused when already there)."""
    paths = [os.path.join(folder, f"ref{k:02d}.wav") for k in range(STEMS)]
    if not all(os.path.exists(p) for p in paths):
        paths = soak_client.write_reference_files(folder)
    return paths


# -- offline (NRT) -------------------------------------------------------------------------------

def nrt_render(seconds: float, out_path: str | os.PathLike, *, stems_dir: str | None = None) -> float:
    """Render ``seconds`` of the reference workload with ``scsynth -N`` to ``out_path`` (WAV,
    24-bit, 44.1 kHz, stereo). Returns the wall seconds of the scsynth command alone (writing
    the stems and the score is not counted). Raises RuntimeError if scsynth fails or writes
    silence or the wrong length."""
    import numpy as np
    import soundfile as sf

    if missing():
        raise RuntimeError(missing())
    with tempfile.TemporaryDirectory(prefix="sdref-nrt-") as tmp:
        paths = reference_files(stems_dir or tmp)
        score = os.path.join(tmp, "score.osc")
        write_score(score, paths, seconds)
        cmd = ["scsynth", "-N", score, "_", str(out_path), str(SR), "WAV", "int24", "-o", "2", "-i", "0",
               "-D", "0", "-V", "-1"]
        t0 = time.perf_counter()
        run = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {run.returncode}:\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
    info = sf.info(str(out_path))
    want = seconds * SR
    if info.channels != 2 or abs(info.frames - want) > 64:
        raise RuntimeError(f"scsynth wrote {info.frames} frames x {info.channels} channels, expected {want:.0f} x 2")
    head, _ = sf.read(str(out_path), frames=min(info.frames, 10 * SR), dtype="float32")
    rms = float(np.sqrt(np.mean(head[SR:] ** 2))) if len(head) > SR else 0.0
    if not rms > 1e-3:
        raise RuntimeError(f"scsynth's render is silent (RMS {rms:g} after the first second):\n{run.stdout[-2000:]}")
    return wall


# -- live, on JACK --------------------------------------------------------------------------------

class LiveScsynth:
    """``scsynth -u PORT`` as a client of the JACK server ``jack`` (tests/jackserver.JackServer),
    outputs connected to the server's playback ports. :meth:`play` loads and starts the workload;
    :meth:`status` asks ``/status``."""

    def __init__(self, jack, port: int | None = None):
        from serveproc import free_port

        self.port = port or free_port()
        env = dict(jack.env, SC_JACK_DEFAULT_OUTPUTS="system:playback_1,system:playback_2")
        self.log_path = Path(jack.log_dir) / f"scsynth-{self.port}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(["scsynth", "-u", str(self.port), "-i", "0", "-o", "2", "-R", "0",
                                          "-D", "0", "-l", "4"], stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env)
        self.replies = soak_client.Replies(("127.0.0.1", self.port))
        deadline = time.monotonic() + 30
        while self.status(timeout=0.5) is None:           # answers once its JACK client is running
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"scsynth did not start on JACK server {jack.name}:\n{self.log()[-2000:]}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def status(self, timeout: float = 5.0) -> dict | None:
        """/status.reply as a dict (ugens, synths, avg_cpu, peak_cpu, ...); None without an answer."""
        r = self.replies
        with r.cond:
            r.answers = type(r.answers)((a for a in r.answers if a[0] != "/status.reply"), maxlen=r.answers.maxlen)
        r.send("/status")
        deadline = time.monotonic() + timeout
        with r.cond:
            while True:
                for address, args in r.answers:
                    if address == "/status.reply":
                        keys = ("ugens", "synths", "groups", "synthdefs", "avg_cpu", "peak_cpu",
                                "nominal_sr", "actual_sr")
                        return dict(zip(keys, args[1:]))
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                r.cond.wait(left)

    def play(self, paths: list[str]) -> dict:
        """Load the defs and stems, start the synths; returns /status once they run."""
        r = self.replies
        for cmd in load_commands(paths):
            r.send(*cmd)
            answer = r.wait_answer(cmd[0], cmd[1] if cmd[0] == "/b_allocRead" else None, timeout=60)
            if answer is None or answer[0] != "done":
                raise RuntimeError(f"scsynth: {cmd[0]} {cmd[1] if len(cmd) > 2 else ''} -> {answer}")
        for cmd in play_commands():
            r.send(*cmd)
        deadline = time.monotonic() + 10
        while True:
            st = self.status()
            if st and st["synths"] == STEMS + DECKS + 1:
                return st
            if time.monotonic() > deadline:
                raise RuntimeError(f"scsynth runs {st} synths, not {STEMS + DECKS + 1}:\n{self.log()[-2000:]}")
            time.sleep(0.05)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.replies.send("/quit")
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.replies.close()


def record_rms(jack, seconds: int = 3) -> float:
    """Record scsynth's JACK outputs for whole ``seconds`` (jack_rec) and return their RMS."""
    import soundfile as sf
    import numpy as np

    path = Path(jack.log_dir) / "scsynth-out.wav"
    jack.record(path, ["SuperCollider:out_1", "SuperCollider:out_2"], seconds).wait(seconds + 30)
    data, _ = sf.read(str(path), dtype="float32")
    return float(np.sqrt(np.mean(data ** 2))) if len(data) else 0.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mode", required=True)
    n = sub.add_parser("nrt", help="render offline with scsynth -N and time it")
    n.add_argument("--seconds", type=float, default=300.0)
    n.add_argument("-o", "--out", default=None, help="keep the render here (default: a temporary file)")
    n.add_argument("--runs", type=int, default=1)
    live = sub.add_parser("live", help="play on a JACK dummy server and check the output")
    live.add_argument("--seconds", type=int, default=5, help="seconds recorded with jack_rec")
    live.add_argument("--period", type=int, default=128)
    args = p.parse_args()
    if missing():
        print(missing())
        return 2
    if args.mode == "nrt":
        with tempfile.TemporaryDirectory(prefix="sdref-") as tmp:
            out = args.out or os.path.join(tmp, "out.wav")
            stems = reference_files(tmp)
            walls = [nrt_render(args.seconds, out, stems_dir=os.path.dirname(stems[0])) for _ in range(args.runs)]
        print(f"scsynth NRT: {args.seconds:g} s of the reference workload in "
              + ", ".join(f"{w:.2f}" for w in walls) + f" s wall ({args.seconds / min(walls):.0f}x real time)")
        return 0
    from jackserver import JackServer

    with tempfile.TemporaryDirectory(prefix="sdref-") as tmp, JackServer(rate=SR, period=args.period) as jack:
        sc = LiveScsynth(jack)
        try:
            st = sc.play(reference_files(tmp))
            rms = record_rms(jack, args.seconds)
            st2 = sc.status()
        finally:
            sc.close()
    print(f"scsynth on JACK (period {args.period}): {st2['synths']} synths, {st2['ugens']} UGens, "
          f"avg CPU {st2['avg_cpu']:.1f} % (scsynth's own figure), output RMS {rms:.3f} over {args.seconds} s")
    return 0 if rms > 1e-3 and st["avg_cpu"] >= 0 else 1


if __name__ == "__main__":
    sys.exit(main())
