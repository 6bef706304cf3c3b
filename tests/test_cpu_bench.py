"""benchmarks/cpu.py, run for a few seconds: it reports the server's CPU and each of its
threads by OS name. No speed is asserted (that is the benchmark's job, not a test's);
the scsynth case is skipped where scsynth is not installed (CI does not install it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jackserver import missing_tools

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.jack


def run_cpu_bench(tmp_path, *args: str) -> tuple[dict, str]:
    reason = missing_tools()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "cpu.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cpu.py"), "--seconds", "2", "--runs", "1",
                          "--blocks", "256", "--settle", "1", "--json", str(out), *args],
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(out.read_text()), run.stdout


def plausible(window: dict) -> None:
    """Some CPU, at most both cores, and the threads' share adds up to the process's (within
    what a thread that ended, or the 10 ms tick, can account for)."""
    assert 0.0 < window["process"] < 200.0, window
    assert abs(sum(window["threads"].values()) - window["process"]) < 5.0, window


@pytest.mark.timeout(600)
def test_cpu_bench_reports_stemdeck_per_thread_by_name(tmp_path):
    data, text = run_cpu_bench(tmp_path, "--only", "stemdeck")
    (run,) = data["runs"]
    assert run["system"] == "stemdeck" and run["block"] == 256
    for phase in ("idle", "workload"):
        plausible(run[phase])
        names = set(run[phase]["threads"])
        assert len({n for n in names if n.startswith("sd-")}) >= 2, names     # src/stemdeck/threads.py's
        assert any(n.endswith("(main)") for n in names), names
    assert run["workload"]["server"]["voices_playing"] >= 16, run["workload"]
    assert "| reference workload, 256 frames |" in text and "| sd-" in text, text


@pytest.mark.timeout(600)
def test_cpu_bench_measures_scsynth_playing_the_workload(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import scsynth_ref

    if scsynth_ref.missing():
        pytest.skip(scsynth_ref.missing())
    data, _text = run_cpu_bench(tmp_path, "--only", "scsynth")
    (run,) = data["runs"]
    for phase in ("idle", "workload"):
        plausible(run[phase])
    assert run["workload"]["server"]["synths"] == 21, run["workload"]
