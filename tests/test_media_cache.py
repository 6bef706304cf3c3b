"""The sample cache: holds, least-recently-used eviction, the budget and its
refusals, reuse of a file loaded twice, /free_buffer and /mixer_cleanup,
both on the cache itself and through the Controller."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import soundfile as sf

from stemdeck.control import spec
from stemdeck.control.controller import Controller
from stemdeck.control.planning import RecordingEngine
from stemdeck.errors import MediaError
from stemdeck.media.sample_cache import MB, BudgetFull, SampleCache
from stemdeck.media.loader import MediaLoader

from signals import SR, sine


def arr(mbytes: float) -> np.ndarray:
    return np.zeros((int(mbytes * MB) // 8, 2), np.float32)


def put(cache: SampleCache, key: str, mbytes: float, *, holds: int = 0, kind: str = "decoded"):
    data = arr(mbytes)
    res = cache.reserve(key, data.nbytes, key) if kind != "mapped" else None
    return cache.commit(res, data, kind, ("sig", key), holds=holds, key=key, shown=key)


# -- the cache alone ----------------------------------------------------------------------------------

def test_unused_samples_are_evicted_least_recently_used_first():
    cache = SampleCache(10 * MB)
    for key in "abcd":
        put(cache, key, 2)
    cache.get("a", ("sig", "a"))                    # a used again: now the most recent
    cache.release("a")
    put(cache, "e", 5)                              # needs 3 MB more than is free: b then c go
    assert [e.key for e in cache.entries()] == ["d", "a", "e"]
    assert cache.evictions == 2
    assert cache.status()["used_mb"] == pytest.approx(9.0, abs=0.01)


def test_samples_in_use_are_never_evicted_and_the_refusal_names_the_sizes():
    cache = SampleCache(10 * MB)
    put(cache, "playing", 6, holds=1)
    put(cache, "idle", 2)
    with pytest.raises(MediaError) as info:
        cache.reserve("new", 5 * MB, "song.flac", detail="3:00.000 decoded to float32 stereo")
    text = str(info.value)
    assert text.startswith("not enough memory: song.flac needs 5.00 MB of memory (3:00.000 decoded")
    assert "only 4.00 MB of the 10.0 MB budget (--cache-mb) is free or unused" in text
    assert "6.00 MB is held by buffers in use" in text and "/free_buffer" in text
    # the refusal changed nothing: idle was not evicted for a load that could not fit anyway
    assert sorted(e.key for e in cache.entries()) == ["idle", "playing"]


def test_a_sample_larger_than_the_whole_budget_is_refused_at_once():
    cache = SampleCache(10 * MB)
    put(cache, "x", 1)
    with pytest.raises(MediaError) as info:
        cache.reserve("big", 11 * MB, "big.flac")
    assert str(info.value).startswith("larger than the memory budget: big.flac needs 11.0 MB of memory "
                                      "but the budget (--cache-mb) is 10.0 MB")
    assert [e.key for e in cache.entries()] == ["x"]


def test_preloads_do_not_evict():
    cache = SampleCache(10 * MB)
    put(cache, "a", 6)
    with pytest.raises(BudgetFull):
        cache.reserve("b", 5 * MB, "b.flac", evict=False)
    assert [e.key for e in cache.entries()] == ["a"]


def test_reservations_count_so_two_loads_cannot_both_take_the_last_room():
    cache = SampleCache(10 * MB)
    r1 = cache.reserve("a", 6 * MB, "a")
    with pytest.raises(MediaError):
        cache.reserve("b", 6 * MB, "b")
    cache.cancel(r1)
    cache.reserve("b", 6 * MB, "b")


def test_mapped_samples_do_not_count_against_the_budget():
    cache = SampleCache(1 * MB)
    put(cache, "song.wav", 100, kind="mapped", holds=1)
    st = cache.status()
    assert st["mapped_mb"] == pytest.approx(100.0, abs=0.1) and st["used_mb"] == 0.0
    cache.reserve("x", MB // 2, "x")


def test_unused_mapped_files_are_capped():
    cache = SampleCache(None, max_unused_mapped=3)
    for i in range(6):
        put(cache, f"m{i}", 0.01, kind="mapped")
    assert [e.key for e in cache.entries()] == ["m3", "m4", "m5"]


def test_budget_zero_keeps_nothing_unused():
    cache = SampleCache(0)
    put(cache, "a", 500, holds=1)                  # no limit
    assert cache.peek("a") is not None
    cache.release("a")
    assert cache.peek("a") is None


def test_a_file_changed_on_disk_is_not_served_from_the_cache():
    cache = SampleCache(None)
    put(cache, "a", 1)
    assert cache.get("a", ("sig", "a")) is not None
    assert cache.get("a", ("other", "a")) is None
    assert cache.peek("a") is None


def test_free_and_free_unused():
    cache = SampleCache(None)
    put(cache, "held", 1, holds=1)
    put(cache, "idle", 1)
    put(cache, "pre", 1).preloaded = True
    assert not cache.free("held")
    assert cache.free("idle")
    cache.free_unused()
    assert sorted(e.key for e in cache.entries()) == ["held", "pre"]
    cache.free_unused(keep_preloaded=False)
    assert [e.key for e in cache.entries()] == ["held"]


# -- through the Controller --------------------------------------------------------------------------------

def flac(path, seconds: float, freq: float = 440.0):
    sf.write(path, sine(freq, seconds, 0.3), SR, subtype="PCM_16")
    return str(path)


def controller(cache_mb, **kw):
    loader = MediaLoader(cache_mb=cache_mb, immediate=True)
    engine = RecordingEngine(SR)
    return engine, loader, Controller(engine, loader=loader, **kw)


def free_buffer(c, buffer_id):
    """``/free_buffer id`` (through the message table once it has the entry)."""
    if "/free_buffer" in spec.BY_ADDRESS:
        return c.handle("/free_buffer", [buffer_id])
    msg = spec.Message("/free_buffer", "free_buffer", "", "", (spec.Arg("id", "int", "", 0, spec.MAX_BUFFER_ID),))
    c._emitted = out = []
    try:
        c.dispatch(spec.Call(msg, {"id": buffer_id}))
    finally:
        c._emitted = None
    return out


def test_eviction_order_and_refusal_through_the_controller(tmp_path):
    # each 3 s FLAC decodes to 1.01 MB; the budget holds three
    paths = [flac(tmp_path / f"s{i}.flac", 3.0, 200 + 100 * i) for i in range(5)]
    engine, loader, c = controller(cache_mb=3.2)
    for i in range(3):
        assert c.handle("/load_buffer", [100 + i, paths[i]]) == [("/done", ("/load_buffer", 100 + i))]
    # nothing is unused yet: a fourth cannot fit, and the reply names the sizes
    (reply,) = c.handle("/load_buffer", [200, paths[3]])
    assert reply[0] == "/fail" and reply[1][0] == "/load_buffer"
    assert reply[1][1].startswith(f"buffer 200: not enough memory: {paths[3]} needs 1.01 MB of memory "
                                  "(0:03.000 decoded to float32 stereo) but only 0.17 MB of the 3.20 MB budget")
    # free two buffers: their samples stay cached (unused), s1 last used after s0
    assert free_buffer(c, 100) == [("/done", ("/free_buffer", 100))]
    # /free_buffer freed s0's memory outright; s1 becomes unused by a reload of 101
    assert [e.shown for e in loader.cache.entries()] == [paths[1], paths[2]]
    c.handle("/load_buffer", [101, paths[2]])            # 101 now shares s2; s1 unused, cached
    assert [e.key for e in loader.cache.entries() if e.holds == 0] == [os.path.realpath(paths[1])]
    c.handle("/load_buffer", [200, paths[3]])
    c.handle("/load_buffer", [201, paths[4]])            # evicts s1 (the only unused one)
    assert c.buffers[200].state == "ready" and c.buffers[201].state == "ready"
    assert os.path.realpath(paths[1]) not in {e.key for e in loader.cache.entries()}
    assert loader.cache.evictions == 1


def test_the_same_path_loaded_twice_reuses_the_sample(tmp_path):
    path = flac(tmp_path / "a.flac", 1.0)
    engine, loader, c = controller(cache_mb=64)
    c.handle("/load_buffer", [100, path])
    c.handle("/load_buffer", [1100, os.path.join(str(tmp_path), ".", "a.flac")])   # another spelling
    assert len([x for x in engine.calls if x[0] == "add_sample"]) == 1
    assert loader.loads["decoded"] == 1
    # freed and loaded again: from the cache, not decoded again
    free_buffer(c, 100)
    free_buffer(c, 1100)        # the last user: /free_buffer drops it
    c.handle("/load_buffer", [100, path])
    assert loader.loads["decoded"] == 2
    c.handle("/load_buffer", [101, flac(tmp_path / "b.flac", 1.0)])
    c.handle("/load_buffer", [101, path])                  # b becomes unused but stays cached
    c.handle("/load_buffer", [102, str(tmp_path / "b.flac")])
    assert loader.loads["decoded"] == 3 and loader.loads["cached"] == 1


def test_a_file_rewritten_on_disk_is_read_again(tmp_path):
    path = flac(tmp_path / "a.flac", 1.0, 440)
    engine, loader, c = controller(cache_mb=64)
    c.handle("/load_buffer", [100, path])
    free_buffer(c, 100)
    c.handle("/load_buffer", [100, path])
    c.handle("/load_buffer", [100, flac(tmp_path / "other.flac", 1.0)])    # a.flac unused, cached
    time.sleep(0.01)
    flac(tmp_path / "a.flac", 2.0, 880)                                  # re-exported
    c.handle("/load_buffer", [101, path])
    assert c.buffers[101].frames == 2 * SR


def test_mixer_cleanup_releases_memory_but_keeps_preloads(tmp_path):
    a, b = flac(tmp_path / "a.flac", 1.0), flac(tmp_path / "b.flac", 1.0)
    engine, loader, c = controller(cache_mb=64)
    loader.fetch(b, SR).result()
    loader.release_sample(loader.key(b))            # as a preload of a folder leaves it
    c.handle("/load_buffer", [100, a])
    assert loader.cache.status()["used_mb"] > 0.6
    assert c.handle("/mixer_cleanup") == [("/done", ("/mixer_cleanup",))]
    assert [e.shown for e in loader.cache.entries()] == [b]
    assert not c.book.samples and not c.buffers


def test_free_buffer_of_a_shared_file_keeps_it_for_the_other_buffer(tmp_path):
    a = flac(tmp_path / "a.flac", 1.0)
    engine, loader, c = controller(cache_mb=64)
    c.handle("/load_buffer", [100, a])
    c.handle("/load_buffer", [101, a])
    free_buffer(c, 100)
    assert c.buffers[101].state == "ready"
    assert loader.cache.peek(loader.key(a)).holds == 1
    assert free_buffer(c, 999) == [("/fail", ("/free_buffer", "buffer 999 is not loaded"))]
    assert ("unbind", (100,), {"at": None}) in engine.calls


def test_status_reports_cache_use(tmp_path):
    a = flac(tmp_path / "a.flac", 2.0)
    w = tmp_path / "w.wav"
    sf.write(w, np.zeros((SR, 2)), SR, subtype="PCM_16")
    engine, loader, c = controller(cache_mb=64)
    c.handle("/load_buffer", [100, a])
    c.handle("/load_buffer", [101, str(w)])
    cache = c.status_detail()["cache"]
    assert cache["budget_mb"] == 64.0
    assert cache["in_use_mb"] == pytest.approx(2 * SR * 8 / MB, abs=0.1)
    assert cache["mapped_mb"] == pytest.approx(SR * 4 / MB, abs=0.1)
    assert cache["samples"] == 2 and cache["mapped_files"] == 1
    assert cache["loads"]["decoded"] == 1 and cache["loads"]["mapped"] == 1


def test_a_full_cache_refuses_over_osc_and_the_playing_stems_play_on(tmp_path):
    """Live, through the production loader: three playing FLACs fill the
    budget; a fourth load gets /fail with the sizes, and the three keep
    sounding (nothing in use is evicted)."""
    from osctools import Rig
    from signals import amplitude

    paths = [flac(tmp_path / f"s{i}.flac", 3.0, 300 + 200 * i) for i in range(4)]
    with Rig(cache_mb=3.2) as rig:
        c = rig.client
        for i in range(3):
            c.send("/load_buffer", 100 + 1000 * i, paths[i])
            assert c.expect("/done", timeout=10) == ["/load_buffer", 100 + 1000 * i]
            c.send("/play_stem", 100 + 1000 * i, 1.0, 0.3, 1)
        c.send("/load_buffer", 3100, paths[3])
        reason = c.expect("/fail", timeout=10)
        assert reason[0] == "/load_buffer" and "buffer 3100: not enough memory" in reason[1], reason
        a, b = rig.after(0.5)
        mix = rig.driver.samples(a, b)
        for i in range(3):                     # each playing stem is still heard
            assert amplitude(mix, 300 + 200 * i) > 0.05, i
        detail = json.loads(c.ask("/status.json")[0])
        assert detail["cache"]["evictions"] == 0 and detail["voices_playing"] == 3
