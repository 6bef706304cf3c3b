"""Loading while the engine plays in real time.

- The read-ahead thread keeps memory-mapped audio ahead of every playing
  voice resident, so a cold file causes no major page fault inside the
  audio callback (and, without it, the same run does fault: the counter
  and the cold cache are real).
- A big PCM file is ready at once and costs next to nothing in memory
  until it plays.
- Loading (a decode and a map, with the reference workload playing on a
  JACK dummy server at 256 frames) never delays a callback: every callback
  during the load finishes within its block period.
"""

from __future__ import annotations

import gc
import os
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from stemdeck.control.controller import Controller
from stemdeck.engine import Engine
from stemdeck.engine import layout as L
from stemdeck.media.loader import MediaLoader
from stemdeck.media.readahead import drop_page_cache, resident_fraction

from lateness import assert_callbacks_never_waited, assert_machine_stalls_bounded
from signals import SR, sine


def pcm16(path, seconds, seed=0):
    rng = np.random.default_rng(seed)
    frames = int(seconds * SR)
    with sf.SoundFile(path, "w", SR, 2, subtype="PCM_16") as f:
        for start in range(0, frames, SR * 30):
            n = min(SR * 30, frames - start)
            f.write(rng.integers(-8000, 8000, (n, 2), dtype=np.int16))
    return str(path)


def skip_unless_droppable(path):
    """Cold-cache tests need a disk whose page cache posix_fadvise can drop (not tmpfs)."""
    from stemdeck.media import mapped

    if not drop_page_cache(path):
        pytest.skip("posix_fadvise(DONTNEED) is not available")
    data = mapped.map_samples(path, mapped.read_layout(path))
    cold = resident_fraction(data) < 0.5
    del data
    gc.collect()
    if not cold:
        pytest.skip(f"the page cache of {path} cannot be dropped here (tmpfs?)")


def null_output(engine, block=256):
    from stemdeck.audio.null import NullOutput

    out = NullOutput(engine, block_size=block, sample_rate=SR)
    out.open()
    return out


def wait_loaded(c, ready, timeout=30):
    deadline = time.monotonic() + timeout
    while c.loading and time.monotonic() < deadline:
        ready.wait(0.05)
        ready.clear()
        c.poll()
    assert not c.loading


def cold_run(path, *, readahead: bool) -> tuple[dict, dict]:
    """Eight voices over a cold 4-minute file, at positions far apart, for 3 s."""
    gc.collect()                                  # an earlier run's mapping would keep pages cached
    assert drop_page_cache(path)
    e = Engine(SR)
    out = null_output(e)
    ready = threading.Event()
    loader = MediaLoader(e, cache_mb=64, readahead=readahead, prefault_seconds=2.0 if readahead else 0.0)
    c = Controller(e, loader=loader, on_load_ready=ready.set)
    try:
        out.start()
        c.handle("/load_buffer", [100, path])
        wait_loaded(c, ready)
        data = e.sample_of(c.buffers[100].slot)
        starts = [k / 8 + 0.01 for k in range(8)]
        frames = data.shape[0]
        cold = [resident_fraction(data, int(p * frames), int(p * frames) + SR) < 0.5 for p in starts]
        assert sum(cold) >= 2                                   # where voices will start, still cold
        for k, pos in enumerate(starts):
            c.handle("/load_buffer", [101 + k, path])            # the same sample, eight buffer IDs
        if readahead:
            for pos in starts:                                   # what /cue does for its start point
                loader.warm_sample(loader.key(path), pos)
            time.sleep(0.5)
        before = e.stats()
        for k, pos in enumerate(starts):
            c.handle("/play_stem", [101 + k, 1.05, 0.1, 1, pos])
        time.sleep(3.0)
        stats = e.stats()
        for key in ("major_faults_in_callbacks", "callbacks_slept"):
            stats[key] -= before[key]
        return stats, loader.cache_status()
    finally:
        out.close()
        loader.close()


def test_read_ahead_keeps_callbacks_free_of_major_page_faults(tmp_path):
    path = pcm16(tmp_path / "cold.wav", 240)                     # 42 MB
    skip_unless_droppable(path)
    # the control: without read-ahead, the callback takes the faults (the counter and the cold cache are real)
    stats, cache = cold_run(path, readahead=False)
    assert stats["voices"] == 8
    assert stats["major_faults_in_callbacks"] > 0
    assert stats["callbacks_slept"] > 0                          # waiting for the disk is a sleep, and counted
    # with it: none, and the read-ahead thread read the disk instead
    stats, cache = cold_run(path, readahead=True)
    assert stats["voices"] == 8
    assert stats["major_faults_in_callbacks"] == 0
    assert cache["readahead"]["voices_followed"] == 8
    assert cache["readahead"]["disk_reads"] > 0


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_big_wav_is_ready_at_once_and_costs_its_pages_not_its_size(tmp_path):
    path = pcm16(tmp_path / "big.wav", 600)                      # 106 MB
    size = os.path.getsize(path)
    drop_page_cache(path)
    e = Engine(SR)
    loader = MediaLoader(e, cache_mb=16)                         # far below the file: mapped files need none
    c = Controller(e, loader=loader, on_load_ready=lambda: None)
    try:
        rss = _rss_bytes()
        t0 = time.perf_counter()
        c.handle("/cue", ["B", path])
        while not c.replies:
            time.sleep(0.001)
            c.poll()
        took = time.perf_counter() - t0
        assert c.replies[0][1:] == ("/done", ("/cue", 1100))
        grew = _rss_bytes() - rss
        assert grew < 0.1 * size, grew
        assert took < 1.0, took                                  # milliseconds in practice (benchmark)
        assert c.status_detail()["cache"]["mapped_mb"] == pytest.approx(size / 2 ** 20, abs=0.1)
        assert c.status_detail()["cache"]["used_mb"] == 0.0
    finally:
        loader.close()


# -- on a JACK dummy server ---------------------------------------------------------------------------

@pytest.mark.jack
def test_loading_never_delays_a_callback(make_jack_server, monkeypatch, tmp_path):
    """The reference workload plays at 256 frames through PortAudio's JACK host
    API while a 60 s FLAC is decoded and a 100 MB WAV is mapped, both then
    started: no callback meanwhile waits on the load (a lock, a page) or
    computes past its block period (tests/lateness.py)."""
    from stemdeck import config
    from stemdeck.audio import realtime
    from stemdeck.audio.output import open_output
    from stemdeck import app
    from stemdeck.tools.workload import build_reference_workload

    block = 256
    flac = tmp_path / "long.flac"
    sf.write(flac, sine(220, 60.0, 0.2), SR)
    wav = pcm16(tmp_path / "big.wav", 560)
    drop_page_cache(wav)

    jack = make_jack_server(period=block)
    monkeypatch.setenv("JACK_DEFAULT_SERVER", jack.name)
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    settings = config.resolve({"buffer_size": str(block), "backend": "portaudio"}, app.SERVE_SETTINGS,
                              environ={})
    e = Engine(SR, max_block=block)
    build_reference_workload(e, stems=16, seconds=10.0)
    realtime.prefault(e)                  # as serve does before its audio starts
    out = open_output(e, settings, reconnect=0, rescan=True)
    ready = threading.Event()
    loader = MediaLoader(e, cache_mb=512)
    c = Controller(e, loader=loader, on_load_ready=ready.set, lookahead=block)
    try:
        out.start()
        time.sleep(1.0)                                          # start-up settles
        rt_threads = realtime.realtime_threads()
        before = e.stats()
        index0 = int(e.state.counters[L.CT_DUR_INDEX])
        c.handle("/load_buffer", [1150, str(flac)])
        c.handle("/cue", ["C", wav])
        wait_loaded(c, ready, timeout=60)
        c.handle("/play_stem", [1150, 1.0, 0.3, 1])
        c.handle("/start_group", [0.0, "C"])
        time.sleep(1.0)
        after = e.stats()
        durations = e.callback_durations()
        index1 = int(e.state.counters[L.CT_DUR_INDEX])
    finally:
        out.close()
        loader.close()
    # the mapped cue is answered first, the decode after
    assert [r[1:] for r in c.replies] == [("/done", ("/cue", 2100)), ("/done", ("/load_buffer", 1150))]
    during = durations[-min(index1 - index0, len(durations)):]
    period_ns = block / SR * 1e9
    assert len(during) > 100
    assert after["voices"] == 17          # the workload's 16 (2100 now plays the cued WAV) and the FLAC
    # the load never made a callback wait or run long (tests/lateness.py): wall-time
    # lateness alone is the machine's (a VM host taking the CPU away mid-callback)
    seen = f"slowest callback {during.max() / 1e6:.2f} ms of {period_ns / 1e6:.2f} ms; {jack.log()}"
    assert rt_threads, "the callback's thread is not real-time: the test's jackd must run with -R"
    assert_callbacks_never_waited(before, after, period_ns, seen)
    assert_machine_stalls_bounded(jack.xruns_by_state("PortAudio"), after["callbacks"], seen)
