"""`stemdeck status` against a real `stemdeck serve` (null backend)."""

import json
import subprocess
import sys

import pytest

from serveproc import free_port, start_serve


def status(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "stemdeck", "status", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_status_reports_a_running_server():
    port = free_port()
    proc, _ = start_serve(["--backend", "null", "--port", str(port), "--buffer-size", "256"])
    try:
        result = status("--port", str(port))
        assert result.returncode == 0, result.stderr
        assert "44100 Hz, 256 frames" in result.stdout
        assert "underruns" in result.stdout and "tempo 120.0 BPM" in result.stdout
        doc = json.loads(status("--port", str(port), "--json").stdout)
        assert doc["buffer_size"] == 256 and [d["deck"] for d in doc["decks"]] == ["A", "B", "C", "D"]
    finally:
        proc.terminate()
        proc.wait(10)


def test_status_with_no_server_says_so_and_exits_1():
    result = status("--port", str(free_port()), "--timeout", "0.3")
    assert result.returncode == 1
    assert "stemdeck serve" in result.stderr


@pytest.mark.parametrize("args", [["--port", "70000"], ["--timeout", "x"], ["--port", "0"]])
def test_status_bad_flags_exit_2(args):
    result = status(*args)
    assert result.returncode == 2
    assert result.stderr.strip()
