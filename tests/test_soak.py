"""Two minutes of benchmarks/soak.py: ``stemdeck serve`` on a JACK dummy server at 256
frames, playing the reference workload while one client cues, starts, stops and frees
WAV and FLAC stems every 3 s, turns knobs at 500 messages/s and holds a ``/notify``
subscription. The benchmark's own code (``soak.run_soak``) runs it; the test asserts
what a user leaving the server on would notice: it is still running and answering,
every load was answered, descriptors, threads and memory did not grow, events arrived,
and Ctrl-C (SIGINT) stops it with status 0.

The benchmark's third criterion, no more late JACK cycles per minute than a witness
client had alone just before, is printed here but not asserted. This VM stalls by
itself (the witness alone sees 7-19 late cycles in 40 s at 128 frames), and the
machine is shared: a load that starts during the two minutes but not during the 30 s
witness-alone window before them (another test run, a build) raises the late cycles
of every client, and jackd blames whoever is running, most often stemdeck. The
benchmark's chance test (benchmarks/soak_report.py) covers a steady machine's bursts,
not a load that changes between the windows; over 60 minutes such changes average
out, over two they decide the result. So the comparison belongs to the long run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from jackserver import missing_tools  # noqa: E402

pytestmark = pytest.mark.jack

MINUTES = 2.0
INTERVAL_S = 10.0
BASELINE_S = 30.0


@pytest.fixture(scope="module")
def soak_run():
    reason = missing_tools()
    if reason:
        pytest.skip(reason)
    import soak
    from soak_report import verdict_lines

    lines: list[str] = []
    result = soak.run_soak(MINUTES, interval_s=INTERVAL_S, baseline_s=BASELINE_S,
                           say=lambda line, **_: lines.append(line))
    lines += soak.summary(result) + verdict_lines(result["verdicts"])
    print("\n".join(lines))
    return result, "\n".join(lines)


@pytest.mark.timeout(900)
def test_the_server_runs_two_minutes_of_churn_and_exits_0_on_sigint(soak_run):
    r, text = soak_run
    assert r["crashed"] is None, text
    assert r["soak_s"] >= MINUTES * 60 - 1, text
    assert r["final_status"] is not None, "no /status.json reply at the end\n" + text
    assert r["final_status"]["voices_playing"] >= 16, text          # the reference workload still plays
    assert r["exit_status"] == 0, text
    assert all(s["status_ok"] for s in r["samples"]), text          # answered /status.json every 10 s


@pytest.mark.timeout(900)
def test_every_load_cue_and_free_is_answered_done(soak_run):
    r, text = soak_run
    churn = r["churn"]
    assert churn["error"] is None, text
    assert churn["cycles"] >= MINUTES * 60 / 3 - 2, text
    for command in ("/cue", "/load_buffer", "/free_buffer"):
        assert churn["asked"][command] > 0, text
        # the files are valid and the cache has room: every one is /done, none /fail or silent
        assert churn["done"].get(command, 0) == churn["asked"][command], text
    assert churn["unanswered"] == {} and churn["failed"] == {}, text
    assert r["unparsed_replies"] == 0, text


@pytest.mark.timeout(900)
def test_notify_events_arrive_throughout(soak_run):
    r, text = soak_run
    assert r["notify_answer"] and r["notify_answer"][0] == "done", text
    # /beat twice a second at 120 BPM; a /loaded per load and cue
    assert r["events"].get("/beat", 0) >= MINUTES * 60, text
    assert r["events"].get("/loaded", 0) >= r["churn"]["done"]["/load_buffer"], text
    assert all(s["events"] > 0 for s in r["samples"]), text


@pytest.mark.timeout(900)
def test_descriptors_threads_and_memory_do_not_grow(soak_run):
    from soak_report import flat

    r, text = soak_run
    v = r["verdicts"]
    assert v["fds_flat"]["ok"], text
    assert v["rss_flat"]["ok"], text
    threads = flat(r["samples"], "threads", r["samples"][-1]["t_s"])
    assert threads["ok"] and threads["max"] <= threads["ref"], f"threads {threads}\n{text}"
    maps = flat(r["samples"], "maps", r["samples"][-1]["t_s"])
    assert maps["ok"], f"memory mappings {maps}\n{text}"
