"""``stemdeck bench``: time the reference workload through ``Engine.render``.

Main thread. Reports per block size the median, p99 and max microseconds per
block and the DSP load (share of the block period), then how many stems fit
at 128 frames with p99 load under 50 %. A benchmark, never a test: the
numbers depend on the machine and on what else it is doing.
"""

from __future__ import annotations

import argparse

from stemdeck.engine.commands import SAMPLE_RATES
from stemdeck.errors import UsageError


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give block sizes as integers, e.g. 64,128,256,1024")
    if not sizes or any(not 32 <= s <= 8192 for s in sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: block sizes must be 32..8192")
    return sizes


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--blocks", type=_sizes, default=[64, 128, 256, 1024],
                   help="block sizes to time (default 64,128,256,1024)")
    p.add_argument("--stems", type=int, default=16, help="stems in the workload (default 16)")
    p.add_argument("--seconds", type=float, default=3.0,
                   help="audio seconds timed per block size (default 3)")
    p.add_argument("--sample-rate", type=int, default=44100, choices=SAMPLE_RATES)
    p.add_argument("--no-scaling", action="store_true", help="skip the stem-scaling search")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")


def time_blocks(engine, block: int, seconds: float):
    """Render ``seconds`` of audio in blocks; return per-block times in µs."""
    import time

    import numpy as np

    out = np.zeros((block, 2), np.float32)
    for _ in range(50):                      # warm caches and branch predictors
        engine.render(out)
    n = max(200, int(seconds * engine.sample_rate / block))
    times = np.empty(n)
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        engine.render(out)
        times[i] = clock() - t0
    return times / 1000.0


def summarise(times_us, block: int, sample_rate: int) -> dict:
    import numpy as np

    period_us = block / sample_rate * 1e6
    med, p99, mx = (float(np.median(times_us)), float(np.percentile(times_us, 99)), float(times_us.max()))
    return {"block": block, "blocks_timed": int(len(times_us)), "period_us": period_us,
            "median_us": med, "p99_us": p99, "max_us": mx,
            "load_median": med / period_us, "load_p99": p99 / period_us, "load_max": mx / period_us}


def _engine(stems: int, sample_rate: int):
    from stemdeck.engine import Engine
    from stemdeck.tools.workload import build_reference_workload

    engine = Engine(sample_rate, max_voices=max(512, stems + 16))
    build_reference_workload(engine, stems=stems)
    return engine


def max_stems(sample_rate: int, block: int = 128, limit: float = 0.5, seconds: float = 1.0) -> int:
    """The largest stem count whose p99 load at ``block`` stays under ``limit``
    (doubling, then bisection)."""
    def fits(n):
        engine = _engine(n, sample_rate)
        return summarise(time_blocks(engine, block, seconds), block, sample_rate)["load_p99"] < limit

    lo, hi = 0, 16
    while fits(hi):
        lo, hi = hi, hi * 2
        if hi > 4096:
            return lo
    while hi - lo > max(1, lo // 16):        # to within ~6 %
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def run(args) -> int:
    import json
    import platform
    import time

    from rich.console import Console
    from rich.table import Table

    if not 1 <= args.stems <= 4000:
        raise UsageError(f"--stems {args.stems}: use 1..4000")
    console = Console()
    t0 = time.perf_counter()
    engine = _engine(args.stems, args.sample_rate)
    console.print(f"reference workload: {args.stems} stems, 4 decks, rate 1.05, EQ on, limiter on, "
                  f"{args.sample_rate} Hz (engine ready in {time.perf_counter() - t0:.2f} s)")
    table = Table(title="Engine.render per block")
    for col in ("block", "median µs", "p99 µs", "max µs", "DSP load median", "DSP load p99"):
        table.add_column(col, justify="right")
    results = []
    for block in args.blocks:
        r = summarise(time_blocks(engine, block, args.seconds), block, args.sample_rate)
        results.append(r)
        table.add_row(str(block), f"{r['median_us']:.1f}", f"{r['p99_us']:.1f}", f"{r['max_us']:.1f}",
                      f"{r['load_median']:.1%}", f"{r['load_p99']:.1%}")
    console.print(table)
    # offline speed: how much faster than real time at 1024-frame blocks
    r1024 = next((r for r in results if r["block"] == 1024), None)
    if r1024:
        console.print(f"offline render at 1024 frames: {r1024['period_us'] / r1024['median_us']:.0f}x real time")
    report = {"stems": args.stems, "sample_rate": args.sample_rate, "machine": platform.platform(),
              "processor": platform.processor(), "blocks": results}
    if not args.no_scaling:
        n = max_stems(args.sample_rate)
        report["max_stems_128_p99_under_50pct"] = n
        console.print(f"scaling: up to {n} stems at 128 frames with p99 DSP load under 50 %")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0
