"""Run `stemdeck serve` as a child process and wait for its start-up line,
with a deadline: a server that never says ``ready`` fails the test with
everything it printed, instead of hanging the suite until pytest-timeout."""

from __future__ import annotations

import queue
import socket
import subprocess
import sys
import threading
import time
from typing import Callable

READY_SECONDS = 180      # a first start on an empty kernel cache compiles for about a minute


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_ready(line: str) -> bool:
    return line.strip() == "ready"


def start_serve(args: list[str], *, until: Callable[[str], bool] = is_ready, env=None, cwd=None,
                timeout: float = READY_SECONDS) -> tuple[subprocess.Popen, str]:
    """Start ``stemdeck serve ARGS`` (stdout and stderr in one pipe) and read
    its lines until one satisfies ``until``. Returns the process and the text
    read so far; the rest stays in ``proc.stdout`` for ``communicate``."""
    proc = subprocess.Popen([sys.executable, "-m", "stemdeck", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in proc.stdout:
            lines.put(line)
            if until(line):
                return
        lines.put(None)                   # the process closed its output (it ended)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            proc.kill()
            proc.wait(10)
            raise AssertionError(f"stemdeck serve did not get ready in {timeout:.0f} s:\n" + "".join(seen))
        if line is None:
            proc.wait(10)
            raise AssertionError(f"stemdeck serve exited with status {proc.returncode} before it was "
                                 f"ready:\n" + "".join(seen))
        seen.append(line)
        if until(line):
            return proc, "".join(seen)
