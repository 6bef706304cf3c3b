"""Time from `stemdeck serve` to `ready`, cold and warm.

Cold: an empty numba cache (NUMBA_CACHE_DIR pointed at a new folder), so the
render kernel and the PortAudio callback compile from scratch, as on a
freshly installed Pi. Warm: the same folder again, kernels loaded from the
cache, as on every boot after the first.

    .venv/bin/python benchmarks/startup.py [--runs 5] [--backend null]

Reports median and max seconds for each over --runs warm starts (one cold).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def time_to_ready(env: dict, backend: str, timeout: float = 300.0) -> float:
    cmd = [sys.executable, "-m", "stemdeck", "serve", "--backend", backend, "--port", "0"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if line.strip().startswith("ready"):
                return time.perf_counter() - t0
            if time.perf_counter() - t0 > timeout:
                break
        raise RuntimeError(f"serve did not print ready (exit {proc.poll()})")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--backend", default="null", choices=("null", "portaudio"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        cold = time_to_ready(env, args.backend)
        warm = [time_to_ready(env, args.backend) for _ in range(args.runs)]
    print(f"serve -> ready ({args.backend} backend)")
    print(f"  cold (empty kernel cache): {cold:.2f} s")
    print(f"  warm (cached kernels):     median {statistics.median(warm):.2f} s, max {max(warm):.2f} s "
          f"over {len(warm)} runs")


if __name__ == "__main__":
    main()
