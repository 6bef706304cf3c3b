"""The render's loader (tools/render_prefetch.py): files decoded ahead, in plan order, a bounded number
ahead; what the render gets is what decoding on its own thread gives, in or out of plan order."""

from __future__ import annotations

import threading
import time

import numpy as np
import soundfile as sf

from stemdeck.media.simple_loaders import decode
from stemdeck.tools.render_prefetch import AHEAD, PrefetchLoader

SR = 44100


def files(tmp_path, n):
    paths = []
    for k in range(n):
        data = np.random.default_rng(k).uniform(-0.5, 0.5, (SR // 4, 2)).astype(np.float32)
        path = tmp_path / f"f{k}.wav"
        sf.write(path, data, SR if k % 2 else 48000, subtype="FLOAT")    # every other one resampled
        paths.append(str(path))
    return paths


class Counting:
    """The real decode, counting the files it has decoded."""

    def __init__(self):
        self.done = []
        self.lock = threading.Lock()

    def __call__(self, path, sample_rate):
        out = decode(path, sample_rate)
        with self.lock:
            self.done.append(path)
        return out


def wait_for(what, condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_files_are_decoded_ahead_but_never_more_than_AHEAD(tmp_path):
    paths = files(tmp_path, AHEAD + 4)
    load = Counting()
    loader = PrefetchLoader([(p, SR) for p in paths], load=load)
    try:
        wait_for(f"{AHEAD} files decoded ahead", lambda: len(load.done) == AHEAD)
        time.sleep(0.2)                  # give it the chance to go too far
        assert len(load.done) == AHEAD
        got = loader.submit(paths[0], SR).result(timeout=0)     # done when submit returns
        np.testing.assert_array_equal(got, decode(paths[0], SR))
        wait_for("one more once one is taken", lambda: len(load.done) == AHEAD + 1)
    finally:
        loader.close()


def test_skipped_and_unplanned_files_give_what_decoding_gives(tmp_path):
    paths = files(tmp_path, 8)
    loader = PrefetchLoader([(p, SR) for p in paths[:6]])
    try:
        # in order, then one skipped (paths[2]), one never planned, one at another rate, the rest
        asked = [(paths[0], SR), (paths[1], SR), (paths[3], SR), (paths[7], SR), (paths[4], 48000),
                 (paths[4], SR), (paths[5], SR), (paths[2], SR)]
        for path, rate in asked:
            np.testing.assert_array_equal(loader.submit(path, rate).result(timeout=0), decode(path, rate))
    finally:
        loader.close()


def test_a_file_that_cannot_be_decoded_fails_its_load_only(tmp_path):
    paths = files(tmp_path, 3)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really")
    loader = PrefetchLoader([(paths[0], SR), (str(broken), SR), (paths[1], SR)])
    try:
        assert loader.submit(paths[0], SR).exception(timeout=0) is None
        assert loader.submit(str(broken), SR).exception(timeout=0) is not None
        np.testing.assert_array_equal(loader.submit(paths[1], SR).result(timeout=0), decode(paths[1], SR))
    finally:
        loader.close()
