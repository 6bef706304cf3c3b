"""``stemdeck render``: render a score file offline to WAV or FLAC.

    stemdeck render SCORE -o OUT.wav [--sample-rate 44100|48000] [--block-size N]
                    [--duration S] [--format WAV|FLAC] [--subtype PCM_16|PCM_24|FLOAT]

The score (:mod:`stemdeck.control.score`) goes through the same message
table and handlers as the live OSC server, and the audio through the same
``Engine.render`` as the sound card. Each line's commands are posted with
``at=`` the line's exact frame (``round(time * sample_rate)``), so the
result is sample-accurate and the same for every block size (to rounding);
the same score always gives the same bytes.

How long: ``--duration S`` if given. Otherwise until the last scored event
(the last line, or a later scheduled ``/play``, ``/start_group`` or the end
of a ``/fade``), or the end of the last one-shot stem if later, plus 0.25 s
of release. A stem that still loops audibly at that point (its volume and
its deck's level above 0) has no end, so the render then asks for
``--duration`` instead of guessing: end such a score with ``/stop_stem``,
``/fade`` or ``/mixer_cleanup``, or give ``--duration``.

Before any audio is rendered, every line is checked (syntax, arguments,
buffers never loaded, files that cannot be opened): a bad line stops the
render with ``file:line: reason`` and exit status 2, and no output file is
left behind. Output is written progressively, while it renders, to a
temporary file that replaces OUT only when the render succeeds.

Tempo settings are serve's (``--bpm``, ``--stretch``, ``--keylock-engine``,
``--bpm-config``, ``--movement-bpm``), resolved the same way (flag >
environment > stemdeck.toml > default), so a score renders with the tempo
behaviour the live server would have in the same place.

Threads: the calling thread renders (it is the audio thread and the control
thread at once, in turn); the file is written on ``sd-writer``
(:mod:`stemdeck.audio.pcm_writer`), which converts each chunk to the output
format in compiled code while the next one renders.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

from stemdeck.engine.commands import SAMPLE_RATES
from stemdeck.errors import ScoreError, StemdeckError, UsageError
BLOCK_MIN, BLOCK_MAX = 32, 8192
FORMATS = {"WAV": (".wav", ".wave"), "FLAC": (".flac",)}
SUBTYPES = ("PCM_16", "PCM_24", "FLOAT")
DEFAULT_SUBTYPE = "PCM_24"
TAIL_SECONDS = 0.25            # release after the last sound: declicks, EQ and limiter tails
PROGRESS_MIN_SECONDS = 10.0    # shorter renders finish before a bar is worth drawing


# -- command line ------------------------------------------------------------------------------

def _block_size(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"block size {text!r} is not a whole number "
                                         f"(use {BLOCK_MIN}..{BLOCK_MAX})") from None
    if not BLOCK_MIN <= n <= BLOCK_MAX:
        raise argparse.ArgumentTypeError(f"block size {n} out of range {BLOCK_MIN}..{BLOCK_MAX}")
    return n


def _duration(text: str) -> float:
    try:
        s = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"duration {text!r} is not a number of seconds") from None
    if not math.isfinite(s) or s <= 0:
        raise argparse.ArgumentTypeError(f"duration {text} must be a positive number of seconds")
    return s


def _sample_rate(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = None
    if n not in SAMPLE_RATES:
        raise argparse.ArgumentTypeError(
            f"sample rate {text!r} is not supported (choose from "
            f"{', '.join(map(str, SAMPLE_RATES))})")
    return n


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("score", help="score file: one timed OSC message per line")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="output file (.wav or .flac)")
    parser.add_argument("--sample-rate", type=_sample_rate, default=44100, metavar="HZ",
                        help="44100 (default) or 48000")
    parser.add_argument("--block-size", type=_block_size, default=1024, metavar="N",
                        help=f"frames per render block, {BLOCK_MIN}..{BLOCK_MAX} (default 1024; "
                             "the result does not depend on it)")
    parser.add_argument("--duration", type=_duration, metavar="S",
                        help="seconds to render (default: until the music ends; required "
                             "when stems still loop at the end)")
    parser.add_argument("--format", type=str.upper, choices=tuple(FORMATS),
                        help="WAV or FLAC (default: from the output's extension)")
    parser.add_argument("--subtype", type=str.upper, choices=SUBTYPES,
                        help=f"sample format (default {DEFAULT_SUBTYPE}; FLOAT is WAV only)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--timings", action="store_true",
                        help="say where the time went (set-up, render, writing) on stderr")
    from stemdeck import config
    from stemdeck.app import TEMPO_SETTINGS

    config.add_arguments(parser, TEMPO_SETTINGS)


def run(args) -> int:
    from stemdeck import config
    from stemdeck.app import TEMPO_SETTINGS

    tempo = config.resolve(args, TEMPO_SETTINGS)
    for warning in tempo.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        info = render_score(args.score, args.output, sample_rate=args.sample_rate,
                            block_size=args.block_size, duration=args.duration,
                            format=args.format, subtype=args.subtype,
                            progress=not args.no_progress, tempo=tempo)
    except ScoreError as exc:
        print(f"stemdeck render: {exc}", file=sys.stderr)
        return 2
    peak = info["peak_dbfs"]
    peak_text = "silent" if peak == -math.inf else f"peak {peak:.1f} dBFS"
    if args.timings:
        t = info["times"]
        print(f"timings: setup {t['setup']:.3f} s, lines {t['lines']:.3f} s, engine {t['engine']:.3f} s, "
              f"finish {t['finish']:.3f} s, writer busy {t['writer_busy']:.3f} s", file=sys.stderr)
    print(f"rendered {info['seconds']:.3f} s ({info['frames']} frames at {info['sample_rate']} Hz, "
          f"{info['format']} {info['subtype']}, {peak_text}) to {info['path']}")
    return 0


# -- the renderer --------------------------------------------------------------------------------

def render_score(score_path, out_path, *, sample_rate: int = 44100, block_size: int = 1024,
                 duration: float | None = None, format: str | None = None,
                 subtype: str | None = None, progress: bool = True, tempo=None) -> dict:
    """Render ``score_path`` to ``out_path``; returns ``{"frames", "seconds", "path",
    "sample_rate", "block_size", "format", "subtype", "peak_dbfs", "lines",
    "late_commands"}``. ``tempo``: the resolved ``app.TEMPO_SETTINGS``
    (:func:`stemdeck.config.resolve`); None for the defaults.

    Raises :class:`ScoreError` (``file:line: reason``) for a bad score and
    :class:`UsageError` for bad parameters; no output file is left then.
    """
    from stemdeck.control.score import read_score

    fmt, subtype = _check_options(out_path, sample_rate, block_size, duration, format, subtype)
    lines = read_score(score_path)
    if not lines:
        raise ScoreError(f"{os.fspath(score_path)}: the score has no messages")
    frames_of = [round(line.time * sample_rate) for line in lines]

    from stemdeck import app

    tempo_kw = app.controller_tempo(tempo)       # read --bpm-config once: a bad one warns once
    total = _plan(lines, frames_of, sample_rate, duration, os.fspath(score_path), tempo_kw)
    return _render(lines, frames_of, total, os.fspath(out_path), sample_rate, block_size, fmt,
                   subtype, progress, tempo, tempo_kw)


def _check_options(out_path, sample_rate, block_size, duration, fmt, subtype):
    if sample_rate not in SAMPLE_RATES:
        raise UsageError(f"sample rate {sample_rate!r} is not supported (choose from "
                         f"{', '.join(map(str, SAMPLE_RATES))})")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or \
            not BLOCK_MIN <= block_size <= BLOCK_MAX:
        raise UsageError(f"block size {block_size!r} out of range {BLOCK_MIN}..{BLOCK_MAX}")
    if duration is not None and (not isinstance(duration, (int, float)) or
                                 not math.isfinite(duration) or duration <= 0):
        raise UsageError(f"duration {duration!r} must be a positive number of seconds")
    out = os.fspath(out_path)
    if fmt is None:
        ext = os.path.splitext(out)[1].lower()
        fmt = next((name for name, exts in FORMATS.items() if ext in exts), None)
        if fmt is None:
            raise UsageError(f"cannot tell the format from {out!r}: name it .wav or .flac, or "
                             f"give --format ({' or '.join(FORMATS)})")
    fmt = str(fmt).upper()
    if fmt not in FORMATS:
        raise UsageError(f"format {fmt!r} is not supported (choose from {', '.join(FORMATS)})")
    subtype = str(subtype or DEFAULT_SUBTYPE).upper()
    if subtype not in SUBTYPES:
        raise UsageError(f"subtype {subtype!r} is not supported (choose from {', '.join(SUBTYPES)})")
    if fmt == "FLAC" and subtype == "FLOAT":
        raise UsageError("FLAC cannot hold FLOAT samples: use --subtype PCM_24 or PCM_16, "
                         "or --format WAV")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise UsageError(f"the output folder {folder} does not exist")
    if os.path.isdir(out):
        raise UsageError(f"{out} is a folder: give a file name, e.g. {os.path.join(out, 'mix.wav')}")
    return fmt, subtype


class _Replies:
    """Collects /fail replies so each becomes a ScoreError naming its line."""

    def __init__(self):
        self.fails: list[tuple[str, str]] = []

    def __call__(self, sender, address, args):
        if address == "/fail":
            self.fails.append((str(args[0]), str(args[1])))

    def check(self, line):
        if self.fails:
            address, reason = self.fails[0]
            self.fails.clear()
            raise ScoreError(f"{line.where}: {address}: {reason}")


def _plan(lines, frames_of, sample_rate, duration, score_name, tempo_kw) -> int:
    """Run the score through the handlers without audio (headers only, no
    decoding): every semantic error surfaces now, with its line; returns
    the number of frames to render."""
    from stemdeck import app
    from stemdeck.control.planning import RecordingEngine
    from stemdeck.media.simple_loaders import ProbeLoader

    replies = _Replies()
    engine = RecordingEngine(sample_rate, base_bpm=tempo_kw.get("base_bpm", 120.0))
    planner = app.assemble(engine, ProbeLoader(), reply=replies, **tempo_kw).controller
    for line, frame in zip(lines, frames_of):
        planner.dispatch(line.call, at=frame)
        replies.check(line)
    if duration is not None:
        return max(1, round(duration * sample_rate))
    plan = planner.plan()
    if plan["loops"]:
        shown = ", ".join(f"buffer {b}" + (f" ({name})" if name else "") for b, name in plan["loops"][:4])
        more = f" and {len(plan['loops']) - 4} more" if len(plan["loops"]) > 4 else ""
        raise UsageError(f"{score_name}: stems still loop at the end of the score ({shown}{more}), "
                         "so it has no natural end: give --duration SECONDS, or end the score "
                         "with /stop_stem, /fade or /mixer_cleanup")
    end = max(plan["end_frame"], frames_of[-1])
    return end + round(TAIL_SECONDS * sample_rate)


def _render(lines, frames_of, total, out, sample_rate, block_size, fmt, subtype, progress,
            tempo, tempo_kw) -> dict:
    from stemdeck import app
    from stemdeck.audio.pcm_writer import CHUNK_FRAMES, PcmWriter
    from stemdeck.media.simple_loaders import ImmediateLoader

    t_setup = time.perf_counter()
    engine = app.build_engine(sample_rate, tempo=tempo, max_block=block_size)
    replies = _Replies()
    controller = app.assemble(engine, ImmediateLoader(), reply=replies, **tempo_kw).controller
    folder = os.path.dirname(os.path.abspath(out))
    fd, tmp = tempfile.mkstemp(prefix=".stemdeck-render-", suffix=".part", dir=folder)
    os.close(fd)
    bar = _Progress(total / sample_rate, enabled=progress)
    writer = None
    try:
        # whole blocks per chunk: the blocks (so the bytes) are those of a block-by-block render
        writer = PcmWriter(tmp, sample_rate, fmt, subtype,
                           chunk_frames=block_size * max(1, CHUNK_FRAMES // block_size))
        with bar:
            t_loop = time.perf_counter()
            i, frame, shown, t_lines = 0, 0, 0, 0.0
            chunk, filled = writer.take(), 0
            while frame < total:
                n = min(block_size, total - frame)
                if i < len(lines) and frames_of[i] < frame + n:
                    t = time.perf_counter()
                    while i < len(lines) and frames_of[i] < frame + n:
                        controller.dispatch(lines[i].call, at=frames_of[i])
                        replies.check(lines[i])
                        i += 1
                    t_lines += time.perf_counter() - t
                engine.render(chunk[filled:filled + n])
                controller.poll()             # the engine's events: hands freed samples back
                dropped = engine.commands_dropped()
                if dropped:
                    raise StemdeckError(f"{lines[max(i - 1, 0)].where}: {dropped} commands were "
                                        "dropped: too many messages at one time for the engine's "
                                        "command queue")
                filled += n
                frame += n
                if filled + block_size > len(chunk) or frame >= total:
                    writer.put(chunk, filled)
                    if frame < total:
                        chunk, filled = writer.take(), 0
                if frame - shown >= sample_rate or frame >= total:
                    bar.update(frame / sample_rate)
                    shown = frame
            t_rendered = time.perf_counter()
            peak = writer.close()
        late = int(engine.stats()["late_commands"])
        # mkstemp made the file private (0600); give it the mode any new file gets
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out)
    except BaseException as exc:
        if writer is not None:
            writer.abort()
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):       # the disk is full, the folder went away, ...
            from stemdeck.audio.recorder import describe_os_error

            raise StemdeckError(f"writing {out}: {describe_os_error(exc)}") from None
        raise
    finally:
        controller.close()
    t_end = time.perf_counter()
    return {
        "frames": total,
        "seconds": total / sample_rate,
        "path": out,
        "sample_rate": sample_rate,
        "block_size": block_size,
        "format": fmt,
        "subtype": subtype,
        "peak_dbfs": 20 * math.log10(peak) if peak > 0 else -math.inf,
        "lines": len(lines),
        "late_commands": late,     # offline every command lands on its frame: always 0
        # where the time went (--timings): building the engine and Controller; running the
        # score's lines (loading their files); the rest of the render loop (the writer
        # thread overlaps it); the writing left after the loop; the writer thread's work
        "times": {"setup": t_loop - t_setup, "lines": t_lines,
                  "engine": t_rendered - t_loop - t_lines, "finish": t_end - t_rendered,
                  "writer_busy": writer.busy},
    }


class _Progress:
    """A rich progress bar on stderr, only for long renders on a terminal."""

    def __init__(self, seconds: float, *, enabled: bool):
        self.seconds = seconds
        self.bar = None
        if enabled and seconds >= PROGRESS_MIN_SECONDS and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (BarColumn, Progress, TextColumn, TimeRemainingColumn)

            self.bar = Progress(TextColumn("rendering"), BarColumn(),
                                TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
                                TimeRemainingColumn(), console=Console(stderr=True),
                                transient=True)
            self.task = self.bar.add_task("render", total=seconds)

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        return self

    def update(self, seconds: float):
        if self.bar is not None:
            self.bar.update(self.task, completed=seconds)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False
