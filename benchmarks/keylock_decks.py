"""Key lock on all four decks of the reference workload: its cost per block, offline and live.

    .venv/bin/python benchmarks/keylock_decks.py [--block 256] [--engine faster|finer|both]
                                                 [--offline-seconds 20] [--seconds 60]
                                                 [--no-jack] [--json FILE]

The reference workload (:func:`stemdeck.tools.workload.build_reference_workload`):
16 stems, 4 per deck, 30 s stereo sources looping at rate 1.05 (126 on a
base of 120) through the interpolating resampler, every deck's EQ at
non-unity gains, crossfader at centre, limiter on. Key lock on all four
decks means four stereo Rubber Band real-time stretchers, each shifting its
deck's pitch by 1/1.05 back to the original key.

Offline (``Engine.render`` on this thread, ``--block`` frames per call, after
a 2 s warm-up), per Rubber Band engine:

- ``plain``: the workload without key lock;
- ``keylock``: the same with key lock on every deck;
- ``rubberband``: four stretchers alone, each fed ``--block`` frames of its
  deck's material (the sum of the deck's four reference stems) the way the kernel feeds them (process, then retrieve what is
  available), called from Python through ctypes; the ctypes overhead of the
  calls is measured separately and subtracted;
- ``deck path``: keylock - plain - rubberband (means): what stemdeck's
  key-lock deck path (lookahead render, delay line, FIFO, crossfade mix)
  costs on top of Rubber Band itself.

Live (unless ``--no-jack``): a JACK dummy server (``jackd -d dummy -p BLOCK``,
tests/jackserver.py) and the engine's compiled callback on it through
PortAudio's JACK host API (:mod:`stemdeck.audio.portaudio`), key lock on
all four decks, for ``--seconds``: underflow flags, callbacks past their
period, jackd's XRun lines (split: stemdeck's client, a ``jack_metro``
witness client that shows what the machine does to any JACK client, the
dummy driver's timer), starved key-lock frames, and the callback time.

A benchmark, not a test: the numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))          # tests/jackserver.py

SR = 44100
RATE = 1.05


def workload_engine(engine_name: str, keylock: bool, max_block: int = 8192):
    from stemdeck.engine import Engine
    from stemdeck.tools.workload import build_reference_workload

    e = Engine(SR, keylock_engine=engine_name, max_block=max_block)
    if keylock and not e.keylock_available:
        raise SystemExit("librubberband2 is not installed: apt-get install librubberband2")
    build_reference_workload(e, rate=RATE)
    if keylock:
        for deck in range(4):
            e.set_keylock(deck, True)
    return e


def time_engine(e, block: int, seconds: float) -> np.ndarray:
    """Per-block render times in µs, after a 2 s warm-up (stretchers primed)."""
    out = np.zeros((block, 2), np.float32)
    for _ in range(int(2.0 * SR / block)):
        e.render(out)
    n = max(200, int(seconds * SR / block))
    times = np.empty(n)
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        e.render(out)
        times[i] = clock() - t0
    return times / 1000.0


def time_rubberband(engine_name: str, block: int, seconds: float) -> tuple[np.ndarray, float]:
    """Four stretchers alone, as the kernel drives them: per-block µs (ctypes
    overhead subtracted) and that overhead per block."""
    from stemdeck.engine.rubberband import RubberBand

    rb = RubberBand.load()
    lib = rb.lib
    handles = [rb.new(SR, engine_name) for _ in range(4)]
    from stemdeck.tools.workload import reference_sources

    # each deck's own material: the sum of its four reference stems (Rubber
    # Band's cost depends on the signal), looped to length
    n = int((seconds + 3.0) * SR) + block
    sources = reference_sources(16, 30.0, SR)
    decks = []
    for d in range(4):
        mix = sum(sources[k] for k in range(d, 16, 4)).T
        decks.append(np.ascontiguousarray(np.tile(mix, (1, n // mix.shape[1] + 1))[:, :n]))
    out = np.zeros((2, 16384), np.float32)
    inp = (ctypes.c_void_p * 2)()
    outp = (ctypes.c_void_p * 2)(out[0].ctypes.data, out[1].ctypes.data)
    for h in handles:
        lib.rubberband_set_pitch_scale(h, 1.0 / RATE)
        pad = rb.start_pad(h)
        zeros = np.zeros(pad, np.float32)
        inp[0] = inp[1] = zeros.ctypes.data
        lib.rubberband_process(h, inp, pad, 0)
    process, available, retrieve = lib.rubberband_process, lib.rubberband_available, lib.rubberband_retrieve
    clock = time.perf_counter_ns
    times, calls = [], []
    fed = 0
    warm = int(2.0 * SR / block)
    ptrs = [[(x[0, i:].ctypes.data, x[1, i:].ctypes.data) for i in range(0, n - block, block)]
            for x in decks]
    b = 0
    while fed + block < n:
        k = 0
        t0 = clock()
        for d, h in enumerate(handles):
            inp[0], inp[1] = ptrs[d][b]
            process(h, inp, block, 0)
            avail = available(h)
            k += 2
            while avail > 0:
                retrieve(h, outp, min(avail, 16384))
                avail = available(h)
                k += 2
        times.append(clock() - t0)
        calls.append(k)
        fed += block
        b += 1
    # the same number of calls that do (almost) nothing in C: what ctypes itself costs
    t0 = clock()
    reps = 20000
    for _ in range(reps):
        available(handles[0])
    per_call = (clock() - t0) / reps
    for h in handles:
        rb.delete(h)
    t = np.array(times[warm:], np.float64)
    c = np.array(calls[warm:], np.float64)
    overhead = c * per_call
    return (t - overhead) / 1000.0, float(np.median(overhead) / 1000.0)


def stats(t: np.ndarray, block: int) -> dict:
    period = block / SR * 1e6
    med, p99, mx = float(np.median(t)), float(np.percentile(t, 99)), float(np.max(t))
    # the finer engine works in bursts (one FFT hop every few blocks), so its
    # cost is the mean; the top 0.1 % is dropped as other processes' interference
    cut = np.sort(t)[:max(1, int(len(t) * 0.999))]
    mean = float(np.mean(cut))
    return {"median_us": med, "mean_us": mean, "p99_us": p99, "max_us": mx, "period_us": period,
            "core_pct": 100 * mean / period,
            "load_median_pct": 100 * med / period, "load_p99_pct": 100 * p99 / period,
            "load_max_pct": 100 * mx / period, "blocks": int(len(t))}


def offline(engine_name: str, block: int, seconds: float) -> dict:
    plain_e = workload_engine(engine_name, False)
    plain = stats(time_engine(plain_e, block, seconds), block)
    kl_e = workload_engine(engine_name, True)
    kl = stats(time_engine(kl_e, block, seconds), block)
    st = kl_e.stats()
    rb_times, overhead = time_rubberband(engine_name, block, seconds)
    rb = stats(rb_times, block)
    deck = kl["mean_us"] - plain["mean_us"] - rb["mean_us"]
    deck_median = kl["median_us"] - plain["median_us"] - rb["median_us"]
    return {"engine": engine_name, "block": block, "plain": plain, "keylock": kl, "rubberband": rb,
            "ctypes_overhead_us": overhead, "deck_path_us": deck, "deck_path_median_us": deck_median,
            "deck_path_per_deck_us": deck / 4, "deck_path_load_pct": 100 * deck / plain["period_us"],
            "rubberband_core_pct_per_deck": rb["core_pct"] / 4,
            "keylock_decks": st["keylock_decks"], "starved_frames": st["keylock_starved_frames"],
            "latency_frames": kl_e.keylock_latency, "latency_ms": 1000 * kl_e.keylock_latency / SR}


def jack_xruns(server) -> tuple[int, int, int]:
    """jackd's XRun lines: (ours, the witness's, the driver's own)."""
    return server.xruns_by_client()


def live(engine_name: str, block: int, seconds: float) -> dict:
    from jackserver import JackServer

    with JackServer(rate=SR, period=block) as jack:
        os.environ["JACK_DEFAULT_SERVER"] = jack.name
        os.environ["JACK_NO_START_SERVER"] = "1"
        # a second, trivial C client: what the machine itself does to any JACK client
        jack.spawn_client("jack_metro", "-n", "witness", "-b", "120", wait_for_port="witness:")
        from stemdeck.audio.portaudio import JACK_HOSTAPI, PortAudioOutput
        from stemdeck.engine import layout as L

        e = workload_engine(engine_name, True, max_block=max(block, 1024))
        out = PortAudioOutput(e, block_size=block, sample_rate=SR, device=None, latency="low",
                              reconnect=0)
        out.open(rescan=True)
        if out.hostapi != JACK_HOSTAPI:
            out.close()
            out = PortAudioOutput(e, block_size=block, sample_rate=SR, device="JACK", latency="low",
                                  reconnect=0)
            out.open(rescan=True)
        out.start()
        try:
            time.sleep(2.0)                            # settle: stretchers primed, JACK running
            st0, x0 = e.stats(), jack_xruns(jack)
            idx0 = int(e.state.counters[L.CT_DUR_INDEX])
            chunks = []
            end = time.monotonic() + seconds
            idx = idx0
            while time.monotonic() < end:
                time.sleep(0.5)
                now = int(e.state.counters[L.CT_DUR_INDEX])
                ring = e.state.durations
                chunks.append(ring[np.arange(idx, now) & (len(ring) - 1)].astype(np.float64))
                idx = now
            st1, x1 = e.stats(), jack_xruns(jack)
        finally:
            out.close()
        d = np.concatenate(chunks) / 1000.0 if chunks else np.zeros(1)
        period = block / SR * 1e6
        return {"engine": engine_name, "block": block, "seconds": seconds, "hostapi": out.hostapi,
                "reported_latency_ms": 1000 * (out.reported_latency or 0.0),
                "callbacks": st1["callbacks"] - st0["callbacks"],
                "underflow_flags": st1["underflows"] - st0["underflows"],
                "late_callbacks": st1["overruns"] - st0["overruns"],
                "jack_xruns_stemdeck": x1[0] - x0[0], "jack_xruns_witness": x1[1] - x0[1],
                "jack_xruns_driver": x1[2] - x0[2],
                "starved_frames": st1["keylock_starved_frames"] - st0["keylock_starved_frames"],
                "keylock_decks": st1["keylock_decks"],
                "median_us": float(np.median(d)), "p99_us": float(np.percentile(d, 99)),
                "max_us": float(d.max()), "period_us": period,
                "keylock_latency_ms": 1000 * e.keylock_latency / SR}


def show_offline(r: dict) -> None:
    line = lambda name, s: (f"  {name:10s} mean {s['mean_us']:7.1f} µs ({s['core_pct']:5.1f} % of a core)  "  # noqa: E731
                            f"median {s['median_us']:7.1f} µs ({s['load_median_pct']:5.1f} %)  "
                            f"p99 {s['p99_us']:7.1f} µs ({s['load_p99_pct']:5.1f} %)  "
                            f"max {s['max_us']:7.1f} µs ({s['load_max_pct']:5.1f} %)")
    print(f"\n== offline, Rubber Band {r['engine']}, {r['block']} frames "
          f"(period {r['plain']['period_us']:.0f} µs), {r['plain']['blocks']} blocks timed")
    print(line("plain", r["plain"]))
    print(line("keylock", r["keylock"]))
    print(line("rubberband", r["rubberband"]) + f"   [4 stretchers alone; ctypes overhead "
                                                  f"{r['ctypes_overhead_us']:.1f} µs/block subtracted]")
    print(f"  Rubber Band: {r['rubberband_core_pct_per_deck']:.2f} % of a core per stereo deck; "
          f"the deck path on top of it: {r['deck_path_us']:.1f} µs per block for 4 decks "
          f"({r['deck_path_per_deck_us']:.1f} µs, {r['deck_path_load_pct'] / 4:.2f} % of a core per deck) "
          f"(means: keylock - plain - Rubber Band alone); from the medians: "
          f"{r['deck_path_median_us'] / 4:.1f} µs per deck (meaningful for faster; finer's cost comes in bursts)")
    print(f"  key lock latency {r['latency_frames']} frames ({r['latency_ms']:.1f} ms); "
          f"keylocked decks {r['keylock_decks']}; starved frames {r['starved_frames']}")


def show_live(r: dict) -> None:
    pct = lambda us: 100 * us / r["period_us"]          # noqa: E731
    print(f"\n== live, JACK dummy server, Rubber Band {r['engine']}, {r['block']} frames, "
          f"{r['seconds']:g} s, key lock on decks {r['keylock_decks']}")
    print(f"  underruns: {r['underflow_flags']} underflow flags, {r['late_callbacks']} callbacks past "
          f"their period; jackd XRuns: {r['jack_xruns_stemdeck']} blamed on stemdeck, "
          f"{r['jack_xruns_witness']} on the witness (jack_metro), {r['jack_xruns_driver']} of the dummy "
          f"driver; starved key-lock frames {r['starved_frames']}")
    print(f"  callback: median {r['median_us']:.0f} µs ({pct(r['median_us']):.1f} %), p99 {r['p99_us']:.0f} µs "
          f"({pct(r['p99_us']):.1f} %), max {r['max_us']:.0f} µs ({pct(r['max_us']):.1f} %) "
          f"over {r['callbacks']} callbacks")
    print(f"  latency: key lock adds {r['keylock_latency_ms']:.1f} ms (compensated); the stream reports "
          f"{r['reported_latency_ms']:.1f} ms output latency")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--block", type=int, default=256)
    p.add_argument("--engine", choices=("faster", "finer", "both"), default="both")
    p.add_argument("--offline-seconds", type=float, default=20.0, help="audio seconds timed offline")
    p.add_argument("--seconds", type=float, default=60.0, help="seconds of the live JACK run")
    p.add_argument("--no-jack", action="store_true", help="skip the live run")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    engines = ("faster", "finer") if args.engine == "both" else (args.engine,)
    results = {"offline": [], "live": []}
    for name in engines:
        results["offline"].append(offline(name, args.block, args.offline_seconds))
        show_offline(results["offline"][-1])
    if not args.no_jack:
        for name in engines:
            results["live"].append(live(name, args.block, args.seconds))
            show_live(results["live"][-1])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
