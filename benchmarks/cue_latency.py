"""/cue of a 140 MB WAV while the reference workload plays: time to the first audible frame,
underruns during the load, memory growth, and major page faults in callbacks on a cold cache.

    .venv/bin/python benchmarks/cue_latency.py [--backend jack|null] [--block 256]
                                               [--seconds 60] [--file PATH] [--keep]
                                               [--no-compare] [--change] [--json FILE]

Generates a 140 MB 16-bit 44.1 kHz stereo WAV (about 13 minutes; kept in a
temporary folder unless ``--file`` names where), drops it from the page
cache (``posix_fadvise(DONTNEED)``: a cold cache without root), and plays
the reference workload (src/stemdeck/tools/workload.py; 16 stems, 30 s sources at rate 1.05,
EQ, limiter) at ``--block`` frames: on a JACK dummy server (``jackd -d
dummy -p BLOCK``, started here; tests/jackserver.py) through PortAudio's
JACK host API, or on the null backend's real-time clock. Then, from the
control thread (this one), as a client would send them back to back::

    /cue B big.wav        (memory-mapped by the MediaLoader's open lane)
    /start_group 0 B      (waits for the cue, then starts at once)

and reports:

- ``/done /cue`` after how many ms; the first frame of the cued file the
  engine renders, and when the callback that rendered it returned (ms after
  the /cue), plus the device's reported output latency (when it is heard);
- underruns while loading (from the /cue until a second after the start):
  PortAudio's underflow flags, callbacks longer than their period, and
  jackd's XRun lines blaming stemdeck's client;
- process memory (RSS, split into file-backed and anonymous) before the cue,
  after it, and at the end of ``--seconds`` of playback, against the file size;
- major page faults taken inside audio callbacks over the whole run, and the
  pages the read-ahead thread read from disk instead;
- for comparison (``--no-compare`` skips it), reading the whole file and
  converting it to float32 (``media.decode.load_audio``): time and size.
- with ``--change``, after the playback: ``cp`` of a short WAV over the
  playing file (what a DJ copying tracks into the folder does). The file
  guard (``media/guard.py``) copies the sample into memory while ``cp``
  waits: how long ``cp`` took, when the ``/file`` event came, underruns
  around it, memory afterwards against the file size, and whether the
  stem's samples stayed the same. The file is overwritten: a later run
  makes it again.

The workload's own stem on buffer 1100 (deck B's first ID, which ``/cue B``
loads into) is stopped before the cue, so 16 stems play afterwards.
A benchmark, not a test: the numbers depend on the machine, its disk and
its kernel's read-ahead window (``/sys/block/*/queue/read_ahead_kb``).
"""

from __future__ import annotations

import argparse
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
FILE_BYTES = 140_000_000


def make_wav(path: str, nbytes: int = FILE_BYTES) -> str:
    """A 16-bit stereo WAV of quiet noise and a tone, ``nbytes`` of samples."""
    import soundfile as sf

    frames = nbytes // 4
    rng = np.random.default_rng(1)
    t = np.arange(1 << 20) / SR
    chunk = (rng.standard_normal((1 << 20, 2)) * 800).astype(np.int16)
    chunk += (3000 * np.sin(2 * np.pi * 110 * t)).astype(np.int16)[:, None]
    with sf.SoundFile(path, "w", samplerate=SR, channels=2, subtype="PCM_16") as f:
        left = frames
        while left > 0:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n
    return path


def memory() -> dict:
    """RSS of this process, in bytes: total, file-backed (mapped files), anonymous."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssFile", "RssAnon"):
                out[key] = int(value.split()[0]) * 1024
    return {"rss": out.get("VmRSS", 0), "file": out.get("RssFile", 0), "anon": out.get("RssAnon", 0)}


def open_output(engine, backend: str, block: int):
    from stemdeck import config
    from stemdeck.audio.output import open_output as open_
    from stemdeck.app import SERVE_SETTINGS

    settings = config.resolve({"buffer_size": str(block),
                               "backend": "portaudio" if backend == "jack" else "null"},
                              SERVE_SETTINGS, environ={})
    return open_(engine, settings, reconnect=0, rescan=backend == "jack")


def run(path: str, backend: str, block: int, seconds: float, jack=None, change: bool = False) -> dict:
    from stemdeck import app
    from stemdeck.engine import Engine
    from stemdeck.engine import layout as L
    from stemdeck.media.readahead import drop_page_cache, resident_fraction
    from stemdeck.tools.workload import build_reference_workload

    def jack_xruns():
        if jack is None:
            return 0
        return sum(1 for line in jack.log().splitlines() if "XRun" in line and "client = PortAudio" in line)

    size = os.path.getsize(path)
    engine = Engine(SR, max_block=block)
    build_reference_workload(engine)
    output = open_output(engine, backend, block)
    ready = threading.Event()
    loader = app.live_loader(engine, cache_mb=512)
    c = app.assemble(engine, loader, lookahead=block, on_load_ready=ready.set).controller
    result = {"backend": backend, "block": block, "file_bytes": size,
              "device_latency_ms": round((output.reported_latency or 0) * 1000, 2)}
    try:
        output.start()
        time.sleep(0.5)
        engine.stop(1100)                           # deck B's first ID: /cue B loads there
        time.sleep(1.5)
        # the control loop's tick, once, as a server's does long before any /cue: its
        # first call loads (or, on a fresh checkout, compiles) the event drain, which
        # must not be timed as the cue (a fresh checkout's first run measured 2.3 s)
        c.poll()
        cold = drop_page_cache(path)
        result["cold_cache"] = cold
        before = engine.stats()
        xr0 = jack_xruns()
        mem0 = memory()

        t0 = time.perf_counter()
        frame0 = engine.frame
        c.handle("/cue", ["B", path])
        c.handle("/start_group", [0.0, "B"])
        while not any(r[1] == "/done" and r[2][0] == "/cue" for r in c.replies):
            ready.wait(0.0005)
            ready.clear()
            c.poll()
            if c.replies and c.replies[-1][1] == "/fail":
                raise SystemExit(f"/cue failed: {c.replies[-1]}")
        t_done = time.perf_counter()
        # the voice the group start made: its first frame, and when the engine passed it
        vi, vf = engine.state.voices_i, engine.state.voices_f
        start_frame = None
        while start_frame is None and time.perf_counter() - t0 < 5:
            hits = np.flatnonzero((vi[:, L.VI_BUF] == 1100) & (vi[:, L.VI_STATE] == L.V_PLAYING))
            if len(hits):
                start_frame = int(vf[hits[0], L.VF_START_FRAME])
            else:
                time.sleep(0.0002)
        while engine.frame <= start_frame:
            time.sleep(0.0002)
        t_rendered = time.perf_counter()
        data = engine.sample_of(c.buffers[1100].slot)
        mem1 = memory()
        time.sleep(1.0)
        during = engine.stats()
        xr1 = jack_xruns()
        result.update(
            cue_done_ms=round((t_done - t0) * 1000, 2),
            first_frame_after_cue_frames=start_frame - frame0,
            first_frame_rendered_ms=round((t_rendered - t0) * 1000, 2),
            first_frame_heard_ms=round((t_rendered - t0) * 1000 + result["device_latency_ms"], 2),
            load_underflows=during["underflows"] - before["underflows"],
            load_overruns=during["overruns"] - before["overruns"],
            load_jack_client_xruns=xr1 - xr0,
            load_callback_max_us=round(float(engine.callback_durations()[-int(SR / block):].max()) / 1000, 1),
            mapped_dtype=str(data.dtype),
            memory_after_cue=mem1,
            memory_growth_after_cue=mem1["rss"] - mem0["rss"],
        )
        # play on, cold file, for the rest of the run
        t_end = time.perf_counter() + seconds
        peak = mem1
        while time.perf_counter() < t_end:
            time.sleep(0.5)
            c.poll()                                # loads and the engine's events
            m = memory()
            if m["rss"] > peak["rss"]:
                peak = m
        after = engine.stats()
        result.update(
            seconds=seconds,
            run_underflows=after["underflows"] - before["underflows"],
            run_overruns=after["overruns"] - before["overruns"],
            run_jack_client_xruns=jack_xruns() - xr0,
            major_faults_in_callbacks=after["major_faults_in_callbacks"] - before["major_faults_in_callbacks"],
            readahead=loader.cache_status().get("readahead"),
            voices=after["voices"],
            memory_before=mem0,
            memory_peak=peak,
            memory_growth_peak=peak["rss"] - mem0["rss"],
            memory_growth_anon=peak["anon"] - mem0["anon"],
            played_frames=int(seconds * SR * 1.0),
            resident_fraction_end=round(resident_fraction(data), 3),
        )
        if change:
            result.update(overwrite_while_playing(path, data, engine, block, loader, jack_xruns))
    finally:
        output.close()
        loader.close()
    return result


def overwrite_while_playing(path, data, engine, block, loader, jack_xruns) -> dict:
    """``cp`` a short WAV over the playing file; what it cost and what was heard."""
    import subprocess

    events = []
    loader.on_file_event = lambda *e: events.append((time.perf_counter(), e))
    small = path + ".new.wav"
    make_wav(small, 1 << 20)
    probe = np.array(data[::4096])
    before, xr0, mem0 = engine.stats(), jack_xruns(), memory()
    t0 = time.perf_counter()
    subprocess.run(["cp", small, path], check=True)
    took = time.perf_counter() - t0
    os.remove(small)
    deadline = time.perf_counter() + 5
    while not events and time.perf_counter() < deadline:
        time.sleep(0.001)
    time.sleep(1.0)
    after, mem1 = engine.stats(), memory()
    return {
        "change_cp_ms": round(took * 1000, 1),
        "change_event_ms": round((events[0][0] - t0) * 1000, 1) if events else None,
        "change_event": list(events[0][1]) if events else None,
        "change_underflows": after["underflows"] - before["underflows"],
        "change_jack_client_xruns": jack_xruns() - xr0,
        "change_callback_max_us": round(float(engine.callback_durations()[-int(2 * SR / block):].max()) / 1000, 1),
        # the probe above faulted the file's pages in, so RSS barely moves: the copy
        # shows as anonymous memory taking the place of file pages
        "change_memory_growth": mem1["rss"] - mem0["rss"],
        "change_anon_growth": mem1["anon"] - mem0["anon"],
        "change_samples_unchanged": bool(np.array_equal(np.array(data[::4096]), probe)),
    }


def compare_decode(path: str) -> dict:
    from stemdeck.media.decode import load_audio

    t0 = time.perf_counter()
    audio = load_audio(path, SR)
    took = time.perf_counter() - t0
    return {"decode_s": round(took, 3), "decoded_bytes": int(audio.nbytes)}


def report(r: dict) -> None:
    mb = 1e6
    size = r["file_bytes"]
    where = (f"JACK dummy server (jackd -d dummy -p {r['block']}), PortAudio JACK host API"
             if r["backend"] == "jack" else "null backend (real-time clock thread)")
    print(f"backend           {where}, block {r['block']} frames, reference workload (16 stems)")
    print(f"file              {size / mb:.1f} MB 16-bit stereo 44.1 kHz WAV, "
          f"{'cold' if r['cold_cache'] else 'NOT cold (fadvise refused)'} page cache; plays as {r['mapped_dtype']}")
    print(f"/done /cue        {r['cue_done_ms']:.2f} ms after the /cue")
    print(f"first frame       engine frame +{r['first_frame_after_cue_frames']} after the /cue's frame; "
          f"rendered {r['first_frame_rendered_ms']:.2f} ms after the /cue "
          f"(+ {r['device_latency_ms']:.1f} ms output latency = heard at {r['first_frame_heard_ms']:.1f} ms)")
    print(f"during the load   {r['load_underflows']} underflows, {r['load_overruns']} callbacks over their "
          f"period, {r['load_jack_client_xruns']} jackd XRuns on stemdeck; slowest callback "
          f"{r['load_callback_max_us']:.0f} us of {r['block'] / SR * 1e6:.0f} us")
    print(f"memory            RSS +{r['memory_growth_after_cue'] / mb:.1f} MB after the cue; "
          f"+{r['memory_growth_peak'] / mb:.1f} MB at peak over {r['seconds']:g} s "
          f"({r['memory_growth_peak'] / size:.2f}x the file; anonymous +{r['memory_growth_anon'] / mb:.1f} MB; "
          f"file pages resident at the end: {r['resident_fraction_end']:.0%})")
    ra = r.get("readahead") or {}
    print(f"cold cache        {r['major_faults_in_callbacks']} major page faults inside callbacks over "
          f"{r['seconds']:g} s; the read-ahead thread took {ra.get('disk_reads', 0)} instead "
          f"(slowest look at the voices {ra.get('max_tick_ms', 0):.1f} ms)")
    print(f"whole run         {r['run_underflows']} underflows, {r['run_overruns']} overruns, "
          f"{r['run_jack_client_xruns']} jackd XRuns on stemdeck, {r['voices']} voices at the end")
    if "change_cp_ms" in r:
        print(f"file changed      cp of a 1 MB WAV over it took {r['change_cp_ms']:.0f} ms (it waited for the copy); "
              f"/file event {r['change_event']} at {r['change_event_ms']} ms; {r['change_underflows']} underflows, "
              f"{r['change_jack_client_xruns']} jackd XRuns on stemdeck, slowest callback "
              f"{r['change_callback_max_us']:.0f} us; anonymous memory +{r['change_anon_growth'] / mb:.1f} MB "
              f"({r['change_anon_growth'] / size:.2f}x the file; RSS {r['change_memory_growth'] / mb:+.1f} MB); "
              f"samples unchanged: {r['change_samples_unchanged']}")
    if "decode_s" in r:
        print(f"for comparison    load_audio (read whole, convert to float32): {r['decode_s']:.2f} s, "
              f"{r['decoded_bytes'] / mb:.0f} MB ({r['decoded_bytes'] / size:.1f}x the file)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=("jack", "null"), default="jack")
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=60.0, help="playback after the cue (cold-cache faults)")
    ap.add_argument("--file", help="where the WAV is (made if missing); default: a temporary folder")
    ap.add_argument("--keep", action="store_true", help="keep the generated WAV")
    ap.add_argument("--no-compare", action="store_true", help="skip the whole-file decode comparison")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    ap.add_argument("--change", action="store_true",
                    help="at the end, cp a short WAV over the playing file (the file guard's copy)")
    args = ap.parse_args()

    tmp = None
    path = args.file
    if path is None:
        tmp = tempfile.mkdtemp(prefix="stemdeck-cue-")
        path = os.path.join(tmp, "big.wav")
    if not os.path.exists(path) or os.path.getsize(path) < FILE_BYTES:     # --change overwrote it
        print(f"writing {path} ...", flush=True)
        make_wav(path)
    try:
        if args.backend == "jack":
            from jackserver import JackServer, missing_tools

            missing = missing_tools()
            if missing:
                print(missing, file=sys.stderr)
                return 2
            with JackServer(rate=SR, period=args.block) as jack:
                os.environ["JACK_DEFAULT_SERVER"] = jack.name
                os.environ["JACK_NO_START_SERVER"] = "1"
                result = run(path, "jack", args.block, args.seconds, jack, args.change)
        else:
            result = run(path, "null", args.block, args.seconds, change=args.change)
        if not args.no_compare:
            result.update(compare_decode(path))
        report(result)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
    finally:
        if tmp is not None and not args.keep:
            try:
                os.remove(path)
                os.rmdir(tmp)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
