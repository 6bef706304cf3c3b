"""Files changed under playback: truncated, overwritten in place, deleted, or
replaced by a rename, while their stems play. The server lives, answers, tells
subscribers, and what it plays is exactly what an offline render of the
original files gives (the changed stem plays on from what it had)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from osctools import Client
from serveproc import free_port, start_serve
from signals import SR, stereo, wave
from stemdeck.media import guard
from stemdeck.media.loader import MediaLoader

pytestmark = pytest.mark.skipif(not guard.SUPPORTED, reason="file leases are Linux-only")


def _tone(seconds: float, freq: float, amp: float) -> np.ndarray:
    return stereo(wave(freq, seconds, amp) * (0.6 + wave(0.5, seconds, 0.4)))


def _wav(path, seconds: float, freq: float, amp: float = 0.3) -> str:
    sf.write(path, _tone(seconds, freq, amp), SR, subtype="PCM_16")   # 16-bit at the rate: mapped
    return str(path)


def _truncate(path: str) -> None:
    """`truncate -s 100000 FILE`, as a user types it. coreutils opens without
    waiting (O_NONBLOCK), so while the server copies the file it is told to try
    again (EAGAIN): a second try goes through."""
    for _ in range(50):
        if subprocess.run(["truncate", "-s", "100000", path], capture_output=True).returncode == 0:
            return
        time.sleep(0.05)
    raise AssertionError("truncate never got through")


def _overwrite(path: str, other: str) -> None:
    subprocess.run(["cp", other, path], check=True)          # truncates, then writes


def _delete(path: str, other: str) -> None:
    os.unlink(path)


def _rename_over(path: str, other: str) -> None:
    tmp = path + ".new"
    shutil.copy(other, tmp)
    os.rename(tmp, path)


OPS = {"truncate": lambda path, other: _truncate(path), "overwrite": _overwrite, "delete": _delete,
       "rename_over": _rename_over}


# -- the loader alone: a reader that never stops, as the audio thread -------------------------------

@pytest.mark.parametrize("op", sorted(OPS))
def test_a_mapped_sample_reads_the_same_while_its_file_changes(tmp_path, op):
    path = _wav(tmp_path / "track.wav", 20.0, 441.0)
    other = _wav(tmp_path / "other.wav", 3.0, 1000.0)
    events = []
    loader = MediaLoader(None, cache_mb=512, immediate=True)
    loader.on_file_event = lambda *e: events.append(e)
    data = loader.submit(path, SR).result()
    assert loader.loads["mapped"] == 1
    before = np.array(data)
    stop = threading.Event()
    reads = []

    def reader():                      # touches every page, as a playing voice would
        while not stop.is_set():
            reads.append(int(data[::1024].astype(np.int64).sum()))

    t = threading.Thread(target=reader)
    t.start()
    try:
        OPS[op](path, other)
        deadline = time.monotonic() + 5
        while not events and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        t.join()
    assert np.array_equal(np.array(data), before), "the sample changed with its file"
    assert len(set(reads)) == 1
    what = {"truncate": "written", "overwrite": "written", "delete": "deleted", "rename_over": "replaced"}[op]
    assert events and events[0] == (what, path, "copied" if what == "written" else "kept"), events
    status = loader.cache_status()
    if what == "written":       # now in the process's memory, counted against the budget
        assert status["mapped_files"] == 0 and status["in_use_mb"] > 0


def test_an_unused_cached_sample_is_dropped_not_copied_and_reloads_the_new_file(tmp_path):
    path = _wav(tmp_path / "track.wav", 5.0, 441.0)
    other = _wav(tmp_path / "other.wav", 3.0, 1000.0)
    loader = MediaLoader(None, cache_mb=512, immediate=True)
    data = loader.submit(path, SR).result()
    loader.release_sample(loader.key(path))          # no buffer uses it: cached only
    del data
    _overwrite(path, other)
    again = loader.submit(path, SR).result()
    assert again.shape[0] == 3 * SR                  # the new file, read again
    assert loader.cache_status()["used_mb"] == 0     # nothing was copied into memory


def test_a_file_open_for_writing_is_read_into_memory_not_mapped(tmp_path, caplog):
    caplog.set_level(logging.INFO, "stemdeck.media")
    path = _wav(tmp_path / "growing.wav", 2.0, 441.0)
    loader = MediaLoader(None, cache_mb=512, immediate=True)
    with open(path, "r+b"):                          # another program still writing it
        data = loader.submit(path, SR).result()
    assert loader.loads == {**loader.loads, "mapped": 0, "copied": 1}
    assert "another program has it open for writing" in caplog.text
    assert data.shape[0] == 2 * SR


# -- the live server --------------------------------------------------------------------------------

SCORE = """\
0.0 /load_buffer 100 a.wav a
0.0 /load_buffer 1100 b.wav b
0.0 /play_stem 100 1.0 0.8 1
0.0 /play_stem 1100 1.0 0.6 1
"""
RENDER_SECONDS = 3.0


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """The score rendered offline from the original files."""
    from stemdeck.tools.render import render_score

    folder = tmp_path_factory.mktemp("offline")
    _wav(folder / "a.wav", 2.0, 441.0)
    _wav(folder / "b.wav", 1.5, 1000.0, 0.2)
    (folder / "set.score").write_text(SCORE)
    render_score(folder / "set.score", folder / "offline.wav", block_size=256, duration=RENDER_SECONDS,
                 subtype="FLOAT", progress=False)
    return sf.read(folder / "offline.wav", dtype="float32")[0]


@pytest.mark.parametrize("op", sorted(OPS))
def test_serve_plays_on_while_a_playing_file_changes(tmp_path, offline, op):
    victim = _wav(tmp_path / "a.wav", 2.0, 441.0)
    _wav(tmp_path / "b.wav", 1.5, 1000.0, 0.2)
    other = _wav(tmp_path / "other.wav", 0.5, 200.0)
    (tmp_path / "set.score").write_text(SCORE)
    port = free_port()
    rec = tmp_path / "live.wav"
    proc, text = start_serve(["--backend", "null", "--buffer-size", "256", "--port", str(port),
                              "--record", str(rec), "--score", str(tmp_path / "set.score")],
                             until=lambda line: "starts at engine frame" in line)
    start = int(text.rsplit("starts at engine frame", 1)[1].split()[0])
    client = Client(("127.0.0.1", port))
    try:
        client.ask("/notify", 1, reply="/done")
        deadline = time.monotonic() + 30
        while True:          # both stems playing (the score starts half a second after ready)
            detail = json.loads(client.ask("/status.json")[0])
            if detail.get("frame", 0) > start + SR // 2 or time.monotonic() > deadline:
                break
        OPS[op](victim, other)
        what = {"truncate": "written", "overwrite": "written", "delete": "deleted",
                "rename_over": "replaced"}[op]
        assert client.expect("/file", timeout=10) == [what, victim, "copied" if what == "written" else "kept"]
        while json.loads(client.ask("/status.json")[0]).get("frame", 0) < start + int(RENDER_SECONDS * SR):
            assert time.monotonic() < deadline + 30, "the engine stopped"
        status = client.status()
        assert status, "no /status.reply after the change"
    finally:
        client.close()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, text + out
    assert "while in use" in text + out
    live, _ = sf.read(rec, dtype="float32")
    segment = live[start:start + len(offline)]
    assert len(segment) == len(offline)
    # every stem, the changed one too, is what the original files render to
    assert np.max(np.abs(segment - offline)) < 1e-5
    assert np.sqrt(np.mean(offline ** 2)) > 0.05


def test_a_dropped_loader_lets_go_of_its_files(tmp_path):
    """The guard must not keep a loader's mappings alive: a loader dropped
    with samples in its cache releases their leases and pages."""
    import gc

    g = guard.file_guard()
    path = _wav(tmp_path / "a.wav", 2.0, 441.0)
    loader = MediaLoader(None, cache_mb=512, immediate=True)
    data = loader.submit(path, SR).result()
    assert g.guarding(path)
    del data, loader
    gc.collect()
    assert not g.guarding(path)
