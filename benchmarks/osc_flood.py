"""OSC under load: a 10,000 messages/s flood, /status round trips, group starts.

    .venv/bin/python benchmarks/osc_flood.py [--seconds 10] [--rate 10000] [--block 128]
                                             [--backend jack|null] [--trials 20]

Three processes, as in use: the **server** (an Engine playing the reference
workload through PortAudio on a JACK dummy server at ``--block`` frames, or
through the null backend's real-time clock with ``--backend null`` or when
jackd is missing; an OscServer on 127.0.0.1), a **flood sender** (a separate
process: its Python does not share the server's GIL), and this process,
which measures ``/status`` round trips and runs the group starts.

Phases and what is reported:

1. quiet: ``/status`` round trip (median, p99, max) while the reference
   workload plays (sixteen stems, EQ, crossfader, limiter);
2. flood: ``--rate`` messages/s for ``--seconds`` (``/deck_eq`` and
   ``/deck_filter``, one engine command each, values near the workload's),
   while ``/status`` round trips are measured every 20 ms. Reported:
   underruns (PortAudio underflow flags, late callbacks, and jackd's XRun
   lines split into those blamed on stemdeck and on a witness client,
   ``jack_metro``, which shows what the machine does to any JACK client),
   server RSS before / max during / after, and the message accounting:
   sent = received by the server + dropped by the kernel's receive buffer;
   received = accepted + refused (busy); accepted = engine commands applied.
   ``--rate 0`` runs the same phases without a flood (a baseline);
3. group start: ``--trials`` times, decks A (a DC on the left channel only)
   and B (right channel only) are cued and started with ``/start_group``;
   the recorded output gives each deck's first frame; the difference is
   reported (it must be 0).

The server process writes its own measurements as one JSON line when it
gets ``/quit``. Exit status 1 if an underrun occurred, a message went
unaccounted or a group start was off by a frame.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SR = 44100


# =================================================================================================
# the server process
# =================================================================================================

def serve(args) -> None:
    import numpy as np
    import psutil

    from stemdeck import app
    from stemdeck.engine import Engine
    from stemdeck.tools.workload import build_reference_workload

    engine = Engine(SR, max_block=max(args.block, 1024))
    engine.callback_address                     # compile before audio starts
    if args.backend == "jack":
        from stemdeck.audio.portaudio import PortAudioOutput

        output = PortAudioOutput(engine, block_size=args.block, sample_rate=SR, latency="high")
    else:
        from stemdeck.audio.null import NullOutput

        output = NullOutput(engine, block_size=args.block, sample_rate=SR)
    output.open()
    build_reference_workload(engine)
    engine.set_recording(True)

    # the recording: a ring of the last 60 s, frame i at i % size (recording starts at frame 0)
    size = 1 << 22
    ring = np.zeros((size, 2), np.float32)
    recorded = [0]
    stop = threading.Event()

    def drain():
        tmp = np.zeros((16384, 2), np.float32)
        while not stop.is_set():
            n = engine.drain_recording(tmp)
            if n:
                start = recorded[0] % size
                first = min(n, size - start)
                ring[start:start + first] = tmp[:first]
                ring[:n - first] = tmp[first:n]
                recorded[0] += n
            else:
                time.sleep(0.01)

    proc = psutil.Process()
    samples = []          # (monotonic, rss, engine counters, server counters)

    def sample():
        while not stop.is_set():
            st = engine.stats()
            samples.append((time.monotonic(), proc.memory_info().rss,
                            {k: st[k] for k in ("frame", "commands", "underflows", "overruns",
                                                "dropped_commands", "late_commands")},
                            server.counters()))
            stop.wait(0.25)

    quit_event = threading.Event()
    parts = app.assemble(engine, app.live_loader(engine), lookahead=args.block,
                         osc={"host": "127.0.0.1", "port": 0, "on_quit": quit_event.set,
                              "output_latency": output.reported_latency or 0.0})
    server = parts.osc
    output.start()
    server.start(parts.controller)
    threads = [threading.Thread(target=drain, daemon=True), threading.Thread(target=sample, daemon=True)]
    for t in threads:
        t.start()
    print(json.dumps({"port": server.address[1], "latency": output.reported_latency}), flush=True)
    quit_event.wait()
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(2)
    server.stop()
    output.close()
    # group starts: the first loud frame of the left (deck A) and right (deck B)
    # channels after at least 0.2 s of silence
    n = recorded[0]
    lo = max(0, n - size + 1)
    x = ring[np.arange(lo, n) % size]
    gap = int(0.2 * SR)
    onsets = {}
    for ch in (0, 1):
        idx = np.flatnonzero(np.abs(x[:, ch]) > 1e-4)
        edges = list(idx[1:][np.diff(idx) > gap]) if len(idx) else []
        if len(idx) and idx[0] >= gap:
            edges.insert(0, idx[0])
        onsets[ch] = [int(lo + e) for e in edges]
    report = {"backend": args.backend, "block": args.block, "samples": samples,
              "onsets_left": onsets[0], "onsets_right": onsets[1],
              "final": {"engine": engine.stats(), "server": server.counters()}}
    print(json.dumps(report), flush=True)
    controller.close()


# =================================================================================================
# the flood sender process
# =================================================================================================

def flood(args) -> None:
    sys.path.insert(0, os.path.join(ROOT, "src"))
    from stemdeck.control.osc_wire import encode_message

    rng = random.Random(1)
    msgs = []
    for i in range(4096):
        deck = "ABCD"[i % 4]
        band = ("low", "mid", "high")[(i // 4) % 3]
        if i % 2:
            msgs.append(encode_message("/deck_eq", [deck, band, rng.uniform(40.0, 60.0)]))
        else:
            msgs.append(encode_message("/deck_filter", [deck, band, rng.uniform(0.6, 1.2)]))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.bind(("127.0.0.1", 0))
    dest = ("127.0.0.1", args.port)
    if args.rate <= 0:                          # a baseline: the same phases, no flood
        t_start = time.monotonic()
        time.sleep(args.seconds)
        print(json.dumps({"sent": 0, "t_start": t_start, "t_end": time.monotonic(), "replies": 0}),
              flush=True)
        return
    burst = max(1, args.rate // 200)           # 200 bursts a second
    period = burst / args.rate
    total = int(args.rate * args.seconds)
    sent = 0
    t_start = time.monotonic()
    k = 0
    while sent < total:
        for _ in range(min(burst, total - sent)):
            sock.sendto(msgs[sent & 4095], dest)
            sent += 1
        k += 1
        delay = t_start + k * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    t_end = time.monotonic()
    time.sleep(0.5)
    fails = 0
    sock.setblocking(False)
    try:
        while True:
            sock.recv(65536)
            fails += 1
    except BlockingIOError:
        pass
    print(json.dumps({"sent": sent, "t_start": t_start, "t_end": t_end, "replies": fails}), flush=True)


# =================================================================================================
# this process: the conductor
# =================================================================================================

class StatusProbe:
    def __init__(self, port):
        from pythonosc.osc_message import OscMessage

        self.parse = OscMessage
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(1.0)
        self.dest = ("127.0.0.1", port)

    def send(self, address, *args):
        sys.path.insert(0, os.path.join(ROOT, "src"))
        from stemdeck.control.osc_wire import encode_message

        self.sock.sendto(encode_message(address, list(args)), self.dest)

    def expect(self, address, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.parse(self.sock.recv(65536))
            except socket.timeout:
                continue
            if msg.address == address:
                return list(msg.params)
        raise RuntimeError(f"no {address} within {timeout} s")

    def rtt(self) -> float | None:
        t = time.perf_counter()
        self.send("/status")
        try:
            while True:
                msg = self.parse(self.sock.recv(65536))
                if msg.address == "/status.reply":
                    return (time.perf_counter() - t) * 1000
        except socket.timeout:
            return None


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def conduct(args) -> int:
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    backend = args.backend
    jack = None
    env = dict(os.environ)
    if backend == "jack":
        from jackserver import JackServer, missing_tools

        if missing_tools():
            print(f"jackd missing ({missing_tools()}): using the null backend", flush=True)
            backend = "null"
        else:
            jack = JackServer(rate=SR, period=args.block).start()
            env = jack.env
            # a second, trivial C client: jackd blames each XRun on a client, so the
            # witness's count is what the machine does to any JACK client
            jack.spawn_client("jack_metro", "-n", "witness", "-b", "120", wait_for_port="witness:")
    media = tempfile.mkdtemp(prefix="osc_flood_")
    import numpy as np
    import soundfile as sf

    left = np.zeros((SR, 2), np.float32)
    left[:, 0] = 0.25
    sf.write(os.path.join(media, "left.wav"), left, SR, subtype="FLOAT")
    sf.write(os.path.join(media, "right.wav"), left[:, ::-1], SR, subtype="FLOAT")

    x_flood = None
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--backend", backend,
                               "--block", str(args.block)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        hello = json.loads(server.stdout.readline())
        port = hello["port"]
        probe = StatusProbe(port)
        time.sleep(1.0)
        quiet = [r for r in (probe.rtt() for _ in range(args.status_count)) if r is not None]

        x_before = jack_xruns(jack)
        sender = subprocess.Popen([sys.executable, __file__, "--flood", "--port", str(port), "--rate",
                                   str(args.rate), "--seconds", str(args.seconds)],
                                  stdout=subprocess.PIPE, text=True)
        under_flood, lost = [], 0
        while sender.poll() is None:
            r = probe.rtt()
            if r is None:
                lost += 1
            else:
                under_flood.append(r)
            time.sleep(0.02)
        flood_result = json.loads(sender.stdout.read().strip().splitlines()[-1])
        x_flood = tuple(b - a for a, b in zip(x_before, jack_xruns(jack))) if jack else None
        time.sleep(1.0)         # the server samples its counters after the flood before we go on

        # group starts on a quiet mix
        probe.send("/mixer_cleanup")
        probe.expect("/done")
        for deck in "AB":
            probe.send("/deck_eq_all", deck, 50, 50, 50)
        probe.send("/crossfade_levels", 1.0, 1.0)
        time.sleep(0.5)
        for trial in range(args.trials):
            probe.send("/cue", "A", os.path.join(media, "left.wav"))
            probe.send("/cue", "B", os.path.join(media, "right.wav"))
            probe.expect("/done")
            probe.expect("/done")
            if trial % 2:
                probe.send("/reset")
                probe.send("/start_group", 0.1, "A", "B")     # a time ahead
            else:
                probe.send("/start_group", "A", "B", 0.0)     # at once
            time.sleep(0.4)
            probe.send("/stop_stem", 100)
            probe.send("/stop_stem", 1100)
            time.sleep(0.4)
        probe.send("/quit")
        probe.expect("/done")
        report = json.loads(server.stdout.readline())
        server.wait(30)
    finally:
        if server.poll() is None:
            server.kill()
        xruns = (jack_xruns(jack), x_flood) if jack is not None else None
        if jack is not None:
            jack.cleanup()
    return summarise(args, backend, quiet, under_flood, lost, flood_result, report, xruns)


def jack_xruns(jack) -> tuple[int, int, int] | None:
    """jackd's XRun lines: (ours, the witness's, the driver's); None without JACK."""
    return None if jack is None else jack.xruns_by_client()


def summarise(args, backend, quiet, under_flood, lost, flood_result, report, xruns) -> int:
    samples = report["samples"]
    t0, t1 = flood_result["t_start"], flood_result["t_end"]
    before = max((s for s in samples if s[0] <= t0), key=lambda s: s[0])
    after = min((s for s in samples if s[0] >= t1 + 0.4), key=lambda s: s[0])
    during = [s for s in samples if t0 <= s[0] <= t1]
    eng0, eng1 = before[2], after[2]
    srv0, srv1 = before[3], after[3]

    def tally(i):
        return sum(srv1["by_address"].get(a, [0, 0])[i] - srv0["by_address"].get(a, [0, 0])[i]
                   for a in ("/deck_eq", "/deck_filter"))

    accepted, refused = tally(0), tally(1)
    received = accepted + refused
    drops = (srv1["socket_drops"] or 0) - (srv0["socket_drops"] or 0)
    busy = srv1["busy_dropped"] - srv0["busy_dropped"]
    applied = eng1["commands"] - eng0["commands"]
    end = min((s for s in samples if s[0] >= t1), key=lambda s: s[0])[2]   # underruns: the flood only
    underflows = end["underflows"] - eng0["underflows"]
    overruns = end["overruns"] - eng0["overruns"]
    final = report["final"]["engine"]
    left, right = report["onsets_left"], report["onsets_right"]
    diffs = [r - l for l, r in zip(left, right)]
    rss = [s[1] / 2**20 for s in during]
    sent = flood_result["sent"]
    # every flood message reached the server or was dropped by the kernel (drops may
    # include a /status probe: then sent <= received + drops); each one received was
    # applied (one engine command each) or refused and counted
    accounted = (received == sent if drops == 0 else received + drops >= sent) \
        and accepted == applied and refused == busy      # valid messages: refused only when busy

    out = []
    out.append(f"osc_flood: {backend} backend at {args.block} frames, {args.rate} msg/s for "
               f"{args.seconds:g} s, reference workload (16 stems, EQ, crossfader, limiter)")
    out.append(f"  /status round trip, quiet:       median {statistics.median(quiet):.2f} ms, "
               f"p99 {pct(quiet, 99):.2f} ms, max {max(quiet):.2f} ms ({len(quiet)} requests)")
    if under_flood:
        out.append(f"  /status round trip, under flood: median {statistics.median(under_flood):.2f} ms, "
                   f"p99 {pct(under_flood, 99):.2f} ms, max {max(under_flood):.2f} ms "
                   f"({len(under_flood)} requests, {lost} unanswered within 1 s)")
    out.append(f"  flood: sent {sent} in {t1 - t0:.2f} s ({sent / max(t1 - t0, 1e-9):.0f}/s); server received "
               f"{received}, kernel receive-buffer drops {drops}; applied {accepted} (engine commands "
               f"applied: {applied}), refused {refused} (busy: {busy}); /fail replies to the sender "
               f"{flood_result['replies']}")
    out.append(f"  accounting: {'every message applied or counted as dropped' if accounted else 'MISMATCH'}")
    out.append(f"  underruns during the flood: {underflows} underflow flags, {overruns} late callbacks"
               + f"; whole run: {final['underflows']} flags, {final['overruns']} late callbacks")
    if xruns is not None:
        (ours, witness, other), flood_x = xruns
        out.append(f"  jackd XRun lines during the flood: {flood_x[0]} blamed on stemdeck, {flood_x[1]} on "
                   f"the witness (jack_metro), {flood_x[2]} other; whole run: {ours} / {witness} / {other}")
    out.append(f"  server RSS: before {before[1] / 2**20:.1f} MB, max during {max(rss) if rss else 0:.1f} MB, "
               f"after {after[1] / 2**20:.1f} MB")
    out.append(f"  group start: {len(diffs)} trials, frame difference B - A: "
               f"{sorted(set(diffs)) if diffs else 'none measured'}")
    half = [s for s in during if s[0] >= (t0 + t1) / 2]
    if half:
        out.append(f"  server RSS over the flood's second half: {half[0][1] / 2**20:.1f} -> "
                   f"{half[-1][1] / 2**20:.1f} MB")
    events = []
    for a, b in zip(samples, samples[1:]):
        d = (b[2]["underflows"] - a[2]["underflows"]) + (b[2]["overruns"] - a[2]["overruns"])
        if d:
            events.append(f"{d} at {b[0] - t0:+.1f} s")
    if events:
        out.append("  underruns by time from the flood's start: " + ", ".join(events))
    if args.verbose:
        out.append("  RSS series (s from flood start, MB): " + " ".join(
            f"{s[0] - t0:+.1f}:{s[1] / 2**20:.1f}" for s in samples))
    print("\n".join(out))
    ok = accounted and underflows == 0 and overruns == 0 and diffs and all(d == 0 for d in diffs) \
        and len(diffs) == args.trials
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rate", type=int, default=10000)
    p.add_argument("--block", type=int, default=128)
    p.add_argument("--backend", choices=("jack", "null"), default="jack")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--status-count", type=int, default=1000)
    p.add_argument("-v", "--verbose", action="store_true", help="also print the RSS series")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--flood", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args)
        return 0
    if args.flood:
        flood(args)
        return 0
    return conduct(args)


if __name__ == "__main__":
    sys.exit(main())
