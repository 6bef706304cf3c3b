"""``stemdeck tune``: find the buffer size this machine holds, by measuring it.

    stemdeck tune [--sizes 128,256,512,1024,2048] [--seconds 30 | --quick]
                  [--device INDEX|NAME] [--backend portaudio|null] [--sample-rate HZ]
                  [--with-load] [--keylock] [--volume GAIN | --silent] [--headroom PERCENT]
                  [--report tune.md] [--json FILE] [--plot tune.png] [--write-config] [--realtime]

Plays the reference workload (tools/workload.py: 16 stems at rate 1.05 through the
resampler, EQ on every deck, limiter on) on the chosen output at each
buffer size in turn, smallest first (:mod:`stemdeck.tools.tune_sweep`; on
JACK the server's period is set to each size and put back afterwards),
and measures per size: block latency and the device's reported output
latency, underruns (the device's underflow flags and callbacks past their
period, as ``serve`` counts them), callback p50 / p99 / max as DSP load,
process CPU. Then it prints a table and recommends the smallest size with
no underruns and callback p99 under ``--headroom``
(:mod:`stemdeck.tools.tune_report`), with what that latency is fit for.
``--report``, ``--json`` and ``--plot`` write the same results to files;
``--write-config`` stores the recommendation in stemdeck.toml
(``--config FILE``, else the one in the working folder), where ``serve``
finds it.

Ctrl-C (or SIGTERM) stops after the size being measured and still prints
and writes the partial report (exit status 130); a second Ctrl-C cuts that
size short too. A size the device refuses is reported and the sweep goes
on. Exit status: 0 with a recommendation, 1 when no size held, 2 for bad
flags, 130 when interrupted.

Test hooks (``STEMDECK_TUNE_TEST_EXTRA_LOAD``, ``STEMDECK_TUNE_TEST_REFUSE``):
see :mod:`stemdeck.tools.tune_sweep`.

Main thread: it is also the control thread of the engine being measured.
Heavy libraries are imported inside :func:`run`, so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import signal
import sys
import time

from stemdeck import config
from stemdeck.errors import UsageError

SETTINGS = ("sample_rate", "device", "backend", "latency")
DEFAULT_SIZES = (128, 256, 512, 1024, 2048)
DEFAULT_SECONDS = 30.0
QUICK_SECONDS = 5.0
DEFAULT_VOLUME = 0.1          # -20 dB: audible on a sound card, not loud
DEFAULT_HEADROOM = 70.0
SIZE_RANGE = (config.BUFFER_SIZE_MIN, config.BUFFER_SIZE_MAX)
VALID_SIZES = ", ".join(map(str, config.POWERS_OF_TWO))


# -- flag parsers (argparse turns ArgumentTypeError into exit status 2 with the message) ----------

def _sizes(text: str) -> list[int]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    sizes = []
    for item in items:
        if not item.isdigit() or not SIZE_RANGE[0] <= int(item) <= SIZE_RANGE[1]:
            raise argparse.ArgumentTypeError(
                f"buffer size {item!r} in {text!r}: sizes are whole numbers from {SIZE_RANGE[0]} to "
                f"{SIZE_RANGE[1]}, comma-separated; powers of two are best: {VALID_SIZES}")
        sizes.append(int(item))
    if not sizes:
        raise argparse.ArgumentTypeError(f"--sizes {text!r}: give sizes like 128,256,512 (valid: {VALID_SIZES})")
    return sorted(set(sizes))


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 1.0 <= value <= 3600.0:
        raise argparse.ArgumentTypeError(f"--seconds {text!r}: give a number of seconds from 1 to 3600 "
                                         f"(default {DEFAULT_SECONDS:g}; --quick is {QUICK_SECONDS:g})")
    return value


def _volume(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"--volume {text!r}: give a gain from 0 (silent) to 1 (full), "
                                         f"e.g. {DEFAULT_VOLUME:g} (the default, -20 dB)")
    return value


def _headroom(text: str) -> float:
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 10.0 <= value <= 100.0:
        raise argparse.ArgumentTypeError(f"--headroom {text!r}: give a percentage of the period from 10 to 100 "
                                         f"(default {DEFAULT_HEADROOM:g})")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser, SETTINGS)
    g = parser.add_argument_group("tune")
    g.add_argument("--sizes", type=_sizes, default=list(DEFAULT_SIZES), metavar="N,N,...",
                   help=f"buffer sizes to measure, in frames (default {','.join(map(str, DEFAULT_SIZES))}; "
                        f"{SIZE_RANGE[0]} to {SIZE_RANGE[1]}, e.g. 64)")
    when = g.add_mutually_exclusive_group()
    when.add_argument("--seconds", type=_seconds, default=None, metavar="S",
                      help=f"seconds measured per size (default {DEFAULT_SECONDS:g})")
    when.add_argument("--quick", action="store_true", help=f"{QUICK_SECONDS:g} s per size")
    g.add_argument("--with-load", action="store_true",
                   help="also load a five-minute track (FLAC, then WAV) every 4 s and send 500 OSC-sized "
                        "messages per second, as a busy live set does")
    g.add_argument("--keylock", action="store_true", help="key lock on all four decks (Rubber Band)")
    loud = g.add_mutually_exclusive_group()
    loud.add_argument("--volume", type=_volume, default=DEFAULT_VOLUME, metavar="GAIN",
                      help=f"master volume of the test mix, 0 to 1 (default {DEFAULT_VOLUME:g}, quiet)")
    loud.add_argument("--silent", action="store_true", help="send silence (the mix is still computed)")
    g.add_argument("--headroom", type=_headroom, default=DEFAULT_HEADROOM, metavar="PERCENT",
                   help=f"a size is recommended only if callback p99 stays under this share of the "
                        f"period (default {DEFAULT_HEADROOM:g})")
    g.add_argument("--report", metavar="FILE.md", help="write the table and recommendation as Markdown")
    g.add_argument("--json", metavar="FILE", help="write the raw figures as JSON")
    g.add_argument("--plot", metavar="FILE.png", help="draw latency against underruns and DSP load "
                   "(needs matplotlib: pip install 'stemdeck[plot]')")
    g.add_argument("--write-config", action="store_true",
                   help="store the recommended size in stemdeck.toml ([audio] buffer_size; --config FILE, "
                        "else ./stemdeck.toml), which serve then uses")
    g.add_argument("--realtime", action="store_true",
                   help="ask for real-time scheduling of the audio thread, as serve --realtime does")


# -- the command ------------------------------------------------------------------------------

class _Stop:
    """SIGINT/SIGTERM: the first stops after the current size, the second
    cuts it short, a third quits at once."""

    def __init__(self, say):
        self.say = say
        self.count = 0
        self._previous = {}

    def install(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        self.count += 1
        if self.count == 1:
            self.say("stopping after this size (Ctrl-C again to cut it short)")
        elif self.count == 2:
            self.say("cutting this size short; the report follows (Ctrl-C again to quit at once)")
        else:
            self.restore()
            raise KeyboardInterrupt

    @property
    def requested(self) -> bool:
        return self.count >= 1

    @property
    def now(self) -> bool:
        return self.count >= 2


def _check_output_paths(args) -> None:
    for flag, path in (("--report", args.report), ("--json", args.json), ("--plot", args.plot)):
        if path is None:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise UsageError(f"{flag} {path}: that is a folder; give a file name")
        if not os.path.isdir(folder):
            raise UsageError(f"{flag} {path}: the folder {folder} does not exist")


def _workload_text(plan) -> str:
    text = ("the reference workload (16 stems, 4 per deck, looping at rate 1.05 through the resampler, "
            "EQ on every deck, limiter on)")
    if plan.keylock:
        text += " with key lock on every deck"
    if plan.with_load:
        text += (", plus a five-minute track loaded every 4 s (a FLAC decoded and a WAV memory-mapped, in turn) "
                 "and 500 OSC-sized messages per second")
    return text


def run(args) -> int:
    from rich.console import Console

    from stemdeck import __version__
    from stemdeck.tools import tune_report as report_mod
    from stemdeck.tools.tune_load import parse_test_hooks
    from stemdeck.tools.tune_sweep import WARMUP_SECONDS, Plan, Sweep

    settings = config.resolve(args, SETTINGS)
    for warning in settings.warnings:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    _check_output_paths(args)
    if args.plot:
        missing = report_mod.plot_available()
        if missing:
            raise UsageError(missing)
    extra, refuse = parse_test_hooks()
    for size in args.sizes:
        if size & (size - 1):
            print(f"warning: buffer size {size} is not a power of two; drivers and JACK work best with "
                  f"powers of two ({VALID_SIZES})", file=sys.stderr, flush=True)
    seconds = QUICK_SECONDS if args.quick else (args.seconds or DEFAULT_SECONDS)
    plan = Plan(sizes=list(args.sizes), seconds=seconds, sample_rate=settings.sample_rate,
                backend=settings.backend, device=settings.device, latency=settings.latency,
                with_load=args.with_load, keylock=args.keylock,
                volume=0.0 if args.silent else args.volume, realtime=args.realtime,
                adopt_jack_rate=settings.source("sample_rate") == "default",
                extra_load=extra, refuse=refuse)

    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=140)      # a log or a pipe: do not wrap the table
    live = console.is_terminal
    progress = None

    def say(line: str) -> None:
        (progress.console if progress is not None else console).print(line, markup=False, highlight=False, soft_wrap=True)

    stop = _Stop(say)
    stop.install()
    started = time.time()
    per_size = seconds + WARMUP_SECONDS + 0.3
    say(f"stemdeck tune: {len(plan.sizes)} size{'s' if len(plan.sizes) != 1 else ''} "
        f"({', '.join(map(str, plan.sizes))}) for {seconds:g} s each, about "
        f"{_duration(len(plan.sizes) * per_size)}; volume {'off (--silent)' if args.silent else f'{plan.volume:g}'}")
    if extra:
        say(f"test hook: extra callback load {extra} (% of the period)")
    if refuse:
        say(f"test hook: sizes refused {sorted(refuse)}")

    results: list[dict] = []
    audio = {"backend": plan.backend, "hostapi": None, "device": None, "sample_rate": plan.sample_rate,
             "jack": None}
    try:
        with Sweep(plan, say) as sweep:
            audio["sample_rate"] = plan.sample_rate
            if sweep.device is not None:
                audio.update(hostapi=sweep.device.hostapi, device=sweep.device.label())
            if sweep.jack is not None:
                audio["jack"] = (f"JACK server '{sweep.jack.server}', period {sweep.jack.original} frames "
                                 "before the sweep, set to each size in turn")
            progress = _progress(console) if live else None
            if progress is not None:
                progress.start()
            try:
                _sweep(plan, sweep, stop, results, progress, say)
            finally:
                if progress is not None:
                    progress.stop()
                    progress = None
    finally:
        stop.restore()

    complete = len(results) == len(plan.sizes) and all(r["status"] != "interrupted" for r in results)
    rec = report_mod.recommend(results, args.headroom)
    report = {
        "stemdeck_version": __version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(started)),
        "command": "stemdeck " + shlex.join(sys.argv[1:] if sys.argv[1:2] == ["tune"] else ["tune"]),
        "machine": report_mod.machine(),
        "audio": audio,
        "plan": {"sizes": plan.sizes, "seconds": seconds, "warmup_seconds": WARMUP_SECONDS,
                 "headroom": args.headroom, "with_load": plan.with_load, "keylock": plan.keylock,
                 "keylock_note": sweep.keylock_note, "volume": plan.volume, "realtime": plan.realtime,
                 "workload": _workload_text(plan), "test_extra_load": extra or None,
                 "test_refuse": sorted(refuse) or None},
        "results": results,
        "recommendation": rec,
        "complete": complete,
        "elapsed_seconds": time.time() - started,
    }
    console.print()
    report_mod.print_table(console, results, args.headroom, seconds, rec, partial=not complete)
    _write_outputs(args, report, report_mod, say)
    if not complete:
        say(f"interrupted: {len(results)} of {len(plan.sizes)} sizes measured")
        return 130
    return 0 if rec["buffer_size"] is not None else 1


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _progress(console):
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f} %"),
                    TimeRemainingColumn(), console=console, transient=True)


def _sweep(plan, sweep, stop, results, progress, say) -> None:
    total = len(plan.sizes) * plan.seconds
    task = progress.add_task("", total=total) if progress is not None else None
    underruns = 0
    for i, size in enumerate(plan.sizes):
        if stop.requested:
            break
        base = i * plan.seconds

        def show(done, current, size=size, base=base):
            if progress is not None:
                progress.update(task, completed=base + done,
                                description=f"{size:>5} frames ({i + 1}/{len(plan.sizes)}) · "
                                            f"underruns so far {underruns + current}")

        if progress is None:
            say(f"measuring {size} frames ({i + 1}/{len(plan.sizes)}) ...")
        show(0.0, 0)
        r = sweep.measure(size, progress=show, cut_short=lambda: stop.now)
        results.append(r)
        underruns += r.get("underruns", 0)
        show(plan.seconds, 0)
        if r["status"] == "refused":
            say(f"{size:>5} frames: refused: {r['reason']}; going on")
        else:
            say(f"{size:>5} frames: {r['underruns']} underrun{'' if r['underruns'] == 1 else 's'} in "
                f"{r['seconds']:.1f} s, "
                f"{r['late_callbacks']} past their period, callback p99 {r['dsp_load_p99']:.0f} % / max "
                f"{r['dsp_load_max']:.0f} % of {r['period_ms']:.1f} ms, CPU {r['cpu_percent']:.0f} %"
                + (f" ({r['status']}: {r['reason']})" if r["status"] == "lost" else "")
                + (" (cut short)" if r["status"] == "interrupted" else ""))
    if progress is not None:
        progress.update(task, completed=total)


def _write_outputs(args, report, report_mod, say) -> None:
    rec = report["recommendation"]
    for path, make, what in ((args.report, report_mod.markdown, "the report"),
                             (args.json, report_mod.to_json, "the figures")):
        if path:
            try:
                report_mod.write_text(path, make(report))
                say(f"wrote {what} to {path}")
            except OSError as exc:        # the table is on the screen already: say, do not lose it
                say(f"could not write {path}: {exc.strerror or exc}")
    if args.plot:
        try:
            report_mod.plot(report, args.plot)
            say(f"drew the chart in {args.plot}")
        except Exception as exc:          # a chart must not lose the measurements
            say(f"could not draw {args.plot}: {exc}")
    if args.write_config:
        if rec["buffer_size"] is None:
            say("--write-config: nothing written, no size held")
            return
        from pathlib import Path

        path = Path(args.config) if args.config else Path.cwd() / config.CONFIG_FILE_NAME
        written = config.write_config(path, {"audio": {"buffer_size": rec["buffer_size"]}})
        say(f"wrote buffer_size = {rec['buffer_size']} to {written}; stemdeck serve started in that folder "
            f"(or with --config {written}) uses it, unless --buffer-size or AUDIO_BUFFER_SIZE says otherwise")
