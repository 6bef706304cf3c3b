"""``stemdeck warmup``: compile every engine kernel now, once per install, so that no command compiles later.

    stemdeck warmup [--marker FILE]

``./run`` runs it after installing, and again whenever the kernels it
compiled are gone or older than their source. The commands that run the
engine (``serve``, ``render``, ``demo``, ``tune``, ``bench``) call
:func:`ensure_compiled` first: when numba's cache lacks a kernel it says
``compiling the engine (once per install, about N s)...`` and does the same
warm-up, one line per kernel compiled, instead of sitting silent.

The warm-up runs the real code paths, not a list of signatures, since numba
compiles a function for the argument types it is called with: a short score
through ``stemdeck render`` in every output format (the message table's
commands through the Controller, the render kernel, the writer's
conversion, key lock), then on a live-style engine the Controller's first
poll (the event drain, the clock read), the null backend's callback body,
the recorder's drain and the PortAudio callback. It also byte-compiles
stemdeck's modules, so a start never compiles Python either.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

# One short score using most of the message table (osc-api.md), so that the
# Controller posts each kind of command record (int and float arguments are
# different signatures to numba). Times in seconds; the stems are written here.
SCORE = """\
0.0   /load_buffer 100 pcm16.wav drums 120
0.0   /load_buffer 101 float.wav bass
0.0   /load_buffer 1100 pcm24.flac lead 126
0.0   /set_meter 4
0.0   /quantize 0
0.0   /play_stem 100 1.0 0.8 1 0.0
0.0   /play_stem 101 1.05 0.7 1
0.0   /play_stem_section 1100 1.0 0.8 1 0.1 0.5
0.1   /stem_bpm 100 124
0.1   /stem_volume 101 0.5
0.1   /crossfade_levels 1.0 0.5
0.1   /deck_levels 1 1 0.8 0.8
0.2   /deck_eq A low 0
0.2   /deck_eq_all B 50 60 40
0.2   /deck_filter A high 1.5
0.2   /keylock A 1
0.3   /set_tempo 126 0.5
0.3   /test_tone 440 0.2
0.4   /sync 100
0.5   /play C pcm16.wav 0.6
0.5   /cue D float.wav 0.0
0.6   /start_group 0.7 D
0.6   /fade C 0.7 0.2
0.9   /keylock A 0
0.9   /stop_stem 101
1.0   /free_buffer 101
1.0   /mixer_cleanup
"""
SCORE_SECONDS = 1.5
OUTPUTS = (("out16.wav", "PCM_16"), ("out24.wav", "PCM_24"), ("outf.wav", "FLOAT"), ("out.flac", "PCM_24"))


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--marker", metavar="FILE",
                        help="afterwards, list the kernel sources and the compiled kernels' index files in FILE "
                             "(./run compares their times to know when to warm up again)")


def run(args) -> int:
    warm(say, marker=args.marker)
    return 0


def ensure_compiled(out=say):
    """Before a command that runs the engine: compile (saying so, with
    progress) whatever numba's cache cannot load, by the full warm-up. The
    progress stays installed, so a compile later in the command is reported
    too. Returns the :class:`~stemdeck.engine.kernel_cache.CompileProgress`."""
    from stemdeck.engine import kernel_cache as kc

    kernels = kc.cached_kernels()
    stale = kc.stale_kernels(kernels)
    progress = kc.CompileProgress(out, len(stale), kc.estimate_seconds(len(stale), len(kernels))).install()
    if stale:
        progress.begin()
        try:
            _warm_paths(progress, stale)
        except Exception as exc:   # a broken warm-up path must not stop the command: it compiles what it uses
            out(f"warning: the warm-up stopped ({type(exc).__name__}: {exc}); "
                "the rest compiles when first used")
        else:
            _finished(progress, len(stale), len(kernels), out)
    return progress


def warm(out=say, *, marker: str | None = None) -> None:
    """Compile every kernel (a no-op for those numba's cache holds), run every
    path once, byte-compile the modules and write ``marker``."""
    from stemdeck.engine import kernel_cache as kc

    kernels = kc.cached_kernels()
    stale = kc.stale_kernels(kernels)
    t0, t0_wall = time.monotonic(), time.time()
    if stale:
        out(f"compiling the engine once ({len(stale)} of {len(kernels)} kernels, "
            f"about {max(kc.estimate_seconds(len(stale), len(kernels)), 1):.0f} s)...")
    progress = kc.CompileProgress(out, len(stale), 0.0).install()
    progress.started = t0                   # the line above was the announcement
    try:
        _warm_paths(progress, stale)
    finally:
        progress.uninstall()
    if stale:
        _finished(progress, len(stale), len(kernels), out)
    left = kc.stale_kernels(kernels)
    if left:          # a kernel no path reaches: say so rather than claim it is warm
        out(f"warning: not compiled by any warm-up path: {', '.join(left)}")
    compileall.compile_dir(str(Path(__file__).resolve().parent.parent), quiet=1)
    if marker:
        _write_marker(Path(marker), kernels, started=t0_wall)
    if not stale:
        out(f"engine already compiled ({len(kernels)} kernels in {kc.CACHE_DIR}); checked in "
            f"{time.monotonic() - t0:.1f} s")


def _finished(progress, stale: int, total: int, out) -> None:
    from stemdeck.engine import kernel_cache as kc

    seconds = progress.elapsed()
    if stale == total:
        kc.record_full_compile(seconds)
    out(f"engine compiled in {seconds:.0f} s ({progress.done} kernels); later starts load them from {kc.CACHE_DIR}")


def _warm_paths(progress, stale) -> None:
    with tempfile.TemporaryDirectory(prefix="stemdeck-warmup-") as tmp:
        _render_paths(Path(tmp))
    _live_paths(progress, stale)


def _render_paths(folder: Path) -> None:
    """``stemdeck render`` of :data:`SCORE`, once per output format, with key
    lock engaged by the score; its output is kept only to report a failure."""
    import numpy as np
    import soundfile as sf

    from stemdeck.tools import render

    t = np.arange(44100 * 2) / 44100.0
    tone = np.stack([np.sin(2 * np.pi * 110 * t), np.sin(2 * np.pi * 165 * t)], axis=1) * 0.3
    sf.write(folder / "pcm16.wav", tone, 44100, subtype="PCM_16")
    sf.write(folder / "float.wav", tone.astype(np.float32), 44100, subtype="FLOAT")
    sf.write(folder / "pcm24.flac", tone, 48000, subtype="PCM_24")   # decoded and resampled on load
    score = folder / "warmup.score"
    score.write_text(SCORE)
    for name, subtype in OUTPUTS:
        argv = [str(score), "-o", str(folder / name), "--subtype", subtype,
                "--duration", str(SCORE_SECONDS), "--no-progress"]
        parser = argparse.ArgumentParser(prog="stemdeck render")
        render.add_arguments(parser)
        text = io.StringIO()
        with contextlib.redirect_stdout(text):     # its summary lines; compile progress goes to stderr
            status = render.run(parser.parse_args(argv))
        if status:
            raise RuntimeError(f"warm-up render ({' '.join(argv[2:])}) failed:\n{text.getvalue()}")


def _live_paths(progress, stale) -> None:
    """The paths only a live server takes: the Controller's poll, the null
    backend's callback body, the recorder's drain, the PortAudio callback."""
    import numpy as np

    from stemdeck import app
    from stemdeck.engine import kernel

    engine = app.build_engine(44100, max_block=512)
    loader = app.live_loader(engine)
    parts = app.assemble(engine, loader, lookahead=512, reply=lambda *a: None)
    try:
        parts.controller.handle("/test_tone", [440.0, 0.1])
        parts.controller.handle("/set_tempo", [124, 0.2])
        block = np.zeros((512, 2), np.float32)
        engine.set_recording(True)
        for _ in range(4):
            engine.run_callback(block)
            parts.controller.poll()
        engine.drain_recording(np.zeros((4096, 2), np.float32))   # the recorder's buffer: frames x 2 float32
        engine.clock_snapshot()
        engine.callback_address                  # builds the @cfunc: its own compile raises no event
        if "kernel.pa_callback" in stale:
            progress.step("kernel.pa_callback")
        if not kernel.portaudio_callback().address:
            raise RuntimeError("the PortAudio callback has no address")
    finally:
        parts.controller.close()
        engine.close()


def _write_marker(path: Path, kernels, *, started: float) -> None:
    """``source PATH`` for each kernel source (newer than this file: warm
    again), ``cache PATH`` for each index file (gone: warm again). Dated
    when the warm-up started, so that an edit made meanwhile counts as newer."""
    from stemdeck.engine import kernel_cache as kc

    lines = [f"source {p}" for p in kc.kernel_sources()]
    lines += [f"cache {cache._cache_file._index_path}" for _, cache in kernels]
    path.write_text("\n".join(lines) + "\n")
    os.utime(path, (started, started))
