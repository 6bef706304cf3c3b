"""Every thread of a running server has its name at the OS level, as
`top -H` and `ps -L` show it (src/stemdeck/threads.py)."""

from __future__ import annotations

import os
import signal
import sys
import threading

import pytest

from serveproc import free_port, start_serve
from stemdeck.threads import name_this_thread

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _names(pid: int) -> set[str]:
    out = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                out.add(f.read().strip())
        except OSError:
            pass              # a thread that just ended
    return out


def test_a_thread_names_itself_for_the_os():
    seen = []

    def run():
        name_this_thread("sd-a-much-too-long-name")
        seen.append(open(f"/proc/self/task/{threading.get_native_id()}/comm").read().strip())

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen == ["sd-a-much-too-long-name"[:15]]      # Linux keeps 15 bytes


def test_serve_threads_show_their_names():
    proc, text = start_serve(["--backend", "null", "--port", str(free_port())])
    try:
        names = _names(proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    expected = {"sd-null-clock", "sd-telemetry", "sd-loader-open", "sd-decode-0", "sd-readahead",
                "sd-osc-reporter"}
    assert expected <= names, f"missing {sorted(expected - names)}; the OS shows {sorted(names)}"
