"""How far ahead a keylocked deck must render, per Rubber Band engine.

Feeds noise through the real-time stretcher the way the kernel does (start
pad, start delay trimmed, fixed blocks) and reports the most input that had
to be fed beyond a frame before that frame's output was available; also the
pitch error on a pure tone at several scales and the cost per block.

    .venv/bin/python benchmarks/keylock_latency.py [--sample-rate 44100]

The lookahead in stemdeck/engine/rubberband.py comes from this table.
"""

from __future__ import annotations

import argparse
import ctypes
import time

import numpy as np

from stemdeck.engine.commands import KEYLOCK_ENGINES as ENGINES
from stemdeck.engine.rubberband import RubberBand


def measure(rb: RubberBand, sr: int, engine: str, block: int, scale: float, seconds: float = 10.0):
    lib = rb.lib
    h = rb.new(sr, engine)
    lib.rubberband_set_pitch_scale(h, scale)
    delay, pad = lib.rubberband_get_start_delay(h), rb.start_pad(h)
    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal(int(sr * seconds) + 16384)).astype(np.float32)
    out = np.zeros((2, 16384), np.float32)
    inp, outp = (ctypes.c_void_p * 2)(), (ctypes.c_void_p * 2)()
    outp[0], outp[1] = out[0].ctypes.data, out[1].ctypes.data
    zeros = np.zeros(pad, np.float32)
    inp[0] = inp[1] = zeros.ctypes.data
    lib.rubberband_process(h, inp, pad, 0)
    state = {"drop": delay, "produced": 0}

    def collect():
        avail = lib.rubberband_available(h)
        while avail > 0:
            got = lib.rubberband_retrieve(h, outp, min(avail, 16384))
            d = min(state["drop"], got)
            state["drop"] -= d
            state["produced"] += got - d
            avail = lib.rubberband_available(h)

    fed = wanted = need = 0
    times = []
    while fed + block < int(sr * seconds):
        inp[0] = inp[1] = x[fed:].ctypes.data
        t0 = time.perf_counter_ns()
        lib.rubberband_process(h, inp, block, 0)
        collect()
        times.append(time.perf_counter_ns() - t0)
        fed += block
        wanted += block
        need = max(need, wanted - state["produced"])
    rb.delete(h)
    t = np.array(times[100:]) / 1000
    return delay, pad, need, float(np.median(t)), float(np.percentile(t, 99)), float(t.mean())


def pitch_error_cents(rb: RubberBand, sr: int, engine: str, scale: float) -> float:
    lib = rb.lib
    h = rb.new(sr, engine)
    lib.rubberband_set_pitch_scale(h, scale)
    f0 = 440.0 / scale
    x = (0.5 * np.sin(2 * np.pi * f0 * np.arange(sr * 3) / sr)).astype(np.float32)
    y = np.zeros(sr * 3 + 16384, np.float32)
    y_right = np.zeros_like(y)          # each channel needs its own buffer
    inp, outp = (ctypes.c_void_p * 2)(), (ctypes.c_void_p * 2)()
    got = 0
    for i in range(0, len(x) - 256, 256):
        inp[0] = inp[1] = x[i:].ctypes.data
        lib.rubberband_process(h, inp, 256, 0)
        avail = lib.rubberband_available(h)
        if avail > 0:
            outp[0], outp[1] = y[got:].ctypes.data, y_right[got:].ctypes.data
            got += lib.rubberband_retrieve(h, outp, avail)
    rb.delete(h)
    seg = y[sr:sr + 65536].astype(np.float64)
    mag = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    k = int(np.argmax(mag))
    a, b, c = np.log(mag[k - 1:k + 2])
    hz = (k + 0.5 * (a - c) / (a - 2 * b + c)) * sr / len(seg)
    return 1200 * np.log2(hz / 440.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sample-rate", type=int, default=44100)
    args = p.parse_args()
    rb = RubberBand.load()
    if rb is None:
        raise SystemExit("librubberband2 is not installed: apt-get install librubberband2")
    sr = args.sample_rate
    print(f"{'engine':7s} {'block':>5s} {'scale':>6s} {'delay':>6s} {'pad':>5s} {'lookahead':>9s} "
          f"{'ms':>6s} {'µs/block med':>12s} {'p99':>8s} {'core %':>7s}")
    for engine in ENGINES:
        for block in (64, 256, 1024):
            for scale in (1 / 1.1, 1 / 0.9):
                d, pad, need, med, p99, mean = measure(rb, sr, engine, block, scale)
                print(f"{engine:7s} {block:5d} {scale:6.3f} {d:6d} {pad:5d} {need:9d} {need / sr * 1000:6.1f} "
                      f"{med:12.1f} {p99:8.1f} {100 * mean / (block / sr * 1e6):7.2f}")
    print("\npitch error on a pure tone (cents) at scales 0.9 0.95 1.05 1.11:")
    for engine in ENGINES:
        errs = [pitch_error_cents(rb, sr, engine, s) for s in (0.9, 0.95, 1.05, 1 / 0.9)]
        print(f"  {engine:7s} " + "  ".join(f"{e:+6.1f}" for e in errs))


if __name__ == "__main__":
    main()
