"""Replacing the sample of a playing buffer ID: the stem keeps playing from
the same position, crossfaded into the new sample by the engine (no click,
no gap, the old sample plays on while the new one decodes)."""

from __future__ import annotations

import threading

import numpy as np
import soundfile as sf

from stemdeck.control.controller import Controller
from stemdeck.engine import Engine
from stemdeck.media.loader import MediaLoader

from signals import SR, stereo, wave
VOLUME = 0.8
FREQ = 440.0
AMP = 0.5


def sine(path, seconds, phase=0.0, **kw):
    sf.write(path, stereo(wave(FREQ, seconds, AMP, phase=phase)), SR, **kw)
    return str(path), sf.read(path, dtype="float64")[0]


def engine():
    e = Engine(SR)
    e.set_eq_enabled(False)
    e.set_limiter(False)
    return e


def render(e, frames, block=256, during=None):
    out = np.zeros((frames, 2), np.float32)
    for pos in range(0, frames, block):
        chunk = out[pos:pos + block]
        buf = np.zeros_like(chunk)
        e.render(buf)
        chunk[:] = buf
        if during is not None:
            during(pos + len(buf))
    return out


# the steepest a 440 Hz sine at this level moves from one sample to the next
MAX_STEP = 2 * np.pi * FREQ / SR * AMP * VOLUME


def test_replacing_a_playing_buffer_crossfades_at_the_same_position(tmp_path):
    a_path, a = sine(tmp_path / "a.wav", 4.0, subtype="PCM_16")
    b_path, b = sine(tmp_path / "b.wav", 4.0, phase=np.pi, subtype="PCM_16")    # the worst case: inverted
    e = engine()
    c = Controller(e, loader=MediaLoader(e, cache_mb=64, immediate=True, readahead=False))
    c.handle("/load_buffer", [100, a_path])
    c.handle("/play_stem", [100, 1.0, VOLUME, 1])
    first = render(e, SR)
    assert c.handle("/load_buffer", [100, b_path]) == [("/done", ("/load_buffer", 100))]
    second = render(e, SR)
    out = np.concatenate([first, second])[:, 0].astype(np.float64)
    # no click anywhere: never a step bigger than the sine's own (plus the crossfade's slope)
    assert np.abs(np.diff(out[300:])).max() < MAX_STEP * 1.3
    # the same stem, same position: a before, b after
    n = np.arange(len(out))
    assert np.abs(out[2000:SR] - VOLUME * a[n[2000:SR], 0]).max() < 1e-6
    assert np.abs(out[SR + 1000:] - VOLUME * b[n[SR + 1000:], 0]).max() < 1e-6
    assert c.playing(100) and c.buffers[100].path == b_path


def test_the_old_sample_plays_on_while_the_new_one_decodes(tmp_path, monkeypatch):
    from stemdeck.media import decode

    a_path, a = sine(tmp_path / "a.wav", 4.0, subtype="PCM_16")
    b_path, b = sine(tmp_path / "b.flac", 4.0, phase=np.pi / 2)
    release = threading.Event()
    real = decode.load_audio_with_notes

    def slow(path, rate):
        release.wait(10)
        return real(path, rate)

    monkeypatch.setattr(decode, "load_audio_with_notes", slow)
    e = engine()
    ready = threading.Event()
    loader = MediaLoader(e, cache_mb=64)
    c = Controller(e, loader=loader, on_load_ready=ready.set)
    try:
        c.handle("/load_buffer", [100, a_path])
        assert ready.wait(10)
        c.poll()
        ready.clear()
        c.handle("/play_stem", [100, 1.0, VOLUME, 1])
        render(e, SR // 2)
        assert c.handle("/load_buffer", [100, b_path]) == []          # decoding in the background
        assert c.buffers[100].state == "loading"
        held = render(e, SR // 2)                                       # a plays on, no gap
        assert np.sqrt(np.mean(held[:, 0].astype(np.float64) ** 2)) > 0.25
        release.set()
        assert ready.wait(10)
        c.poll()
        assert c.replies[-1][1:] == ("/done", ("/load_buffer", 100))
        after = render(e, SR // 2)
    finally:
        release.set()
        loader.close()
    out = np.concatenate([held, after])[:, 0].astype(np.float64)
    assert np.abs(np.diff(out)).max() < MAX_STEP * 1.3
    n = np.arange(SR // 2, 2 * SR)[-(SR // 4):]       # the last quarter second is b
    assert np.abs(out[-(SR // 4):] - VOLUME * b[n, 0]).max() < 1e-5


def test_reloading_the_same_file_changes_nothing(tmp_path):
    a_path, _ = sine(tmp_path / "a.wav", 1.0, subtype="PCM_16")
    e = engine()
    loader = MediaLoader(e, cache_mb=64, immediate=True, readahead=False)
    c = Controller(e, loader=loader)
    c.handle("/load_buffer", [100, a_path])
    c.handle("/play_stem", [100])
    slot = c.buffers[100].slot
    assert c.handle("/load_buffer", [100, a_path]) == [("/done", ("/load_buffer", 100))]
    assert c.buffers[100].slot == slot and c.playing(100)
    assert loader.loads["mapped"] == 1
    assert loader.cache.peek(loader.key(a_path)).holds == 1
