"""Time from `stemdeck serve` to `ready`: cold, first and warm starts.

- cold: a fresh install that was never warmed: an empty kernel cache
  (NUMBA_CACHE_DIR pointed at a new folder), so serve compiles every kernel
  itself (it says so: `compiling the engine ...`);
- first: a new empty cache warmed by `stemdeck warmup`, as `./run` does at
  install, then serve (the install's compile is timed too);
- warm: serve again from that cache, as on every later start.

    .venv/bin/python benchmarks/startup.py [--runs 5] [--cold-runs 1] [--jack]

--jack starts a JACK dummy server (tests/jackserver.py) and serves on it
through PortAudio (the PortAudio callback's load counts); the default is the
null backend. Reports the median and max of each over its runs, and whether
serve printed the compile message. A cold or first run costs a full
compile (a minute or more on a 2-core machine); --cold-runs 0 skips both.
Run from the repository; PYTHONPATH=OTHER/src times another tree (a tree
without `stemdeck warmup` reports no first start).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))           # tests/jackserver.py
COMPILING = "compiling the engine"


def time_to_ready(env: dict, backend: str, timeout: float = 600.0) -> tuple[float, bool]:
    """Seconds from starting ``stemdeck serve`` to its ``ready`` line, and
    whether it printed the compile message first."""
    cmd = [sys.executable, "-m", "stemdeck", "serve", "--backend", backend, "--port", "0"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    compiled = False
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            compiled = compiled or line.startswith(COMPILING)
            if line.strip().startswith("ready"):
                return time.perf_counter() - t0, compiled
            if time.perf_counter() - t0 > timeout:
                break
        raise RuntimeError(f"serve did not print ready (exit {proc.poll()}):\n{''.join(lines[-20:])}")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def warm_up(env: dict) -> float | None:
    """Seconds `stemdeck warmup` takes (None: this tree has no such command)."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "stemdeck", "warmup"], env=env, capture_output=True, text=True)
    if done.returncode == 2 and "invalid choice" in done.stderr:
        return None
    if done.returncode:
        raise RuntimeError(f"stemdeck warmup failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def summary(name: str, runs: list[tuple[float, bool]]) -> str:
    if not runs:
        return f"  {name:<6} -"
    times = [t for t, _ in runs]
    said = sum(c for _, c in runs)
    return (f"  {name:<6} median {statistics.median(times):6.2f} s, max {max(times):6.2f} s over {len(times)} "
            f"run(s); compile message in {said} of {len(times)}")


def measure(args, env: dict, backend: str) -> dict:
    out = {"cold": [], "first": [], "warm": [], "install": []}
    root = Path(tempfile.mkdtemp(prefix="stemdeck-startup-"))
    try:
        cache = root / "none"
        for i in range(args.cold_runs):
            cache = root / f"cold{i}"
            run_env = dict(env, NUMBA_CACHE_DIR=str(cache))
            out["cold"].append(time_to_ready(run_env, backend, args.timeout))
            print(f"cold {i + 1}: {out['cold'][-1][0]:.2f} s", file=sys.stderr)
            shutil.rmtree(cache)
            install = warm_up(run_env)
            if install is None:
                break
            out["install"].append(install)
            out["first"].append(time_to_ready(run_env, backend, args.timeout))
            print(f"install {install:.1f} s, first {out['first'][-1][0]:.2f} s", file=sys.stderr)
        if not out["cold"]:                      # --cold-runs 0: the user's own cache, as it is
            run_env = dict(env)
        else:
            run_env = dict(env, NUMBA_CACHE_DIR=str(cache))
        time_to_ready(run_env, backend, args.timeout)   # compiles here if the tree has no warmup
        out["warm"] = [time_to_ready(run_env, backend, args.timeout) for _ in range(args.runs)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5, help="warm starts (default 5)")
    p.add_argument("--cold-runs", type=int, default=1, help="cold and first starts, each on a new empty cache (default 1)")
    p.add_argument("--jack", action="store_true", help="serve on a JACK dummy server through PortAudio")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds a start may take before it counts as failed")
    args = p.parse_args()
    if args.jack:
        from jackserver import JackServer

        with JackServer(rate=44100, period=256) as jack:
            results = measure(args, jack.env, "portaudio")
        where = "portaudio backend on a JACK dummy server"
    else:
        results = measure(args, dict(os.environ), "null")
        where = "null backend"
    print(f"serve -> ready ({where}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f})")
    print(summary("cold", results["cold"]))
    print(summary("first", results["first"]))
    print(summary("warm", results["warm"]))
    if results["install"]:
        print(f"  install-time compile (stemdeck warmup, what ./run runs): median "
              f"{statistics.median(results['install']):.1f} s")


if __name__ == "__main__":
    main()
