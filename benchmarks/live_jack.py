"""Live output on a JACK dummy server: underruns and callback time, quiet and under stress.

    .venv/bin/python benchmarks/live_jack.py [--seconds 60] [--block 128] [--period 128]
                                             [--phase both|quiet|stress] [--json FILE]

Starts its own ``jackd -d dummy -r 44100 -p PERIOD`` (tests/jackserver.py)
and, in this process, a ``stemdeck serve`` server (:class:`Server`, PortAudio's
JACK host API, ``--buffer-size BLOCK``) playing the reference workload
(src/stemdeck/tools/workload.py: 16 stems, 4 per deck, 30 s stereo sources looping at rate
1.05, EQ on every deck at non-unity gains, crossfader at centre, limiter
on; :func:`stemdeck.tools.workload.build_reference_workload`). Then, for
``--seconds`` each:

- quiet: nothing else runs;
- stress: in the same process, a thread decodes a 140 MB WAV every 5 s
  (``media.decode.load_audio``; the next load starts at once when one takes
  longer), 500 OSC messages per second arrive over UDP at the server's OSC
  port (``/deck_eq``, ``/deck_levels``, ``/crossfade_levels``, sent with
  python-osc from this process, parsed and applied by the live server), and
  a thread churns the garbage collector (reference cycles, ``gc.collect()``
  in a loop).

A second JACK client, ``jack_metro`` (plain C, named "witness"), runs
beside stemdeck: jackd names the client it waited for in each XRun line, so
the witness's count shows what the machine does to any JACK client (a VM's
stolen time, a kernel that cannot preempt), separate from stemdeck.

Reports underruns (PortAudio's underflow flags, callbacks past their
period, and jackd's own XRun lines, split into those it blames on
stemdeck, on the witness, and on its dummy driver's timer) and the callback time: median,
p90, p99, p99.9 and max, in microseconds and as a share of the period.
A benchmark, not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))          # tests/jackserver.py

SR = 44100
BIG_WAV_BYTES = 140_000_000
from stemdeck.tools.workload import MESSAGES_PER_SECOND, knob_message  # noqa: E402


# -- load generators ----------------------------------------------------------------------------

def make_big_wav(folder: str) -> str:
    """A 140 MB 16-bit stereo WAV (about 13 minutes at 44.1 kHz): cue_latency's file."""
    from cue_latency import make_wav

    return make_wav(os.path.join(folder, "big.wav"), BIG_WAV_BYTES)


class Stress:
    """The stress phase's threads. ``send(address, args)`` delivers one message."""

    def __init__(self, big_wav: str, send):
        self.big_wav = big_wav
        self.send = send
        self.stop = threading.Event()
        self.loads: list[float] = []
        self.sent = 0
        self.send_seconds = 0.0
        self.gc_collections = 0
        self.threads = [threading.Thread(target=f, name=f.__name__, daemon=True)
                        for f in (self.loader, self.messages, self.gc_churn)]

    def start(self):
        for t in self.threads:
            t.start()

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join()

    def loader(self):
        from stemdeck.media.decode import load_audio

        while not self.stop.is_set():
            t0 = time.monotonic()
            load_audio(self.big_wav, SR)          # decoded, then dropped
            self.loads.append(time.monotonic() - t0)
            self.stop.wait(max(0.0, 5.0 - (time.monotonic() - t0)))

    def messages(self):
        """500 messages per second at absolute deadlines (every 10 ms, as many as are due)."""
        rng = np.random.default_rng(2)
        t0 = time.monotonic()
        k = 0
        while not self.stop.is_set():
            due = round((time.monotonic() - t0) * MESSAGES_PER_SECOND)
            while self.sent < due:
                self.send(*knob_message(self.sent, rng))
                self.sent += 1
            k += 1
            delay = t0 + k * 0.01 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        self.send_seconds = time.monotonic() - t0

    def gc_churn(self):
        while not self.stop.is_set():
            junk = []
            for i in range(5000):
                a, b = {"i": i}, [i]
                a["b"] = b
                b.append(a)                      # reference cycles: only the collector frees them
                junk.append(a)
            del junk
            gc.collect()
            self.gc_collections += 1


# -- measuring ---------------------------------------------------------------------------------

class Durations:
    """Every callback duration from now on (the engine's ring holds only the last 8192)."""

    def __init__(self, engine):
        from stemdeck.engine import layout as L

        self.engine, self.L = engine, L
        self.index = int(engine.state.counters[L.CT_DUR_INDEX])
        self.chunks: list[np.ndarray] = []

    def collect(self):
        ring = self.engine.state.durations
        idx = int(self.engine.state.counters[self.L.CT_DUR_INDEX])
        n = idx - self.index
        if n > len(ring):
            raise RuntimeError("durations were not collected often enough")
        self.chunks.append(ring[np.arange(self.index, idx) & (len(ring) - 1)].astype(np.float64))
        self.index = idx

    def all(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0)


def jack_xruns(server) -> tuple[int, int, int]:
    """jackd's XRun lines: (ours, the witness's, the driver's own)."""
    return server.xruns_by_client()


def run_phase(name: str, jack, args, big_wav: str | None) -> dict:
    from stemdeck import app, config
    from stemdeck.live import Server
    from stemdeck.tools.workload import build_reference_workload

    settings = config.resolve({"buffer_size": str(args.block), "backend": "portaudio", "port": "0"},
                              app.SERVE_SETTINGS, environ={})
    # with the OSC server (on a free port) only for the stress phase
    server = Server(settings, out=lambda line: None, rescan=True,
                    osc_options={} if big_wav is not None else None)
    runner = threading.Thread(target=server.run, kwargs={"handle_signals": False}, daemon=True)
    runner.start()
    if not server.wait_ready(300):
        raise RuntimeError(f"the server did not start: {server.error!r}")
    osc = server.osc
    try:
        built = threading.Event()
        ids: list[int] = []
        server.call_soon(lambda: (ids.extend(build_reference_workload(server.engine)), built.set()))
        built.wait(120)
        send = None
        if big_wav is not None:
            from pythonosc.udp_client import SimpleUDPClient

            client = SimpleUDPClient(*server.osc.address)
            send = client.send_message
        time.sleep(2.0)                               # settle: loads, first ramps
        engine = server.engine
        durations = Durations(engine)
        st0 = engine.stats()
        x0 = jack_xruns(jack)
        cpu0 = (time.monotonic(), time.process_time())
        stress = Stress(big_wav, send) if big_wav is not None else None
        if stress:
            stress.start()
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            time.sleep(0.25)
            durations.collect()
        if stress:
            stress.join()
        durations.collect()
        st1 = engine.stats()
        x1 = jack_xruns(jack)
        cpu = 100 * (time.process_time() - cpu0[1]) / (time.monotonic() - cpu0[0])
        osc_counts = None
        if osc is not None:
            c = getattr(osc, "c", None)
            osc_counts = {"messages": c.messages, "accepted": c.accepted, "failed": c.failed,
                          "busy_dropped": c.busy_dropped} if c is not None else None
    finally:
        server.request_stop()
        runner.join(30)
        if osc is not None and hasattr(osc, "stop"):
            osc.stop()

    d = durations.all()
    period_us = args.block / SR * 1e6
    q = np.percentile(d, [50, 90, 99, 99.9]) / 1000.0 if len(d) else [0, 0, 0, 0]
    result = {
        "phase": name,
        "seconds": args.seconds,
        "block": args.block,
        "period_us": period_us,
        "callbacks": int(st1["callbacks"] - st0["callbacks"]),
        "underflow_flags": int(st1["underflows"] - st0["underflows"]),
        "late_callbacks": int(st1["overruns"] - st0["overruns"]),
        "jack_xruns_client": x1[0] - x0[0],
        "jack_xruns_witness": x1[1] - x0[1],
        "jack_xruns_driver": x1[2] - x0[2],
        "voices": int(st1["voices"]),
        "late_commands": int(st1["late_commands"] - st0["late_commands"]),
        "dropped_commands": int(st1["dropped_commands"] - st0["dropped_commands"]),
        "major_faults_in_callbacks": int(st1.get("major_faults_in_callbacks", 0)
                                         - st0.get("major_faults_in_callbacks", 0)),
        "p50_us": float(q[0]), "p90_us": float(q[1]), "p99_us": float(q[2]), "p999_us": float(q[3]),
        "max_us": float(d.max() / 1000.0) if len(d) else 0.0,
        "process_cpu_percent": cpu,
    }
    if stress:
        result.update(messages_sent=stress.sent, message_rate=stress.sent / max(stress.send_seconds, 1e-9),
                      big_wav_loads=len(stress.loads),
                      big_wav_load_median_s=float(np.median(stress.loads)) if stress.loads else None,
                      gc_collections=stress.gc_collections, osc=osc_counts)
    return result


def report(r: dict) -> None:
    pct = lambda us: 100.0 * us / r["period_us"]          # noqa: E731
    print(f"\n== {r['phase']}: {r['seconds']:g} s at {r['block']} frames "
          f"(period {r['period_us']:.0f} us), {r['voices']} voices, {r['callbacks']} callbacks")
    print(f"   underruns: {r['underflow_flags']} underflow flags, {r['late_callbacks']} callbacks past their period; "
          f"jackd XRuns: {r['jack_xruns_client']} blamed on stemdeck, {r['jack_xruns_witness']} on the witness "
          f"(jack_metro), {r['jack_xruns_driver']} of the dummy driver's timer")
    print("   callback time:  " + ",  ".join(
        f"{label} {r[key]:.0f} us ({pct(r[key]):.1f} %)"
        for label, key in (("median", "p50_us"), ("p90", "p90_us"), ("p99", "p99_us"), ("p99.9", "p999_us"),
                           ("max", "max_us"))))
    print(f"   process CPU {r['process_cpu_percent']:.0f} % of one core; late commands {r['late_commands']}, "
          f"dropped {r['dropped_commands']}; major page faults inside callbacks {r['major_faults_in_callbacks']}")
    if "messages_sent" in r:
        print(f"   stress: {r['messages_sent']} OSC messages sent ({r['message_rate']:.0f}/s; "
              f"server: {r['osc']}), {r['big_wav_loads']} loads of the 140 MB WAV "
              f"(median {r['big_wav_load_median_s']:.2f} s each), {r['gc_collections']} full GC runs")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="measured seconds per phase (default 60)")
    p.add_argument("--block", type=int, default=128, help="stemdeck's buffer size (default 128)")
    p.add_argument("--period", type=int, default=128, help="the JACK server's period (default 128)")
    p.add_argument("--phase", choices=("both", "quiet", "stress"), default="both")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--no-witness", action="store_true",
                   help="do not run jack_metro beside stemdeck as a witness of the machine's own xruns")
    args = p.parse_args()

    from jackserver import JackServer

    results = []
    with tempfile.TemporaryDirectory(prefix="stemdeck-bench-") as folder, \
            JackServer(rate=SR, period=args.period) as jack:
        os.environ["JACK_DEFAULT_SERVER"] = jack.name
        os.environ["JACK_NO_START_SERVER"] = "1"
        print(f"JACK dummy server {jack.name}: {SR} Hz, period {args.period}; "
              f"stemdeck buffer {args.block} frames", flush=True)
        if not args.no_witness:
            # a second, trivial C client: what the machine does to any JACK client
            jack.spawn_client("jack_metro", "-n", "witness", "-b", "120", wait_for_port="witness:")
        big = None
        if args.phase in ("both", "stress"):
            t0 = time.monotonic()
            big = make_big_wav(folder)
            print(f"made {os.path.getsize(big) / 1e6:.0f} MB WAV in {time.monotonic() - t0:.1f} s", flush=True)
        if args.phase in ("both", "quiet"):
            results.append(run_phase("reference workload", jack, args, None))
            report(results[-1])
        if args.phase in ("both", "stress"):
            results.append(run_phase("reference workload + 140 MB WAV loads every 5 s + 500 OSC msg/s "
                                     "+ GC churn", jack, args, big))
            report(results[-1])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
