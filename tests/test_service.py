"""``stemdeck serve`` under a service manager: sd_notify's READY, WATCHDOG, STATUS, STOPPING.

Each test binds its own unix datagram socket (a path, or an ``@abstract``
name) and runs a real ``stemdeck serve`` with ``NOTIFY_SOCKET`` pointing at
it, as systemd would (``examples/stemdeck.service``). The stuck stream is a
real one: the audio callback busy-waits for seconds through the existing
test hook ``STEMDECK_TEST_LATE_CALLBACK_MS`` (tools/serve.py), so no frames
are rendered; the lost device is a JACK dummy server killed under the server.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from serveproc import READY_SECONDS, free_port

WATCHDOG_USEC = 400_000                # systemd would restart after 0.4 s without a ping
PING_LIMIT = WATCHDOG_USEC / 1e6
STALL_MS = 2500                        # the stuck callback


class Notify:
    """The test's end of ``NOTIFY_SOCKET``: every message with its arrival time."""

    def __init__(self, tmp_path, abstract: bool):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"stemdeck-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
        else:
            path = str(tmp_path / "notify.sock")
            self.sock.bind(path)
            self.env_value = path
        self.messages: list[tuple[float, str]] = []

    def receive(self, proc, output, until, timeout: float, what: str) -> None:
        """Receive until ``until()`` holds. Fails with the server's output if
        the server ends or the deadline passes first."""
        deadline = time.monotonic() + timeout
        while not until():
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                raise AssertionError(f"no {what} on NOTIFY_SOCKET within {timeout:.0f} s (serve "
                                     f"{'exited ' + str(proc.returncode) if proc.poll() is not None else 'running'}); "
                                     f"got {[m for _, m in self.messages]}; serve said:\n{output.read_text()}")
            self.sock.settimeout(min(left, 1.0))
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def wait_for(self, proc, output, line: str, timeout: float, after: float = 0.0) -> float:
        """The arrival time of the first message after ``after`` with a line starting with ``line``."""
        self.receive(proc, output, lambda: self.after(after, line), timeout, repr(line))
        return self.after(after, line)[0]

    def after(self, t: float, line: str) -> list[float]:
        """Arrival times of the messages after ``t`` with a line starting with ``line``."""
        return [at for at, m in self.messages if at > t and any(x.startswith(line) for x in m.split("\n"))]

    def close(self):
        self.sock.close()


def start(tmp_path, notify: Notify, *args, env=None, **extra_env) -> tuple[subprocess.Popen, object]:
    """``stemdeck serve ARGS`` with NOTIFY_SOCKET set; its output goes to a file the test reads."""
    output = tmp_path / "serve.out"
    env = dict(env if env is not None else os.environ, NOTIFY_SOCKET=notify.env_value, **extra_env)
    with open(output, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stemdeck", "serve", *map(str, args)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    return proc, output


@pytest.fixture
def notified(tmp_path):
    """Start serve with a notify socket of the test's own; killed and closed afterwards."""
    made = []

    def run(*args, abstract=False, env=None, **extra_env):
        notify = Notify(tmp_path, abstract)
        proc, output = start(tmp_path, notify, *args, env=env, **extra_env)
        made.append((proc, notify))
        return proc, output, notify

    yield run
    for proc, notify in made:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        notify.close()


def null_serve_args():
    return ["--backend", "null", "--buffer-size", "256", "--port", free_port()]


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:])]


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_ready_then_watchdog_pings_while_audio_runs_then_stopping(notified, abstract):
    proc, output, notify = notified(*null_serve_args(), abstract=abstract, WATCHDOG_USEC=str(WATCHDOG_USEC))
    ready_at = notify.wait_for(proc, output, "READY=1", READY_SECONDS)
    # serve wrote (and flushed) 'ready' before it sent READY=1: it is in the file already
    assert "ready" in output.read_text().splitlines(), output.read_text()
    ready_message = next(m for _, m in notify.messages if "READY=1" in m)
    assert "STATUS=playing: 44100 Hz, 256-frame blocks, null backend" in ready_message

    # ten pings, each within the watchdog timeout of the one before
    notify.receive(proc, output, lambda: len(notify.after(ready_at, "WATCHDOG=1")) >= 10, 20, "10 pings")
    pings = [ready_at] + notify.after(ready_at, "WATCHDOG=1")
    assert max(gaps(pings)) < PING_LIMIT, (gaps(pings), output.read_text())
    # half the interval, not faster: the server wakes no more often than the watchdog needs
    assert min(gaps(pings[1:])) > PING_LIMIT / 4, gaps(pings)

    proc.send_signal(signal.SIGTERM)
    stopping_at = notify.wait_for(proc, output, "STOPPING=1", 10)
    assert proc.wait(10) == 0, output.read_text()
    assert not notify.after(stopping_at, "WATCHDOG=1")


def test_watchdog_pings_stop_while_the_audio_callback_is_stuck_and_resume_after(notified):
    proc, output, notify = notified(*null_serve_args(), WATCHDOG_USEC=str(WATCHDOG_USEC),
                                    STEMDECK_TEST_LATE_CALLBACK_MS=str(STALL_MS))
    ready_at = notify.wait_for(proc, output, "READY=1", READY_SECONDS)
    # half a second of audio after ready, one callback spins for STALL_MS: no frame is rendered
    stuck_at = notify.wait_for(proc, output, "STATUS=stuck: no audio rendered", 20, after=ready_at)
    resumed_at = notify.wait_for(proc, output, "WATCHDOG=1", STALL_MS / 1000 + 10, after=stuck_at)
    before = [t for t in [ready_at] + notify.after(ready_at, "WATCHDOG=1") if t < stuck_at]
    silence = resumed_at - before[-1]
    # systemd would have restarted it: no ping for far longer than WatchdogSec ...
    assert silence > PING_LIMIT * 3, (silence, notify.messages)
    # ... and the pings stopped only for the stall (plus a look or two either side)
    assert silence < STALL_MS / 1000 + 3, (silence, notify.messages)
    assert "STATUS=playing" in next(m for t, m in notify.messages if t == resumed_at)
    notify.receive(proc, output, lambda: len(notify.after(resumed_at, "WATCHDOG=1")) >= 3, 10, "pings again")
    text = output.read_text()
    assert "watchdog: the engine's clock has not moved for" in text, text
    assert "watchdog: the engine's clock moves again" in text, text


def test_no_watchdog_pings_when_watchdog_pid_names_another_process(notified):
    proc, output, notify = notified(*null_serve_args(), WATCHDOG_USEC=str(WATCHDOG_USEC), WATCHDOG_PID="1")
    ready_at = notify.wait_for(proc, output, "READY=1", READY_SECONDS)
    # absence can only be seen by waiting: several watchdog intervals
    notify.receive(proc, output, lambda: time.monotonic() > ready_at + 5 * PING_LIMIT, 10, "time to pass")
    assert not notify.after(0, "WATCHDOG=1"), notify.messages
    proc.send_signal(signal.SIGINT)
    notify.wait_for(proc, output, "STOPPING=1", 10)
    assert proc.wait(10) == 0


@pytest.mark.jack
def test_a_lost_device_keeps_the_pings_through_the_reconnect_window_then_exits_1(notified, jack_server):
    # the decision documented in stemdeck.service: reconnecting is the server's own recovery, so
    # systemd leaves it alone for --reconnect; a device still gone then ends it with status 1
    # (Restart=on-failure)
    reconnect = 2
    proc, output, notify = notified("--buffer-size", 128, "--reconnect", reconnect, "--port", free_port(),
                                    env=jack_server.env, WATCHDOG_USEC=str(WATCHDOG_USEC))
    ready_at = notify.wait_for(proc, output, "READY=1", READY_SECONDS)
    notify.wait_for(proc, output, "WATCHDOG=1", 10, after=ready_at)
    jack_server.kill()
    lost_at = notify.wait_for(proc, output, "STATUS=audio device lost, reconnecting", 15, after=ready_at)
    stopping_at = notify.wait_for(proc, output, "STOPPING=1", reconnect + 15, after=lost_at)
    assert proc.wait(10) == 1, output.read_text()
    assert "not back after 2 s" in output.read_text()
    pings = [lost_at] + [t for t in notify.after(lost_at, "WATCHDOG=1") if t < stopping_at]
    assert pings[-1] - pings[0] > reconnect - 1, (pings, notify.messages)   # through the window
    assert max(gaps(pings)) < PING_LIMIT, (gaps(pings), output.read_text())
    assert not notify.after(ready_at, "STATUS=stuck"), notify.messages     # not even while noticing the loss


def test_a_reconnect_that_hangs_past_its_window_is_judged_stuck():
    """A reconnect that never ends (its thread hung) cannot be made to happen
    here for real, so the judge is driven directly: an engine whose clock
    stands still, an output that stays ``lost``, and a clock the test moves."""
    from types import SimpleNamespace

    from stemdeck.engine.engine import Engine
    from stemdeck.service import LOST_GRACE_SECONDS, StreamJudge

    engine, output, now = Engine(44100), SimpleNamespace(state="running"), [100.0]
    judge = StreamJudge(engine, output, reconnect=30, clock=lambda: now[0])
    engine.render(np.zeros((512, 2), np.float32))
    assert judge.check() == (True, None)                                     # the clock moves
    output.state = "reconnecting"
    now[0] += 5
    alive, status = judge.check()
    assert alive and status.startswith("audio device lost, reconnecting (--reconnect 30 s)")
    output.state = "lost"                                                    # lost again at once
    now[0] += 30 + LOST_GRACE_SECONDS - 5                                    # the window's very end
    assert judge.check() == (True, None)
    now[0] += 1
    alive, status = judge.check()
    assert not alive and status.startswith("stuck: no audio rendered for 41.0 s (output lost, for longer")


# -- the example unit --------------------------------------------------------------------------

UNIT = Path(__file__).resolve().parents[1] / "examples" / "stemdeck.service"


def unit_values(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def test_the_example_unit_is_valid_and_asks_for_what_serve_needs(tmp_path):
    text = UNIT.read_text()
    values = unit_values(text)
    assert values["Type"] == "notify" and values["Restart"] == "on-failure"
    # its command lines (and the commented-out example) are ones serve accepts
    from stemdeck.cli import build_parser

    exe, command, *args = shlex.split(values["ExecStart"])
    assert command == "serve" and build_parser().parse_args([command, *args]).realtime
    examples = [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("#ExecStart=")]
    assert examples
    for line in examples:
        build_parser().parse_args(shlex.split(line)[1:])
    # --realtime's SCHED_FIFO priority and mlockall are allowed
    from stemdeck.audio.realtime import DEFAULT_PRIORITY

    assert int(values["LimitRTPRIO"]) >= DEFAULT_PRIORITY and values["LimitMEMLOCK"] == "infinity"
    assert values["WatchdogSec"]
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed: the unit's syntax was not checked")
    here = tmp_path / "stemdeck.service"       # its ExecStart must exist: point it at this install
    here.write_text(text.replace(exe, str(Path(sys.executable).with_name("stemdeck"))))
    verify = subprocess.run(["systemd-analyze", "verify", str(here)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
