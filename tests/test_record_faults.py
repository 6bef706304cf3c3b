"""`serve --record` when the disk fails under it: a real tmpfs filled by another
writer (ENOSPC) and a file size limit set on the running server (RLIMIT_FSIZE:
EFBIG, as on FAT32 past 4 GB). Each time the recording
stops with one error line naming the cause and the path, the server keeps
answering and playing, ``/status.json`` says ``failed`` with the cause, the
partial file is a valid WAV holding exactly the frames reported, and SIGINT
still ends the server with status 0. Permissions changed after the
file was opened do not stop it (Linux checks them at open)."""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import signal
import subprocess
import time

import numpy as np
import pytest
import soundfile as sf

from osctools import Client
from serveproc import free_port, start_serve
from signals import SR, sine


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs of the test's own (root only), unmounted afterwards."""
    folder = tmp_path / "disk"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    yield folder
    subprocess.run(["chattr", "-R", "-i", str(folder)], capture_output=True)
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


class Recording:
    """``stemdeck serve --backend null --record PATH`` playing a looped sine stem."""

    def __init__(self, tmp_path, path):
        self.path = path
        media = tmp_path / "media"
        media.mkdir(exist_ok=True)
        sf.write(media / "tone.wav", sine(440.0, 1.0, 0.4), SR, subtype="FLOAT")
        port = free_port()
        self.proc, self.startup = start_serve(
            ["--backend", "null", "--port", str(port), "--buffer-size", "256", "--record", str(path),
             "--media-root", str(media)], cwd=tmp_path)
        self.client = Client(("127.0.0.1", port))
        self.client.send("/load_buffer", 100, "tone.wav")
        assert self.client.expect("/done", first="/load_buffer", timeout=10) == ["/load_buffer", 100]
        self.client.send("/play_stem", 100, 1.0, 1.0, 1)

    def status(self) -> dict:
        return json.loads(self.client.ask("/status.json", timeout=5)[0])

    def wait_for(self, what, predicate, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if predicate(st):
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout} s; last /status.json: {st}")
            time.sleep(0.05)

    def stop(self) -> str:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        rest = self.proc.communicate(timeout=60)[0]
        return self.startup + rest


def _fails_and_plays_on(rec: Recording, code: str, cause: str) -> dict:
    """After the fault: failed with ``code``/``cause``; the server answers and the stem plays on."""
    st = rec.wait_for("failed recording", lambda s: s["recording"]["state"] == "failed")
    r = st["recording"]
    assert r["errno"] == code and cause in r["error"] and f": {code}, " in r["error"], r
    assert str(rec.path) in r["error"], r
    assert r["path"] == str(rec.path) and r["frames"] > 0.3 * SR
    assert r["seconds"] == pytest.approx(r["frames"] / SR, abs=1e-3)
    beats = st["tempo"]["beats"]
    later = rec.wait_for("the clock moving on", lambda s: s["tempo"]["beats"] > beats + 0.5)
    assert later["voices_playing"] == 1 and later["recording"] == r      # the music plays on
    return r


def _error_line(text: str, cause: str, code: str, path) -> str:
    lines = [line for line in text.splitlines() if f"recording to {path} stopped: " in line]
    assert len(lines) == 1, text
    assert cause in lines[0] and f": {code}, " in lines[0] and "the audio goes on" in lines[0]
    return lines[0]


def _holds(path, frames: int) -> None:
    """A valid WAV of exactly ``frames`` frames, its end the playing stem (not silence)."""
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.frames) == (SR, 2, frames)
    data, _ = sf.read(str(path), dtype="float32")
    assert len(data) == frames
    assert np.max(np.abs(data[-SR // 10:])) > 0.3


def test_a_full_disk_stops_the_recording_not_the_server(tmp_path, small_disk):
    path = small_disk / "x.wav"
    rec = Recording(tmp_path, path)
    try:
        rec.wait_for("half a second recorded", lambda s: s["recording"]["frames"] > SR // 2)
        assert rec.status()["recording"]["state"] == "recording"
        # another program fills the disk (a DJ copying tracks): the next write gets ENOSPC
        with open(small_disk / "ballast", "wb") as f:
            with pytest.raises(OSError) as full:
                while True:
                    f.write(b"\xff" * 65536)
                    f.flush()
        assert full.value.errno == errno.ENOSPC
        r = _fails_and_plays_on(rec, "ENOSPC", "disk full")
    finally:
        text = rec.stop()
    assert rec.proc.returncode == 0, text
    _error_line(text, "disk full", "ENOSPC", path)
    assert "System error" not in text
    assert re.search(r"recorded [\d.]+ s \(%d frames\) to .*the recording failed: disk full" % r["frames"],
                     text), text
    _holds(path, r["frames"])


def test_a_folder_made_unwritable_after_start_does_not_stop_the_recording(tmp_path):
    # Linux checks permission when a file is opened, not on each write: chmod
    # of the folder and the file (or chattr +i) leave the open recording
    # writable, so it rightly goes on. A permission error mid-recording
    # (EACCES/EPERM) comes from network file systems (NFS, SMB) or FUSE, and
    # is reported as "permission denied" like the faults tested here.
    folder = tmp_path / "rec"
    folder.mkdir()
    path = folder / "x.wav"
    rec = Recording(tmp_path, path)
    try:
        rec.wait_for("half a second recorded", lambda s: s["recording"]["frames"] > SR // 2)
        os.chmod(path, 0o444)
        os.chmod(folder, 0o500)
        frames = rec.status()["recording"]["frames"]
        st = rec.wait_for("a second more recorded", lambda s: s["recording"]["frames"] > frames + SR)
        assert st["recording"]["state"] == "recording" and st["recording"]["error"] is None
    finally:
        text = rec.stop()
        os.chmod(folder, 0o700)
    assert rec.proc.returncode == 0, text
    assert " stopped: " not in text
    assert sf.info(str(path)).frames > frames + SR


def test_a_file_size_limit_stops_the_recording_with_efbig(tmp_path):
    path = tmp_path / "x.wav"
    rec = Recording(tmp_path, path)
    try:
        rec.wait_for("half a second recorded", lambda s: s["recording"]["frames"] > SR // 2)
        # as `prlimit --fsize` (or systemd's LimitFSIZE) would: 0.5 s more, then EFBIG
        limit = os.path.getsize(path) + 176400 + 3          # not a whole frame: a torn last write
        resource.prlimit(rec.proc.pid, resource.RLIMIT_FSIZE, (limit, limit))
        r = _fails_and_plays_on(rec, "EFBIG", "file size limit reached")
    finally:
        text = rec.stop()
    assert rec.proc.returncode == 0, text
    _error_line(text, "file size limit reached", "EFBIG", path)
    assert os.path.getsize(path) == 80 + 8 * r["frames"]           # the torn frame was cut
    _holds(path, r["frames"])
