"""``--realtime``: SCHED_FIFO where the system allows it, a useful message where it does not."""

from __future__ import annotations

import errno
import os
import re
import signal
import threading

import pytest
from serveproc import start_serve

from stemdeck.audio import realtime as rt

linux_only = pytest.mark.skipif(not rt.supported(), reason="real-time scheduling is Linux-only here")


@linux_only
def test_a_thread_can_be_made_realtime_where_allowed():
    allowed, message = rt.check_permission()
    if not allowed:
        assert "ulimit -r" in message and "limits.d" in message
        pytest.skip(f"this machine refuses real-time scheduling: {message}")
    seen = {}

    def audio():
        ok, text = rt.make_current_thread_realtime(10)
        seen["ok"], seen["text"] = ok, text
        seen["threads"] = rt.realtime_threads()
        seen["tid"] = threading.get_native_id()

    t = threading.Thread(target=audio, name="rt-test")
    t.start()
    t.join()
    assert seen["ok"] and seen["text"] == "SCHED_FIFO priority 10"
    assert any(th.tid == seen["tid"] and th.policy == "SCHED_FIFO" and th.priority == 10 for th in seen["threads"])
    # the probe drops its real-time policy again: the caller is untouched
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


@linux_only
def test_a_refusal_says_why_and_how_to_allow_it(monkeypatch):
    def refuse(*args):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    monkeypatch.setattr(rt, "_rtprio_limits", lambda: (0, 0))
    monkeypatch.setattr(rt, "_has_cap_sys_nice", lambda: False)
    ok, message = rt.make_current_thread_realtime()
    assert not ok
    assert "RLIMIT_RTPRIO is 0" in message                       # rtprio 0 needs no system call to know
    monkeypatch.setattr(rt, "_rtprio_limits", lambda: (95, 95))
    ok, message = rt.check_permission()
    assert not ok
    assert "Operation not permitted" in message
    assert "RLIMIT_RTPRIO is 95" in message and "'ulimit -r'" in message
    assert "lacks the CAP_SYS_NICE capability" in message
    assert "/etc/security/limits.d/audio.conf" in message and "LimitRTPRIO" in message
    assert message.endswith("Carrying on without it")


def test_rtprio_limit_caps_the_priority(monkeypatch):
    monkeypatch.setattr(rt, "_has_cap_sys_nice", lambda: False)
    monkeypatch.setattr(rt, "_rtprio_limits", lambda: (40, 40))
    assert rt.allowed_priority(70) == 40
    monkeypatch.setattr(rt, "_rtprio_limits", lambda: (-1, -1))     # unlimited
    assert rt.allowed_priority(70) == 70


def test_prefault_touches_the_engine_state_without_changing_it():
    import numpy as np

    from stemdeck.engine.engine import Engine

    engine = Engine(44100)
    engine.state.params[:] = np.arange(len(engine.state.params))
    before = engine.state.params.copy()
    assert rt.prefault(engine) > 1_000_000
    assert np.array_equal(engine.state.params, before)


def test_kernel_hint_names_a_kernel_that_cannot_preempt(monkeypatch):
    monkeypatch.setattr(rt, "kernel_preemption", lambda: "none")
    assert "preempt=full" in rt.kernel_hint()
    monkeypatch.setattr(rt, "kernel_preemption", lambda: "full")
    assert rt.kernel_hint() is None


def test_raising_the_process_priority_refused_is_explained(monkeypatch):
    def refuse(*args):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "getpriority", lambda *a: 0)
    monkeypatch.setattr(os, "setpriority", refuse)
    ok, message = rt.raise_process_priority()
    assert not ok and "nice -10" in message and "ulimit -e" in message


@linux_only
def test_null_backend_clock_thread_goes_realtime_or_says_why():
    proc, startup = start_serve(["--backend", "null", "--realtime"],
                                until=lambda line: line.startswith("--realtime: clock thread")
                                or "real-time scheduling refused" in line)
    proc.send_signal(signal.SIGTERM)
    text = startup + proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, text
    assert re.search(r"--realtime: (clock thread SCHED_FIFO priority \d+|real-time scheduling refused .*ulimit -r)",
                     text), text
    assert re.search(r"--realtime: (memory locked|locking memory was refused .*ulimit -l)", text), text


@linux_only
@pytest.mark.jack
def test_jack_audio_thread_is_reported(jack_server):
    proc, startup = start_serve(["--realtime", "--buffer-size", "256"], env=jack_server.env)
    proc.send_signal(signal.SIGTERM)
    text = startup + proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, text
    # jackd -R (the fixture's default) gives its clients' threads SCHED_FIFO when the system allows it
    assert re.search(r"--realtime: (the audio thread is JACK's, already real-time \('.*' SCHED_FIFO \d+\)"
                     r"|JACK's audio thread in this process is not real-time: start the JACK server)", text), text
