"""--preload: folders and list files, read and loaded in the background while
the server already answers; list IDs addressable (commands wait for them),
folder files addressable by path (from the cache); client loads go first;
nothing is evicted for a preload."""

from __future__ import annotations

import argparse
import io
import os
import threading

import pytest
import soundfile as sf

from stemdeck.control.controller import Controller
from stemdeck.control.planning import RecordingEngine
from stemdeck.errors import UsageError
from stemdeck.media import decode
from stemdeck.media.loader import MediaLoader
from stemdeck.media.preload import Item, add_arguments, read_sources, start_preload

from signals import SR, sine


def audio(path, seconds=0.25, fmt=None, freq=440.0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, sine(freq, seconds, 0.3), SR, format=fmt)
    return str(path)


@pytest.fixture
def library(tmp_path):
    root = tmp_path / "lib"
    files = [audio(root / "a.wav"), audio(root / "b.flac"), audio(root / "sub" / "c.wav"),
             audio(root / "sub" / "d.aiff")]
    (root / "notes.txt").write_text("not audio")
    audio(root / ".hidden" / "x.wav")
    audio(root / ".y.wav")
    return root, files


class Gate:
    """Makes decodes wait until released, and records their order."""

    def __init__(self, monkeypatch):
        self.release = threading.Event()
        self.order = []
        self.started = threading.Event()
        real = decode.load_audio_with_notes

        def slow(path, rate):
            self.order.append(os.path.basename(path))
            self.started.set()
            self.release.wait(10)
            return real(path, rate)

        monkeypatch.setattr(decode, "load_audio_with_notes", slow)


def live(cache_mb=64):
    ready = threading.Event()
    engine = RecordingEngine(SR)
    loader = MediaLoader(cache_mb=cache_mb)
    c = Controller(engine, loader=loader, on_load_ready=ready.set)
    return c, loader, ready


def settle(c, preload, timeout=10):
    assert preload.wait(timeout)
    for _ in range(100):
        c.poll()
        if not c.loading:
            return
        threading.Event().wait(0.01)


# -- reading the flags -------------------------------------------------------------------------------

def test_a_folder_is_scanned_for_audio_files(library):
    root, files = library
    items = read_sources([str(root)])
    assert [i.path for i in items] == sorted(files, key=lambda p: (os.path.dirname(p) != str(root), p))
    assert all(i.buffer_id is None for i in items)


def test_a_list_file_gives_ids_names_and_relative_paths(tmp_path, library):
    root, files = library
    lst = tmp_path / "set.txt"
    lst.write_text("# my set\n"
                   "100 lib/a.wav drums\n"
                   "\n"
                   "1100 'lib/sub/c.wav' lead vocal   # comment\n"
                   f"2100 {files[1]}\n")
    items = read_sources([str(lst)])
    assert [(i.buffer_id, i.path, i.name) for i in items] == [
        (100, str(tmp_path / "lib/a.wav"), "drums"),
        (1100, str(tmp_path / "lib/sub/c.wav"), "lead vocal"),
        (2100, files[1], None)]
    assert items[1].origin == f"{lst}:4"


@pytest.mark.parametrize("line, words", [
    ("abc song.wav", "buffer ID 'abc' is not a whole number"),
    ("100", "expected 'id path [name]'"),
    ("9999 song.wav", "buffer ID 9999 out of range 0..8190"),
    ("100 'unclosed.wav", "quote paths with spaces"),
])
def test_bad_list_lines_name_the_line(tmp_path, line, words):
    lst = tmp_path / "set.txt"
    lst.write_text("# ok\n" + line + "\n")
    with pytest.raises(UsageError) as info:
        read_sources([str(lst)])
    assert str(info.value).startswith(f"--preload {lst}:2: ")
    assert words in str(info.value)


def test_missing_sources_and_duplicate_ids_are_usage_errors(tmp_path, library):
    with pytest.raises(UsageError, match="no such file or folder"):
        read_sources([str(tmp_path / "nope")])
    (tmp_path / "one.txt").write_text("100 lib/a.wav\n")
    (tmp_path / "two.txt").write_text("# x\n100 lib/b.flac\n")
    with pytest.raises(UsageError, match=r"buffer ID 100 is already given at .*one.txt:1"):
        read_sources([str(tmp_path / "one.txt"), str(tmp_path / "two.txt")])


def test_the_flag_is_repeatable():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--preload", "a", "--preload", "b.txt"])
    assert args.preload == ["a", "b.txt"]
    assert parser.parse_args([]).preload == []


# -- running -------------------------------------------------------------------------------------------

def test_preload_by_folder_then_load_by_path_from_the_cache(library):
    root, files = library
    c, loader, ready = live()
    try:
        p = start_preload(c, [str(root)], progress=False)
        settle(c, p)
        assert p.counts()["ready"] == 4
        assert not c.buffers                                   # in the cache, no buffer yet
        assert loader.loads["decoded"] + loader.loads["mapped"] + loader.loads["copied"] == 4
        before = dict(loader.loads)
        c.handle("/load_buffer", [100, files[1]])              # the FLAC: no second decode
        c.handle("/cue", ["B", files[0]])
        for _ in range(200):
            c.poll()
            if len(c.replies) == 2:
                break
            threading.Event().wait(0.01)
        assert [r[1:] for r in c.replies] == [("/done", ("/load_buffer", 100)), ("/done", ("/cue", 1100))]
        assert loader.loads["cached"] == before["cached"] + 2
        assert loader.loads["decoded"] == before["decoded"] and loader.loads["mapped"] == before["mapped"]
        # preloaded and unused: kept by /mixer_cleanup
        c.handle("/mixer_cleanup")
        assert len(loader.cache.entries()) == 4
    finally:
        loader.close()


def test_preload_by_list_binds_ids_and_the_server_answers_meanwhile(tmp_path, library, monkeypatch):
    root, files = library
    lst = tmp_path / "set.txt"
    lst.write_text(f"100 {files[1]} bass\n1100 {files[0]}\n2100 {tmp_path / 'missing.wav'}\n")
    gate = Gate(monkeypatch)
    c, loader, ready = live()
    try:
        p = start_preload(c, [str(lst)], progress=False)
        assert not p.done.is_set()                 # start returned; the FLAC is still decoding
        assert gate.started.wait(5)
        # the server answers while preloading
        assert c.handle("/status")[0][0] == "/status.reply"
        assert c.handle("/play_stem", [100, 1.0, 0.5]) == []      # waits for its preload
        assert c.buffers[100].state == "loading"
        gate.release.set()
        settle(c, p)
        got = [r[1:] for r in c.replies if r[1] in ("/done", "/fail")]
        assert sorted(got, key=str) == sorted([
            ("/fail", ("/load_buffer", f"buffer 2100: no such file: {tmp_path / 'missing.wav'}")),
            ("/done", ("/load_buffer", 1100)),
            ("/done", ("/load_buffer", 100)),
        ], key=str)
        # (no order between them: the missing file fails on another loader thread,
        # which may answer before or after the gated decode)
        assert c.buffers[100].name == "bass" and c.buffers[1100].state == "ready"
        assert c.playing(100)                                     # the waiting /play_stem ran
        counts = p.counts()
        assert (counts["ready"], counts["failed"]) == (2, 1)
        assert "2 of 3 files ready" in p.summary() and "1 failed" in p.summary()
    finally:
        gate.release.set()
        loader.close()


def test_client_loads_go_before_queued_preloads(tmp_path, monkeypatch):
    pre = [audio(tmp_path / "pre" / f"p{i}.flac") for i in range(3)]
    mine = audio(tmp_path / "mine.flac")
    wav = audio(tmp_path / "cue.wav")
    gate = Gate(monkeypatch)
    c, loader, ready = live()
    try:
        p = start_preload(c, [str(tmp_path / "pre")], progress=False)
        assert gate.started.wait(5)                             # p0 decoding, p1 and p2 queued
        c.handle("/load_buffer", [100, mine])
        c.handle("/cue", ["B", wav])                            # mapped: does not wait for decodes
        for _ in range(200):
            c.poll()
            if c.replies:
                break
            threading.Event().wait(0.01)
        assert c.replies[0][1:] == ("/done", ("/cue", 1100))
        gate.release.set()
        settle(c, p)
        assert gate.order == ["p0.flac", "mine.flac", "p1.flac", "p2.flac"]
    finally:
        gate.release.set()
        loader.close()


def test_a_file_preloaded_and_requested_at_once_is_decoded_once(tmp_path, monkeypatch):
    song = audio(tmp_path / "lib" / "song.flac")
    gate = Gate(monkeypatch)
    c, loader, ready = live()
    try:
        p = start_preload(c, [str(tmp_path / "lib")], progress=False)
        assert gate.started.wait(5)
        c.handle("/load_buffer", [100, song])
        gate.release.set()
        settle(c, p)
        assert c.buffers[100].state == "ready"
        assert gate.order == ["song.flac"] and loader.loads["decoded"] == 1
        assert loader.cache.peek(loader.key(song)).holds == 1       # the buffer's; the preload's is back
    finally:
        gate.release.set()
        loader.close()


def test_preloads_that_do_not_fit_are_skipped_not_evicting(tmp_path):
    big = [audio(tmp_path / "lib" / f"s{i}.flac", seconds=2.0) for i in range(3)]     # 0.67 MB each
    c, loader, ready = live(cache_mb=1.5)
    try:
        c.handle("/load_buffer", [100, audio(tmp_path / "mine.flac", seconds=1.0)])  # 0.34 MB in use
        p = start_preload(c, [str(tmp_path / "lib")], progress=False)
        settle(c, p)
        counts = p.counts()
        assert (counts["ready"], counts["skipped"]) == (1, 2)
        assert "2 skipped: the memory budget (--cache-mb) is full" in p.summary()
        assert loader.cache.evictions == 0
        # a client load may evict the unused preload
        c.handle("/load_buffer", [101, big[1]])
        for _ in range(200):
            c.poll()
            if not c.loading:
                break
            threading.Event().wait(0.01)
        assert c.buffers[101].state == "ready" and loader.cache.evictions == 1
    finally:
        loader.close()


def test_progress_bar_on_a_terminal(library):
    root, files = library

    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    c, loader, ready = live()
    try:
        p = start_preload(c, [Item(f) for f in files], out=out)
        settle(c, p)
        p._thread.join(5)
    finally:
        loader.close()
    text = out.getvalue()
    assert p.progress_line().startswith("preload [" + "#" * 24 + "] 4/4 files")
    assert text.endswith("\r\x1b[K")                  # the bar is cleared; the summary goes to the log


def test_nothing_to_preload():
    c, loader, ready = live()
    assert start_preload(c, []) is None
    loader.close()
