"""Every refusal, as the client sees it (its ``/fail`` reply through the
Controller and the MediaLoader), and that a refused file changes nothing:
the buffer keeps what it held, what plays keeps playing, no engine command
is posted, and the media layer logs nothing of its own (the server logs
the ``/fail`` once)."""

from __future__ import annotations

import builtins
import logging
import os
import struct
import threading

import numpy as np
import pytest
import soundfile as sf

from stemdeck.control.controller import Controller
from stemdeck.control.planning import RecordingEngine
from stemdeck.engine import Engine
from stemdeck.media.loader import MediaLoader

from signals import SR, sine


def wav(path, seconds=0.5, **kw):
    sf.write(path, sine(440.0, seconds, 0.5), SR, **kw)
    return str(path)


def make_bad(tmp_path, case):
    """(path, the start of the reason) for one kind of bad file."""
    p = tmp_path / case
    if case == "missing.wav":
        return str(p), f"no such file: {p}"
    if case == "folder":
        p.mkdir()
        return str(p), f"a directory, not an audio file: {p}"
    if case == "pipe.wav":
        os.mkfifo(p)
        return str(p), f"not a regular file (device, pipe or socket): {p}"
    if case == "empty.wav":
        p.write_bytes(b"")
        return str(p), f"empty file (0 bytes): {p}"
    if case == "song.txt":
        p.write_text("la la la\n" * 100)
        return str(p), f"not an audio file: {p} (it holds text"
    if case == "cover.wav":
        p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(300))
        return str(p), f"not an audio file: {p} (it is a PNG image"
    if case == "head.wav":
        raw = open(wav(tmp_path / "src.wav"), "rb").read()
        p.write_bytes(raw[:20])
        return str(p), f"truncated or corrupt header: {p} looks like WAV"
    if case == "corrupt.wav":
        raw = bytearray(open(wav(tmp_path / "src.wav"), "rb").read())
        raw[12:36] = b"\xa5" * 24
        p.write_bytes(raw)
        return str(p), f"truncated or corrupt header: {p}"
    if case == "aac.wav":
        raw = bytearray(open(wav(tmp_path / "src.wav", subtype="PCM_16"), "rb").read())
        raw[20:22] = struct.pack("<H", 0x00FF)
        p.write_bytes(raw)
        return str(p), f"unsupported format: {p} is a WAV file whose audio is encoded as AAC"
    if case == "song.m4a":
        p.write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00" + bytes(512))
        return str(p), f"unsupported format: {p} is an MP4/M4A file"
    if case == "silent.wav":
        sf.write(p, np.zeros((0, 2)), SR)
        return str(p), f"no audio in file (0 frames): {p}"
    if case == "half.flac":
        raw = open(wav(tmp_path / "src.flac", seconds=3.0), "rb").read()
        p.write_bytes(raw[:len(raw) // 2])
        return str(p), f"corrupt audio data: {p} cannot be decoded past 0:01."
    if case == "huge.flac":
        sf.write(p, np.zeros((SR * 20, 2), np.float32), SR)       # 6.7 MB decoded; budget 4 MB
        return str(p), f"larger than the memory budget: {p} needs 6.73 MB of memory"
    raise AssertionError(case)


CASES = ["missing.wav", "folder", "pipe.wav", "empty.wav", "song.txt", "cover.wav", "head.wav",
         "corrupt.wav", "aac.wav", "song.m4a", "silent.wav", "half.flac", "huge.flac"]


def setup(tmp_path, *, immediate=True, engine=None):
    engine = engine or RecordingEngine(SR)
    loader = MediaLoader(engine if isinstance(engine, Engine) else None, cache_mb=4, immediate=immediate)
    return engine, loader, Controller(engine, loader=loader)


@pytest.mark.parametrize("case", CASES)
def test_each_refusal_is_a_fail_reply_with_its_reason_and_changes_nothing(tmp_path, case, caplog):
    engine, loader, c = setup(tmp_path)
    good = wav(tmp_path / "good.wav")
    c.handle("/load_buffer", [1100, good])
    c.handle("/play_stem", [1100])
    before = list(engine.calls)
    held = c.buffers[1100]
    path, reason = make_bad(tmp_path, case)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="stemdeck"):
        replies = c.handle("/load_buffer", [1100, path])
    assert len(replies) == 1
    address, (what, text) = replies[0]
    assert (address, what) == ("/fail", "/load_buffer")
    assert text.startswith(f"buffer 1100: {reason}"), text
    # nothing else changed
    assert engine.calls == before
    assert c.buffers[1100] is held and held.state == "ready" and c.playing(1100)
    assert loader.cache.peek(loader.key(good)).holds == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and path in r.getMessage()]
    # and the next good load works
    assert c.handle("/load_buffer", [1101, good]) == [("/done", ("/load_buffer", 1101))]


def test_unreadable_file(tmp_path, monkeypatch):
    engine, loader, c = setup(tmp_path)
    path = wav(tmp_path / "locked.wav")
    real_open = builtins.open

    def deny(file, *args, **kwargs):
        if os.fspath(file) == path:
            raise PermissionError(13, "Permission denied", path)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", deny)
    (reply,) = c.handle("/load_buffer", [100, path])
    assert reply[1][1].startswith(f"buffer 100: cannot read (permission denied): {path}; check the permissions")


@pytest.mark.parametrize("case", ["missing.wav", "song.txt", "half.flac"])
def test_cue_and_play_refusals(tmp_path, case):
    engine, loader, c = setup(tmp_path)
    good = wav(tmp_path / "good.wav")
    path, reason = make_bad(tmp_path, case)
    c.handle("/play", ["B", good, 0.0])
    before = list(engine.calls)
    (reply,) = c.handle("/cue", ["B", path])
    assert reply[:2] == ("/fail", ("/cue", reply[1][1]))
    assert reply[1][1].startswith(f"buffer 1100 failed to load: {reason}")
    (reply,) = c.handle("/play", ["B", path, 0.0])
    assert reply[0] == "/fail" and reply[1][1].startswith(f"buffer 1100 failed to load: {reason}")
    # deck B still plays its song, untouched
    assert engine.calls == before
    assert c.buffers[1100].path == good and c.playing(1100)
    assert c.handle("/start_group", [0.0, "B"]) == []        # already playing: left alone


def test_a_refused_cue_on_an_empty_deck_says_so_at_start_group(tmp_path):
    engine, loader, c = setup(tmp_path)
    path, reason = make_bad(tmp_path, "song.txt")
    (reply,) = c.handle("/cue", ["C", path])
    assert reply[1][1].startswith(f"buffer 2100 failed to load: {reason}")
    (reply,) = c.handle("/start_group", [0.0, "C"])
    assert reply[1][1].startswith(f"deck C failed to load: {reason}")


def test_refusals_through_the_threaded_loader_keep_the_music_playing(tmp_path):
    """With a real engine and loader threads: a bad reload of a playing buffer
    leaves the render bit-identical to a run that never sent it."""
    good = wav(tmp_path / "good.wav", seconds=2.0)
    bad, _ = make_bad(tmp_path, "song.txt")
    outs = []
    for send_bad in (False, True):
        e = Engine(SR)
        ready = threading.Event()
        loader = MediaLoader(e, cache_mb=64)
        c = Controller(e, loader=loader, on_load_ready=ready.set)
        try:
            c.handle("/load_buffer", [100, good])
            assert ready.wait(10)
            c.poll()
            c.handle("/play_stem", [100, 1.0, 0.8, 1])
            out = np.zeros((SR, 2), np.float32)
            e.render(out[:SR // 2])
            if send_bad:
                ready.clear()
                assert c.handle("/load_buffer", [100, bad]) == []     # answered when the loader is done
                assert ready.wait(10)
                c.poll()
                assert c.replies[-1][1:] == ("/fail", ("/load_buffer", c.replies[-1][2][1]))
                assert "not an audio file" in c.replies[-1][2][1]
            e.render(out[SR // 2:])
            outs.append(out)
        finally:
            loader.close()
    assert np.abs(outs[0]).max() > 0.3
    assert np.array_equal(outs[0], outs[1])
