"""Compiling the engine once: `stemdeck warmup` (what ./run runs at install)
leaves a cache serve starts from without compiling, a serve on an empty cache
says it compiles (with progress) before `ready`, and ./run warms again when
a compiled kernel is gone. Each test gets its own NUMBA_CACHE_DIR; the two
full compiles take a minute or more each on a 2-core machine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from serveproc import start_serve

ROOT = Path(__file__).resolve().parent.parent
COMPILE_SECONDS = 900          # a full compile on a busy 2-core machine, with margin
pytestmark = pytest.mark.timeout(2 * COMPILE_SECONDS)   # a full compile, not a property under test
MESSAGE = re.compile(r"^compiling the engine \(once per install, about \d+ s\)\.\.\.$", re.M)


def _stop(proc) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    return out


def _env(cache: Path) -> dict:
    return dict(os.environ, NUMBA_CACHE_DIR=str(cache))


@pytest.fixture(scope="module")
def warmed(tmp_path_factory) -> Path:
    """A kernel cache filled by `stemdeck warmup` alone, from empty."""
    cache = tmp_path_factory.mktemp("warmed-kernels")
    done = subprocess.run([sys.executable, "-m", "stemdeck", "warmup"], env=_env(cache), capture_output=True,
                          text=True, timeout=COMPILE_SECONDS)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("compiling the engine once ("), done.stderr
    assert "engine compiled in" in done.stderr and "warning" not in done.stderr, done.stderr
    return cache


def test_serve_starts_without_compiling_from_the_warmed_cache(warmed):
    proc, text = start_serve(["--backend", "null", "--port", "0"], env=_env(warmed), timeout=120)
    _stop(proc)
    assert "compiling" not in text, text


def test_serve_on_an_empty_cache_says_it_compiles_before_ready(tmp_path):
    proc, text = start_serve(["--backend", "null", "--port", "0"], env=_env(tmp_path / "empty"),
                             timeout=COMPILE_SECONDS)
    _stop(proc)
    lines = text.splitlines()
    said = [i for i, line in enumerate(lines) if MESSAGE.match(line)]
    assert said, text
    progress = [line for line in lines[said[0]:] if re.match(r"^  compiled \S+ .*\(\d+ of \d+, \d+ s\)$", line)]
    assert progress, text
    last = re.search(r"\((\d+) of (\d+),", progress[-1])
    assert last[1] == last[2], progress[-1]            # every kernel it announced, compiled
    assert said[0] < lines.index("ready")


def test_run_warms_again_when_a_compiled_kernel_is_gone(warmed, tmp_path):
    """./run's check: a warm cache costs no warm-up; a deleted kernel index
    (a cache folder cleaned) makes it warm up again, compiling that kernel."""
    cache = tmp_path / "kernels"
    shutil.copytree(warmed, cache)
    venv = tmp_path / "venv"                  # ./run's own files go here, not into the shared .venv
    venv.mkdir()
    (venv / "bin").symlink_to(Path(sys.executable).parent)
    (venv / ".stemdeck-installed").touch()
    env = dict(_env(cache), STEMDECK_VENV=str(venv))

    def run() -> str:
        done = subprocess.run([str(ROOT / "run"), "stemdeck", "--version"], env=env, capture_output=True,
                              text=True, timeout=COMPILE_SECONDS)
        assert done.returncode == 0, done.stderr
        return done.stderr

    first = run()                              # no marker yet: it checks, nothing to compile
    assert "engine already compiled" in first, first
    assert run() == "", "a warm cache should cost ./run nothing"
    marker = (venv / ".stemdeck-warmed").read_text().split("\n")
    index = next(line.split(" ", 1)[1] for line in marker if line.startswith("cache ") and "events_drain" in line)
    os.remove(index)
    again = run()
    assert MESSAGE.search(again) is None and "compiling the engine once (1 of" in again, again
    assert "compiled rings.events_drain" in again, again
