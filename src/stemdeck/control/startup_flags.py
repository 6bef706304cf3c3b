"""crowdstream's ``audio_server.py`` start-up flags for ``stemdeck serve``, turned into timed OSC messages.

``--a/--b/--c/--d FILE`` (load into buffers 100/1100/2100/3100 and play at
``--rate``/``--vol``), ``--ab A B``, ``--levels A B C D``, ``--c_at``,
``--c_preload``, ``--watch``, ``--meter``, ``--disable-time-stretch``, and
the filter switches (accepted with a note: the EQ is always compiled).
``--stretch-method`` is another name for the ``stretch`` setting (serve
applies it before resolving settings).

Nothing here touches the engine: :func:`plan` writes the flags as score
lines (``0 /load_buffer 100 x.wav DeckA``), validated by the one message
table (:mod:`stemdeck.control.spec`) and played by the same score player as
``serve --score`` (:func:`stemdeck.control.score_player.play_score`), so
they run through the Controller's handlers like any OSC message. Time 0 is
half a second after ``ready``; ``--c_at S`` is S seconds after that, as
crowdstream counted from its autoplay. Control thread (start-up) only.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex

from stemdeck.control import spec
from stemdeck.errors import ScoreError, UsageError

# deck letter -> crowdstream's autoplay buffer ID and display name
DECK_BUFFERS = {"a": (100, "DeckA"), "b": (1100, "DeckB"), "c": (2100, "DeckC"), "d": (3100, "DeckD")}
STRETCH_ALIASES = {"playback_rate": "playback_rate", "resample": "playback_rate",
                   "keylock": "keylock", "rubberband": "keylock"}
FILTER_NOTE = ("{flag}: accepted for crowdstream; stemdeck's 3-band EQ is always compiled in and on "
               "(/deck_eq always works; it costs well under 1 % DSP load)")
FLAGS_WHERE = "crowdstream flags"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("crowdstream start-up flags (docs/from-crowdstream.md)")
    for deck, (buf, _) in DECK_BUFFERS.items():
        started = "load only; started by --c_at" if deck == "c" else "and play it"
        g.add_argument(f"--{deck}", metavar="FILE", help=f"load FILE into buffer {buf} (deck {deck.upper()}) "
                       f"{started}")
    g.add_argument("--rate", metavar="RATE", default="1", help="playback rate of --a/--b/--c/--d (default 1)")
    g.add_argument("--vol", metavar="GAIN", default="0.8", help="volume of --a/--b/--c/--d (default 0.8)")
    g.add_argument("--ab", nargs=2, metavar=("A", "B"), help="start levels of decks A and B (/crossfade_levels)")
    g.add_argument("--levels", nargs=4, metavar=("A", "B", "C", "D"), help="start levels of the four decks "
                   "(/deck_levels; after --ab)")
    g.add_argument("--c_at", metavar="SECONDS", help="start deck C (--c) this many seconds after the others")
    g.add_argument("--c_preload", metavar="FILE", help="load FILE into buffer 2100 without starting it")
    g.add_argument("--watch", action="store_true", help="print bar/beat/phase once per beat (/print_clock 1)")
    g.add_argument("--meter", metavar="BEATS", help="beats per bar for --watch and the clock (/set_meter)")
    g.add_argument("--disable-time-stretch", action="store_true", dest="disable_time_stretch",
                   help="--a/--b/--c/--d stems ignore the master tempo (loaded with bpm 0)")
    g.add_argument("--stretch-method", metavar="|".join(STRETCH_ALIASES), dest="stretch_method",
                   help="another name for --stretch (rubberband = keylock, resample = playback_rate)")
    for flag in ("--enable-filters", "--disable-filters", "--optimized-filters"):
        g.add_argument(flag, action="store_true", dest=flag[2:].replace("-", "_"),
                       help="accepted for crowdstream; the EQ is always compiled in")


def apply_stretch_method(args) -> None:
    """``--stretch-method M`` sets the ``stretch`` setting's flag unless
    ``--stretch`` was given; a bad M is a UsageError listing the values."""
    method = getattr(args, "stretch_method", None)
    if method is None:
        return
    mode = STRETCH_ALIASES.get(method.strip().lower())
    if mode is None:
        raise UsageError(f"--stretch-method {method!r}: give one of {', '.join(STRETCH_ALIASES)}")
    if getattr(args, "stretch", None) is None:
        args.stretch = mode


def notes(args) -> list[str]:
    """One line per flag that is accepted but changes nothing here."""
    out = [FILTER_NOTE.format(flag=f) for f in ("--enable-filters", "--disable-filters", "--optimized-filters")
           if getattr(args, f[2:].replace("-", "_"), False)]
    if getattr(args, "c_at", None) is not None and not getattr(args, "c", None):
        out.append(f"--c_at {args.c_at}: there is no --c FILE to start; ignored (as crowdstream did)")
    if getattr(args, "disable_time_stretch", False):
        out.append("--disable-time-stretch: the --a/--b/--c/--d stems ignore the tempo; other buffers follow it "
                   "unless loaded with bpm 0 (/load_buffer ID FILE NAME 0)")
    return out


def _arg(address: str, name: str) -> spec.Arg:
    return next(a for a in spec.BY_ADDRESS[address].args if a.name == name)


def _number(flag: str, text: str, address: str | None, name: str, *, whole: bool = False) -> float:
    """``text`` as a number in the range of ``address``'s argument ``name``
    (the message table's; None: seconds, a score's range)."""
    lo, hi = (0.0, spec.MAX_SECONDS) if address is None else (_arg(address, name).lo, _arg(address, name).hi)
    valid = f"{'a whole number' if whole else 'a number'} from {lo:g} to {hi:g}"
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise UsageError(f"{flag} {text!r}: give {valid}") from None
    if not math.isfinite(value) or not lo <= value <= hi or (whole and value != int(value)):
        raise UsageError(f"{flag} {text}: give {valid}")
    return int(value) if whole else value


def _file(flag: str, path: str, cwd: str) -> str:
    full = os.path.abspath(os.path.join(cwd, os.path.expanduser(path)))
    if not os.path.isfile(full):
        raise UsageError(f"{flag} {path}: no such file: {full}")
    return full


def plan(args, cwd: str | None = None) -> list:
    """The flags' messages as validated, time-ordered score lines (empty
    when no start-up flag was given). Raises UsageError naming the flag."""
    from stemdeck.control.score import parse_score

    cwd = os.getcwd() if cwd is None else cwd
    texts: list[tuple[float, str, str]] = []      # (time, flag, message)

    def add(time: float, flag: str, address: str, *values) -> None:
        texts.append((time, flag, " ".join([address, *(shlex.quote(str(v)) for v in values)])))

    if getattr(args, "meter", None) is not None:
        add(0, "--meter", "/set_meter", _number("--meter", args.meter, "/set_meter", "beats", whole=True))
    if getattr(args, "watch", False):
        add(0, "--watch", "/print_clock", 1)
    if getattr(args, "ab", None):
        add(0, "--ab", "/crossfade_levels", *(_number("--ab", v, "/crossfade_levels", n)
                                              for v, n in zip(args.ab, "ab")))
    if getattr(args, "levels", None):
        add(0, "--levels", "/deck_levels", *(_number("--levels", v, "/deck_levels", n)
                                             for v, n in zip(args.levels, "abcd")))
    decks = [d for d in DECK_BUFFERS if getattr(args, d, None)]
    if decks or getattr(args, "c_preload", None):
        rate = _number("--rate", getattr(args, "rate", "1"), "/play_stem", "rate")
        vol = _number("--vol", getattr(args, "vol", "0.8"), "/play_stem", "volume")
        bpm = (0,) if getattr(args, "disable_time_stretch", False) else ()
        c_at = getattr(args, "c_at", None)
        c_at = None if c_at is None else _number("--c_at", c_at, None, "seconds")
        if getattr(args, "c_preload", None):
            buf, name = DECK_BUFFERS["c"]
            add(0, "--c_preload", "/load_buffer", buf, _file("--c_preload", args.c_preload, cwd), name, *bpm)
        for deck in decks:
            flag, (buf, name) = f"--{deck}", DECK_BUFFERS[deck]
            add(0, flag, "/load_buffer", buf, _file(flag, getattr(args, deck), cwd), name, *bpm)
            if deck != "c":
                add(0, flag, "/play_stem", buf, rate, vol, 1, 0)
            elif c_at is not None:
                add(c_at, "--c_at", "/play_stem", buf, rate, vol, 1, 0)
    lines = []
    for time, flag, text in sorted(texts, key=lambda t: t[0]):     # stable: flags keep their order
        try:
            line, = parse_score(f"{time:g} {text}", filename=FLAGS_WHERE, base_dir=cwd)
        except ScoreError as exc:
            raise UsageError(f"{flag}: {str(exc).split(': ', 1)[-1]}") from None
        lines.append(line)
    return lines


def describe(lines) -> list[str]:
    """The start-up lines serve prints: ``start-up  +0 s  /load_buffer 100 ...``."""
    return [f"{'start-up':<15} +{line.time:g} s  {line.text.split(' ', 1)[1]}" for line in lines]
