"""CPU of ``stemdeck serve`` and of scsynth, per process and per thread, idle and with the reference workload, on JACK.

    .venv/bin/python benchmarks/cpu.py [--seconds 30] [--runs 3] [--blocks 128,256] [--settle 5]
                                       [--only stemdeck|scsynth] [--src DIR] [--serve-args "..."]
                                       [--json FILE]

For each block size it starts a ``jackd -d dummy -r 44100 -p BLOCK`` (tests/jackserver.py)
and, ``--runs`` times, ALTERNATING: ``stemdeck serve --buffer-size BLOCK`` (as
benchmarks/soak.py starts it), then scsynth (benchmarks/scsynth_ref.py's LiveScsynth).
Each run of each measures two windows of ``--seconds``, each after ``--settle`` seconds:

- idle: the server started, no voices, nobody talking to it;
- reference workload: tools/workload.py's, sent as a client sends it (16 stems looping
  at rate 1.05, EQ 40/60/45 % on the four decks, A/B at the constant-power centre,
  limiter: soak_client.start_reference_workload; scsynth_ref.play_commands for scsynth),
  and then no message at all during the window.

CPU is user + system time from /proc (utime + stime of /proc/PID/stat for the process,
including threads that ended; /proc/PID/task/TID/stat for each live thread, grouped by the
thread's OS name, /proc/PID/task/TID/comm: stemdeck's are sd-osc, sd-telemetry, ... from
src/stemdeck/threads.py; the main thread is marked "(main)", and threads a library starts,
as libjack's, inherit the name of the thread that started them), as % of one core over the
window. jackd's CPU over the same
window is reported for context (its dummy driver's timer thread wakes every period).

Prints medians and min-max over the runs as markdown tables; ``--json`` writes every run.
``--src DIR`` runs serve from another checkout's ``DIR/src`` (a ``git worktree`` of an
older commit, for before/after in one session); ``--serve-args`` adds serve options.
A benchmark, not a test: on a shared machine the figures move with what else runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))          # tests/jackserver.py, tests/serveproc.py
sys.path.insert(0, str(HERE))

import scsynth_ref  # noqa: E402
import soak_client as client  # noqa: E402

SR = 44100
TICK = os.sysconf("SC_CLK_TCK")
SYSTEMS = ("stemdeck", "scsynth")
PHASES = ("idle", "workload")


# -- reading /proc ------------------------------------------------------------------------------

def _ticks(stat_path: str) -> int:
    """utime + stime (clock ticks) from a /proc stat file; the name in parentheses may hold spaces."""
    with open(stat_path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])          # fields 14 and 15 of proc(5), counted from state


def snapshot(pid: int) -> tuple[float, int, dict[int, tuple[str, int]]]:
    """(monotonic time, the process's ticks, {tid: (OS name, ticks)} of its live threads)."""
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            if int(tid) == pid:                       # threads a library starts inherit its name
                name += " (main)"
            threads[int(tid)] = (name, _ticks(f"/proc/{pid}/task/{tid}/stat"))
        except OSError:
            pass                                      # a thread that just ended: the process total has it
    return time.monotonic(), _ticks(f"/proc/{pid}/stat"), threads


def usage(before, after) -> dict:
    """% of one core between two snapshots: the process and each thread name (summed over threads
    of the same name; a thread started in between counts from zero)."""
    wall = after[0] - before[0]
    pct = lambda ticks: 100.0 * ticks / TICK / wall           # noqa: E731
    threads: dict[str, float] = {}
    for tid, (name, ticks) in after[2].items():
        threads[name] = threads.get(name, 0.0) + pct(ticks - before[2].get(tid, (name, 0))[1])
    return {"seconds": wall, "process": pct(after[1] - before[1]), "threads": threads}


def measure(pid: int, jackd_pid: int, seconds: float) -> dict:
    """One window: the process's CPU and its threads', and jackd's."""
    b, j0 = snapshot(pid), snapshot(jackd_pid)
    time.sleep(seconds)
    a, j1 = snapshot(pid), snapshot(jackd_pid)
    out = usage(b, a)
    out["jackd"] = usage(j0, j1)["process"]
    return out


# -- one run of each system ----------------------------------------------------------------------

def serve_env(jack, src: str | None) -> dict:
    env = dict(jack.env)
    if src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(src) / "src"), env.get("PYTHONPATH")]))
        # its own kernel cache: the shared one keeps only the last few engine versions, and edits
        # in the main checkout would prune this one's kernels between runs
        tag = hashlib.sha256(str(Path(src).resolve()).encode()).hexdigest()[:12]
        env["NUMBA_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), f"stemdeck-cpu-kernels-{tag}")
    return env


def warm_up(jack, args, say) -> None:
    """Start serve once and stop it, so that a compile (a fresh cache) is not inside a run."""
    from serveproc import free_port, start_serve

    t0 = time.monotonic()
    proc, _text = start_serve(["--buffer-size", str(jack.period), "--port", str(free_port()),
                               *shlex.split(args.serve_args)], env=serve_env(jack, args.src), timeout=1800)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    say(f"  serve warm-up: ready in {time.monotonic() - t0:.1f} s", flush=True)


def run_stemdeck(jack, paths: list[str], args) -> dict:
    from serveproc import free_port
    from soak import ServeProcess

    port = free_port()
    serve = ServeProcess(["--buffer-size", str(jack.period), "--port", str(port), *shlex.split(args.serve_args)],
                         serve_env(jack, args.src))
    replies = client.Replies(("127.0.0.1", port))
    out = {}
    try:
        time.sleep(args.settle)
        out["idle"] = measure(serve.proc.pid, jack.process.pid, args.seconds)
        client.start_reference_workload(replies, paths)
        status = wait_voices(replies, 16)
        time.sleep(args.settle)
        out["workload"] = measure(serve.proc.pid, jack.process.pid, args.seconds)
        end = replies.ask_status() or {}
        out["workload"]["server"] = {k: end.get(k) for k in ("voices_playing", "underruns", "late_commands")}
        if status is None or (end.get("voices_playing") or 0) < 16:
            raise RuntimeError(f"stemdeck did not play the 16 stems: {end}\n" + "\n".join(serve.lines[-20:]))
    finally:
        replies.close()
        rc, _took = serve.interrupt()
    if rc != 0:
        raise RuntimeError(f"serve exited with {rc}:\n" + "\n".join(serve.lines[-20:]))
    return out


def wait_voices(replies, n: int, timeout: float = 30.0) -> dict | None:
    """/status.json once ``n`` voices play (the loads are answered before the plays land)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = replies.ask_status()
        if status and status.get("voices_playing", 0) >= n:
            return status
        time.sleep(0.1)
    return None


def run_scsynth(jack, paths: list[str], args) -> dict:
    sc = scsynth_ref.LiveScsynth(jack)
    out = {}
    try:
        time.sleep(args.settle)
        out["idle"] = measure(sc.pid, jack.process.pid, args.seconds)
        sc.play(paths)
        time.sleep(args.settle)
        out["workload"] = measure(sc.pid, jack.process.pid, args.seconds)
        st = sc.status() or {}
        out["workload"]["server"] = {k: st.get(k) for k in ("synths", "ugens", "avg_cpu", "peak_cpu")}
        if st.get("synths") != scsynth_ref.STEMS + scsynth_ref.DECKS + 1 or not st.get("avg_cpu", 0) > 0:
            raise RuntimeError(f"scsynth is not playing the workload: {st}\n{sc.log()[-2000:]}")
    finally:
        sc.close()
    return out


# -- the session ---------------------------------------------------------------------------------

def run_session(args, say=print) -> list[dict]:
    """Every run: [{system, block, run, idle: {...}, workload: {...}}], systems alternating."""
    from jackserver import JackServer

    runners = {"stemdeck": run_stemdeck, "scsynth": run_scsynth}
    results = []
    with tempfile.TemporaryDirectory(prefix="stemdeck-cpu-") as folder:
        paths = scsynth_ref.reference_files(folder)
        for block in args.blocks:
            with JackServer(rate=SR, period=block) as jack:
                say(f"JACK dummy server {jack.name}: {SR} Hz, period {block}", flush=True)
                if "stemdeck" in args.systems:
                    warm_up(jack, args, say)
                for run in range(args.runs):
                    for system in args.systems:
                        r = runners[system](jack, paths, args)
                        results.append({"system": system, "block": block, "run": run, **r})
                        say(f"  {system:9s} run {run + 1}: idle {r['idle']['process']:5.1f} %, "
                            f"workload {r['workload']['process']:5.1f} % of a core "
                            f"(jackd {r['idle']['jackd']:.1f} / {r['workload']['jackd']:.1f} %)", flush=True)
    return results


def spread(values: list[float]) -> str:
    """median (min-max), or the one value."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def tables(results: list[dict], blocks: list[int], systems: list[str]) -> str:
    """The summary (process and jackd per cell) and one per-thread table per system, in markdown."""
    def cell(system, block, phase, key="process", thread=None):
        rs = [r[phase] for r in results if r["system"] == system and r["block"] == block]
        if thread is not None:
            return spread([r["threads"].get(thread, 0.0) for r in rs]) if rs else "-"
        return spread([r[key] for r in rs])

    runs = max((r["run"] + 1 for r in results), default=0)
    lines = [f"CPU, % of one core: median (min-max) of {runs} runs",
             "", "| | " + " | ".join(f"{s}" for s in systems) + " | " +
             " | ".join(f"jackd beside {s}" for s in systems) + " |",
             "| --- |" + " --- |" * (2 * len(systems))]
    for phase in PHASES:
        for block in blocks:
            label = f"{'idle (no voices)' if phase == 'idle' else 'reference workload'}, {block} frames"
            lines.append(f"| {label} | " + " | ".join(cell(s, block, phase) for s in systems) + " | "
                         + " | ".join(cell(s, block, phase, "jackd") for s in systems) + " |")
    for system in systems:
        names = sorted({n for r in results if r["system"] == system for p in PHASES for n in r[p]["threads"]},
                       key=lambda n: -max(r[p]["threads"].get(n, 0.0) for r in results if r["system"] == system
                                          for p in PHASES))
        cols = [(b, p) for b in blocks for p in PHASES]
        lines += ["", f"{system}, per thread (OS name)", "",
                  "| thread | " + " | ".join(f"{p} {b}" for b, p in cols) + " |",
                  "| --- |" + " --- |" * len(cols)]
        lines += [f"| {n} | " + " | ".join(cell(system, b, p, thread=n) for b, p in cols) + " |" for n in names]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0, help="measured seconds per window (default 30)")
    p.add_argument("--runs", type=int, default=3, help="runs per system and block size (default 3)")
    p.add_argument("--blocks", default="128,256", help="JACK periods = serve's --buffer-size (default 128,256)")
    p.add_argument("--settle", type=float, default=5.0, help="seconds before each window (default 5)")
    p.add_argument("--only", choices=SYSTEMS, help="measure one system only")
    p.add_argument("--src", metavar="DIR", help="run serve from DIR/src (another checkout or worktree)")
    p.add_argument("--serve-args", default="", help="extra options for stemdeck serve, one string")
    p.add_argument("--json", metavar="FILE", help="also write every run as JSON")
    args = p.parse_args(argv)
    args.blocks = [int(b) for b in args.blocks.split(",")]
    args.systems = [args.only] if args.only else list(SYSTEMS)
    if "scsynth" in args.systems and scsynth_ref.missing():
        if args.only:
            print(scsynth_ref.missing())
            return 2
        print(f"note: scsynth is not measured: {scsynth_ref.missing()}")
        args.systems.remove("scsynth")
    results = run_session(args)
    print()
    print(tables(results, args.blocks, args.systems))
    if args.json:
        Path(args.json).write_text(json.dumps({"src": args.src or str(HERE.parent), "serve_args": args.serve_args,
                                               "seconds": args.seconds, "runs": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
