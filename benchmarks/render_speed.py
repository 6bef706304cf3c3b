"""The whole `stemdeck render` command on the 300 s reference score, against scsynth's NRT render of the same work.

    .venv/bin/python benchmarks/render_speed.py [--runs 7] [--seconds 300] [--src DIR ...]
                                                [--no-scsynth] [--json FILE]

The reference score is tools/workload.py's workload as a score file
(:func:`write_reference_score`): the sixteen 30 s stems (32-bit float WAVs,
the same files benchmarks/scsynth_ref.py gives scsynth), four per deck,
looping at rate 1.05 with volume 0.5 and staggered starts, every deck's EQ
at 40/60/45 %, the A/B faders at the constant-power centre, the limiter on
(the default), rendered with ``--duration 300`` to 24-bit WAV.

Each run is a fresh process: ``python -m stemdeck render SCORE -o OUT
--duration S --no-progress --timings``, timed from spawn to exit. Variants
run alternately, round after round, so that a busy machine slows them all
alike: this checkout or each ``--src DIR`` (another checkout or a ``git
worktree``, run from ``DIR/src`` with its own kernel cache, in place of
this checkout: ``--src .`` adds it back) and scsynth
(``scsynth_ref.nrt_render``, the wall time of ``scsynth -N`` alone). One
untimed run of each first fills the kernel caches.

Per variant: the whole command's median and p90, and, where the command
says (``--timings``; older checkouts do not), its parts: start-up
(everything but the engine and the writing after it: interpreter, imports,
the compile-cache check, reading and checking the score, building the
engine, loading the stems), of which the loads ("lines": running the
score's lines, which decode the stems); engine (the render loop without
its lines; the file is written meanwhile on another thread); write (the
writing left when the loop ends) and the writer thread's own busy time. Every variant's file must have the same sha256 as the first
variant's (bit-identical output across checkouts), or the run fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SECONDS = 300.0
TIMINGS = re.compile(r"timings: setup ([\d.]+) s, lines ([\d.]+) s, engine ([\d.]+) s, "
                     r"finish ([\d.]+) s, writer busy ([\d.]+) s")


def write_reference_score(folder: str) -> str:
    """The reference workload as a score in ``folder``, with its stems (written once); returns its path."""
    import scsynth_ref

    from stemdeck.engine.dsp.crossfade import crossfader_gains
    from stemdeck.tools.workload import DECK_BASE_IDS, EQ_KNOBS

    paths = scsynth_ref.reference_files(folder)
    ids = [DECK_BASE_IDS[k % scsynth_ref.DECKS] + k // scsynth_ref.DECKS for k in range(scsynth_ref.STEMS)]
    lines = [f"# tools/workload.py's reference workload as a score: render with --duration {SECONDS:g}"]
    lines += [f"0.0 /load_buffer {bid} {os.path.basename(p)}" for bid, p in zip(ids, paths)]
    lines += [f"0.0 /deck_eq_all {deck} " + " ".join(f"{k:g}" for k in EQ_KNOBS) for deck in "ABCD"]
    lines.append("0.0 /crossfade_levels " + " ".join(repr(float(g)) for g in crossfader_gains(0.5, "constant-power")))
    lines += [f"0.0 /play_stem {bid} {scsynth_ref.RATE:g} {scsynth_ref.STEM_VOLUME:g} 1 {(k * 0.037) % 1.0:.3f}"
              for k, bid in enumerate(ids)]
    path = os.path.join(folder, "reference.score")
    Path(path).write_text("\n".join(lines) + "\n")
    return path


def render_env(src: str | None) -> dict:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(src) / "src"), env.get("PYTHONPATH")]))
        # its own kernel cache: the shared one keeps only the last few engine versions
        tag = hashlib.sha256(str(Path(src).resolve()).encode()).hexdigest()[:12]
        env["NUMBA_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), f"stemdeck-render-kernels-{tag}")
    return env


def run_stemdeck(score: str, out: str, seconds: float, src: str | None) -> dict:
    cmd = [sys.executable, "-m", "stemdeck", "render", score, "-o", out, "--duration", f"{seconds:g}",
           "--no-progress"]
    env = render_env(src)
    # an older checkout has no --timings: ask once whether it has, by its help text
    if src not in _HAS_TIMINGS:
        help_text = subprocess.run(cmd[:4] + ["--help"], env=env, capture_output=True, text=True).stdout
        _HAS_TIMINGS[src] = "--timings" in help_text
    if _HAS_TIMINGS[src]:
        cmd.append("--timings")
    t0 = time.perf_counter()
    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {run.returncode}:\n{run.stderr[-3000:]}")
    result = {"wall": wall, "sha256": hashlib.sha256(Path(out).read_bytes()).hexdigest()}
    m = TIMINGS.search(run.stderr)
    if m:
        setup, lines, engine, finish, busy = map(float, m.groups())
        result.update(startup=wall - engine - finish, setup=setup, lines=lines, engine=engine,
                      write=finish, writer_busy=busy)
    return result


_HAS_TIMINGS: dict = {}


def run_scsynth(seconds: float, out: str, stems: str) -> dict:
    """scsynth -N on the same stems. HOOK: benchmarks/scsynth_ref.py's ``nrt_render(seconds,
    out_path, stems_dir=...)`` returns the wall seconds of the scsynth process alone."""
    import scsynth_ref

    return {"wall": scsynth_ref.nrt_render(seconds, out, stems_dir=stems)}


def scsynth_missing() -> str | None:
    try:
        import scsynth_ref
    except ImportError as exc:
        return f"benchmarks/scsynth_ref.py cannot be imported ({exc})"
    if not hasattr(scsynth_ref, "nrt_render"):
        return "benchmarks/scsynth_ref.py has no nrt_render()"
    return scsynth_ref.missing()


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def report(results: dict, seconds: float) -> str:
    parts = ("wall", "startup", "lines", "engine", "write", "writer_busy")
    head = ("| variant | whole command, median | p90 | start-up | of which loads | engine | "
            "write (after the loop) | writer busy | x real time |")
    out = [f"`stemdeck render` of {seconds:g} s of the reference score (fresh process per run), "
           "and scsynth -N of the same work; seconds, median (p90) over the runs", "", head,
           "| --- " * (head.count("|") - 1) + "|"]
    for name, runs in results.items():
        cells = [name]
        for part in parts:
            values = [r[part] for r in runs if part in r]
            if not values:
                cells.append("")
                continue
            if part == "wall":
                cells += [f"{statistics.median(values):.2f}", f"{p90(values):.2f}"]
            else:
                cells.append(f"{statistics.median(values):.2f} ({p90(values):.2f})")
        cells.append(f"{seconds / statistics.median(r['wall'] for r in runs):.0f}x")
        out.append("| " + " | ".join(cells) + " |")
    names = list(results)
    sc = [n for n in names if n.startswith("scsynth")]
    if sc:
        ref = statistics.median(r["wall"] for r in results[sc[0]])
        out.append("")
        for name in names:
            if name not in sc:
                mine = statistics.median(r["wall"] for r in results[name])
                out.append(f"{name}: {mine / ref:.2f} of scsynth's NRT wall time "
                           f"(target: at most 0.5)")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7, help="timed runs of each variant (default 7)")
    p.add_argument("--seconds", type=float, default=SECONDS, help="seconds rendered (default 300)")
    p.add_argument("--src", action="append", default=[], metavar="DIR",
                   help="time the render of DIR/src (a git worktree of a commit; '.' for this checkout) "
                        "instead of this checkout's; repeatable")
    p.add_argument("--no-scsynth", action="store_true", help="do not time scsynth")
    p.add_argument("--dir", help="keep the stems, score and renders here (default: a temporary folder)")
    p.add_argument("--json", metavar="FILE", help="also write every run as JSON")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="sd-render-speed-") as tmp:
        folder = args.dir or tmp
        os.makedirs(folder, exist_ok=True)
        score = write_reference_score(folder)
        variants = {}
        for src in args.src or [None]:
            name = f"stemdeck ({src or 'this checkout'})"
            variants[name] = (lambda s: lambda out: run_stemdeck(score, out, args.seconds, s))(src)
        why = "--no-scsynth" if args.no_scsynth else scsynth_missing()
        if why is None:
            variants["scsynth -N"] = lambda out: run_scsynth(args.seconds, out, folder)
        else:
            print(f"scsynth not timed: {why}", file=sys.stderr)
        outs = {name: os.path.join(folder, f"out{i}.wav") for i, name in enumerate(variants)}
        results: dict = {name: [] for name in variants}
        for name, fn in variants.items():           # fills the kernel caches: not timed
            print(f"warm-up: {name}", file=sys.stderr)
            fn(outs[name])
        for k in range(args.runs):
            for name, fn in variants.items():
                r = fn(outs[name])
                results[name].append(r)
                print(f"run {k + 1}/{args.runs} {name}: {r['wall']:.2f} s", file=sys.stderr)
        shas = {name: {r["sha256"] for r in runs} for name, runs in results.items() if runs and "sha256" in runs[0]}
        first = next(iter(shas.values()))
        for name, s in shas.items():
            if s != first or len(s) != 1:
                print(f"FAIL: {name} wrote {sorted(s)}, not the first variant's {sorted(first)}", file=sys.stderr)
                return 1
        print(report(results, args.seconds))
        print(f"\nevery stemdeck render wrote the same file: sha256 {next(iter(first))}")
        if args.json:
            Path(args.json).write_text(json.dumps({"seconds": args.seconds, "runs": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
