"""Soak: ``stemdeck serve`` left running for N minutes under a mix script's load, on a JACK dummy server.

    .venv/bin/python benchmarks/soak.py --minutes 60 [--json soak.json] [--plot soak.png]
                                        [--interval 60] [--baseline-seconds S] [--block 256]

Starts its own ``jackd -d dummy -r 44100 -p BLOCK`` (tests/jackserver.py) with a
``jack_metro`` witness client (plain C, named "witness"), and first measures the
witness alone for ``--baseline-seconds`` (default a tenth of the run, 30 s to 2 min):
the late cycles this machine has by itself. Then it starts ``stemdeck serve`` as a
subprocess at ``--buffer-size BLOCK`` and, as one OSC client (benchmarks/soak_client.py):

- plays the reference workload (tools/workload.py: 16 stems looping at rate 1.05, EQ on
  every deck, limiter on), loaded from 32-bit float WAVs the benchmark writes;
- every ``--cycle`` seconds cues a file on the next deck and starts it (``/cue``,
  ``/start_group``), loads another into a buffer and plays it (``/load_buffer``,
  ``/play_stem``), then stops and frees both; files alternate 16-bit WAV (memory-mapped)
  and FLAC (decoded; ``--cache-mb`` is small so the rotation evicts and decodes again);
- sends the reference knob stream at 500 messages/s (live_jack's sender);
- holds a ``/notify`` subscription and counts its events.

Every ``--interval`` seconds, at a quiet point of the churn (both churn stems freed), it
records the server process's RSS (and its anonymous part), open descriptors, threads and
memory mappings (psutil, /proc), jackd's XRun lines split by blame (stemdeck, witness,
driver; ``JackServer.xruns_by_client``), and from ``/status.json`` the server's underruns,
late commands and voices. At the end it sends SIGINT and expects exit status 0.

Prints the table and PASS/FAIL for: no crash; RSS and descriptors flat (the last ten
minutes within 5 % of minute ten; a run under 20 minutes compares its last half with its
middle); late JACK cycles per minute not above the witness-alone window's (beyond chance:
benchmarks/soak_report.py). Exit status 1 when a criterion fails. docs/soak.md has more.
A benchmark: its figures depend on the machine and what else runs on it.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))          # tests/jackserver.py, tests/serveproc.py
sys.path.insert(0, str(HERE))

import psutil  # noqa: E402

import soak_client as client  # noqa: E402
import soak_report as report  # noqa: E402

SR = 44100
WITNESS = "witness"


def default_baseline_seconds(minutes: float) -> float:
    """A tenth of the run, at least 30 s and at most 2 minutes."""
    return min(120.0, max(30.0, minutes * 6.0))


def late_cycles(jack) -> int:
    """Late JACK cycles so far, whoever jackd blamed. One stall can make jackd log several
    XRun lines for one cycle (the witness "Triggered", stemdeck "Running", the dummy
    driver's timer), one after another; so a run of adjacent XRun lines with no blame
    repeated counts as one cycle. The witness alone can only ever have one line per
    cycle: without this, the soak would be charged twice for the stalls both see."""
    cycles, seen = 0, set()
    for line in jack.log().splitlines():
        if "XRun" not in line:
            seen = set()
            continue
        who = line.split("client = ", 1)[1].split(" ", 1)[0] if "client = " in line else "driver"
        if not seen or who in seen:
            cycles += 1
            seen = set()
        seen.add(who)
    return cycles


class ServeProcess:
    """``stemdeck serve`` started by tests/serveproc.py, its output read to the end by a
    thread (a pipe nobody reads would block its logging)."""

    def __init__(self, args: list[str], env):
        from serveproc import start_serve

        self.proc, text = start_serve(args, env=env)
        self.lines = text.splitlines()
        self._reader = threading.Thread(target=self._read, name="soak-serve-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def interrupt(self, timeout: float = 30.0) -> tuple[int | None, float]:
        """SIGINT, as Ctrl-C; (exit status or None if it hung, seconds it took)."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout)
        except Exception:                               # noqa: BLE001 - a hang is a failure, reported
            self.proc.kill()
            self.proc.wait(10)
            rc = None
        self._reader.join(5)
        return rc, time.monotonic() - t0


def fd_kinds(pid: int) -> dict:
    """The process's open descriptors by kind (socket, pipe, anon_inode, a file's extension):
    which kind grows, when descriptors do."""
    kinds: collections.Counter = collections.Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kind = target.split(":", 1)[0] if ":" in target and not target.startswith("/") else \
            (os.path.splitext(target)[1] or target.rsplit("/", 1)[0])
        kinds[kind] += 1
    return dict(kinds)


class Sampler:
    """One row of the table: the server process as it is now, and what changed since the
    previous row."""

    def __init__(self, pid: int, jack, replies: client.Replies, churn: client.Churn, knobs, t0: float):
        self.process = psutil.Process(pid)
        self.pid, self.jack, self.replies, self.churn, self.knobs, self.t0 = pid, jack, replies, churn, knobs, t0
        self.last = {"xruns": jack.xruns_by_client(witness=WITNESS), "cycles": late_cycles(jack),
                     "underruns": None, "late": None, "events": 0}
        self.samples: list[dict] = []

    def _proc_status(self) -> dict:
        out = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("RssAnon", "RssFile"):
                    out[key] = int(value.split()[0]) / 1024.0          # kB -> MB
        return out

    def settled_status(self, quiet: bool, timeout: float = 3.0) -> dict | None:
        """``/status.json``; between churn cycles, the first that shows only the reference
        stems playing (a freed stem lets go of its file once its fade has played)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.replies.ask_status()
            if (not quiet or status is None or time.monotonic() > deadline
                    or status.get("voices_playing") == len(client.REFERENCE_IDS)):
                return status
            time.sleep(0.05)

    def take(self, quiet: bool) -> dict:
        status = self.settled_status(quiet)
        s: dict = {"t_s": round(time.monotonic() - self.t0, 1), "quiet": quiet}
        try:
            s["rss_mb"] = self.process.memory_info().rss / 2**20
            st = self._proc_status()
            s["rss_anon_mb"], s["rss_file_mb"] = st.get("RssAnon"), st.get("RssFile")
            s["fds"] = self.process.num_fds()
            s["threads"] = self.process.num_threads()
            with open(f"/proc/{self.pid}/maps") as f:
                s["maps"] = sum(1 for _ in f)
            s["fd_kinds"] = fd_kinds(self.pid)
        except (psutil.Error, OSError):
            pass                                        # the process is gone: the crash check says so
        xr = self.jack.xruns_by_client(witness=WITNESS)
        for i, key in enumerate(("xruns_ours", "xruns_witness", "xruns_driver")):
            s[key] = xr[i] - self.last["xruns"][i]
        cycles = late_cycles(self.jack)
        s["late_cycles"], self.last["cycles"] = cycles - self.last["cycles"], cycles
        self.last["xruns"] = xr
        s["status_ok"] = status is not None
        if status is not None:
            for key, name in (("underruns", "underruns"), ("late_commands", "late")):
                now = int(status.get(key, 0))
                s[key] = now - (self.last[name] if self.last[name] is not None else now)
                self.last[name] = now
            s["voices"] = int(status.get("voices_playing", 0))
            cache = status.get("cache", {})
            s["cache"] = {k: cache.get(k) for k in ("samples", "mapped_files", "used_mb", "evictions")}
        events = sum(self.replies.event_counts().values())
        s["events"], self.last["events"] = events - self.last["events"], events
        s["cycles"] = self.churn.cycles
        s["knob_messages"] = self.knobs.sent
        self.samples.append(s)
        return s


def run_soak(minutes: float, *, interval_s: float = 60.0, baseline_s: float | None = None, block: int = 256,
             cache_mb: int = 24, cycle_s: float = 3.0, say=print) -> dict:
    """The whole benchmark; returns its figures and verdicts (what --json writes)."""
    from jackserver import JackServer

    baseline_s = default_baseline_seconds(minutes) if baseline_s is None else baseline_s
    soak_s = minutes * 60.0
    result: dict = {"minutes": minutes, "block": block, "interval_s": interval_s, "cycle_s": cycle_s,
                    "cache_mb": cache_mb, "sample_rate": SR}
    with tempfile.TemporaryDirectory(prefix="stemdeck-soak-") as folder, \
            JackServer(rate=SR, period=block) as jack:
        t = time.monotonic()
        ref_files = client.write_reference_files(folder)
        churn_files = client.write_churn_files(folder)
        say(f"JACK dummy server {jack.name}: {SR} Hz, period {block}; wrote 16 reference WAVs and "
            f"{len(churn_files)} churn files in {time.monotonic() - t:.1f} s", flush=True)
        jack.spawn_client("jack_metro", "-n", WITNESS, "-b", "120", wait_for_port=f"{WITNESS}:")

        say(f"baseline: the witness alone for {baseline_s:.0f} s ...", flush=True)
        x0 = late_cycles(jack)
        time.sleep(baseline_s)
        base_end = late_cycles(jack)
        base_cycles = base_end - x0
        say(f"baseline: {base_cycles} late cycles in {baseline_s:.0f} s "
            f"({60 * base_cycles / baseline_s:.2f}/min)", flush=True)

        port = _free_port()
        serve = ServeProcess(["--buffer-size", str(block), "--port", str(port), "--cache-mb", str(cache_mb)],
                             jack.env)
        replies = client.Replies(("127.0.0.1", port))
        try:
            result.update(_soak(serve, replies, jack, ref_files, churn_files, soak_s, interval_s, cycle_s, say))
        finally:
            replies.close()
            rc, took = serve.interrupt()
        result["exit_status"], result["exit_seconds"] = rc, took
        result["serve_output_tail"] = serve.lines[-40:]
        result["baseline"] = {"seconds": baseline_s, "late_cycles": base_cycles}
        result["startup_late_cycles"] = result.pop("_startup_cycles_at", late_cycles(jack)) - base_end
        result["jackd_xrun_lines"] = dict(collections.Counter(
            line.strip() for line in jack.log().splitlines() if "XRun" in line))
    result["verdicts"] = verdicts(result)
    return result


def _free_port() -> int:
    from serveproc import free_port

    return free_port()


def _soak(serve, replies, jack, ref_files, churn_files, soak_s, interval_s, cycle_s, say) -> dict:
    """From the server's 'ready' to the end of the soak (the server still running)."""
    out: dict = {"crashed": None}
    replies.send("/notify", 1)
    out["notify_answer"] = replies.wait_answer("/notify")
    client.start_reference_workload(replies, ref_files)
    time.sleep(2.0)                                       # settle: first ramps, the read-ahead's first pass
    out["_startup_cycles_at"] = late_cycles(jack)
    knobs, knob_thread = client.knob_stream(replies)
    churn = client.Churn(replies, churn_files, cycle_s)
    t0 = time.monotonic()
    sampler = Sampler(serve.proc.pid, jack, replies, churn, knobs, t0)
    churn.start()
    knob_thread.start()
    say(f"soak: {soak_s / 60:g} min, a row every {interval_s:g} s", flush=True)
    header = report.table([]).splitlines()[0]
    say(header, flush=True)
    k = 1
    try:
        while True:
            due = t0 + k * interval_s
            while time.monotonic() < min(due, t0 + soak_s) and serve.proc.poll() is None and churn.error is None:
                time.sleep(0.2)
            if serve.proc.poll() is not None:
                out["crashed"] = f"serve exited with status {serve.proc.returncode} after " \
                                 f"{time.monotonic() - t0:.0f} s"
                break
            if churn.error is not None:
                out["crashed"] = f"the client failed: {churn.error!r}"
                break
            quiet = churn.busy.acquire(timeout=2 * cycle_s + 3 * client.ANSWER_SECONDS)
            try:
                row = sampler.take(quiet)
            finally:
                if quiet:
                    churn.busy.release()
            say(report.table([row]).splitlines()[1], flush=True)
            if time.monotonic() >= t0 + soak_s - 0.5:
                break
            k += 1
    finally:
        knobs.stop.set()
        knob_thread.join(5)
        churn.join()
    out["soak_s"] = time.monotonic() - t0
    out["samples"] = sampler.samples
    out["churn"] = churn.figures()
    out["knob_messages"] = knobs.sent
    out["knob_rate"] = knobs.sent / max(knobs.send_seconds, 1e-9)
    out["events"] = replies.event_counts()
    out["fails"] = [list(map(str, f)) for f in replies.fails[:50]]
    out["unparsed_replies"] = replies.unparsed
    out["final_status"] = replies.ask_status()
    return out


def verdicts(r: dict) -> dict:
    """The pass criteria (soak_report.py) applied to one run's figures."""
    crash = r.get("crashed")
    rc = r.get("exit_status")
    if crash:
        no_crash = {"ok": False, "why": crash}
    elif rc != 0:
        no_crash = {"ok": False, "why": f"SIGINT at the end: exit status {rc} (expected 0)"}
    elif r.get("final_status") is None:
        no_crash = {"ok": False, "why": "the server did not answer /status.json at the end"}
    else:
        no_crash = {"ok": True, "why": f"ran {r['soak_s'] / 60:.1f} min, answered /status.json at the end, "
                                       f"exit status 0 on SIGINT ({r['exit_seconds']:.1f} s)"}
    samples = r.get("samples", [])
    total = r.get("soak_s", 0.0)
    late_soak = sum(s["late_cycles"] for s in samples)
    sampled_s = samples[-1]["t_s"] if samples else total
    return {
        "no_crash": no_crash,
        "rss_flat": report.flat(samples, "rss_mb", sampled_s),
        "fds_flat": report.flat(samples, "fds", sampled_s),
        "late_cycles": report.late_cycle_verdict(r["baseline"]["late_cycles"], r["baseline"]["seconds"],
                                                 late_soak, max(sampled_s, 1.0)),
    }


def summary(r: dict) -> list[str]:
    """The lines printed after the table."""
    samples = r.get("samples", [])
    lines = [f"serve exit status {r['exit_status']} after SIGINT ({r['exit_seconds']:.1f} s); "
             f"late cycles while serve started: {r['startup_late_cycles']}"]
    ch = r.get("churn", {})
    lines.append(f"churn: {ch.get('cycles')} cycles every {r['cycle_s']:g} s; asked {ch.get('asked')}, "
                 f"done {ch.get('done')}, failed {ch.get('failed')}, unanswered {ch.get('unanswered')}")
    lines.append(f"knobs: {r.get('knob_messages')} messages ({r.get('knob_rate', 0):.0f}/s); "
                 f"notify events {r.get('events')}; replies python-osc could not parse: {r.get('unparsed_replies')}")
    per_interval = {key: report.percentiles(s[key] for s in samples)
                    for key in ("xruns_ours", "xruns_witness", "late_cycles", "underruns", "late_commands")}
    lines.append(f"per {r['interval_s']:g} s interval (median / p90 / max): " + "; ".join(
        f"{key} {p['median']:g} / {p['p90']:g} / {p['max']:g}" for key, p in per_interval.items() if p))
    if r.get("fails"):
        lines.append(f"/fail replies (first {len(r['fails'])}): {r['fails'][:5]}")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=60.0, help="soak length (default 60)")
    p.add_argument("--interval", type=float, default=60.0, help="seconds between rows (default 60)")
    p.add_argument("--baseline-seconds", type=float, default=None,
                   help="witness-alone window before the soak (default a tenth of the run, 30-120 s)")
    p.add_argument("--block", type=int, default=256, help="JACK period and serve's --buffer-size (default 256)")
    p.add_argument("--cache-mb", type=int, default=24,
                   help="serve's --cache-mb (default 24: the FLAC rotation is evicted and decoded again)")
    p.add_argument("--cycle", type=float, default=3.0, help="seconds per cue/load/free cycle (default 3)")
    p.add_argument("--json", metavar="PATH", help="write the figures and verdicts as JSON")
    p.add_argument("--plot", metavar="PATH", help="draw a PNG (needs matplotlib: the plot extra)")
    args = p.parse_args()

    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("note: matplotlib is not installed, so --plot will draw nothing "
                  "(.venv/bin/pip install -e '.[plot]'); the soak runs anyway", flush=True)
    r = run_soak(args.minutes, interval_s=args.interval, baseline_s=args.baseline_seconds, block=args.block,
                 cache_mb=args.cache_mb, cycle_s=args.cycle)
    print()
    for line in summary(r) + report.verdict_lines(r["verdicts"]):
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2, default=str))
        print(f"figures written to {args.json}")
    if args.plot:
        why = report.plot(r, args.plot)
        print(why or f"plot written to {args.plot}")
    return 0 if all(v["ok"] for v in r["verdicts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
