"""``stemdeck demo``: synthesise two songs' stems and render a scripted two-deck mix.

    stemdeck demo [-o demo.wav] [--cache DIR] [--score FILE]

1. The eight stems (two songs x drums, bass, chords, lead) are synthesised
   into the cache folder, once (:mod:`stemdeck.tools.demo_songs`; later runs
   reuse them): ``--cache DIR``, else ``$STEMDECK_CACHE/demo``, else
   ``~/.cache/stemdeck/demo``.
2. The score (``examples/demo_mix.score``, or ``--score FILE``) names the
   stems by bare file name, relative to its own folder, so a copy of it is
   written into the cache folder beside the stems (``DIR/demo_mix.score``),
   and that copy is rendered with :func:`stemdeck.tools.render.render_score`.
3. Live output is not available yet, so the mix is rendered to a WAV file
   (``-o``, default ``demo.wav``) and the command says where it is.

Main thread only. numpy, soundfile and the engine are imported inside
:func:`run`, so ``stemdeck --help`` stays instant.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from stemdeck.errors import StemdeckError, UsageError

SCORE_NAME = "demo_mix.score"
SAMPLE_RATE = 44100
BLOCK_SIZE = 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", default="demo.wav", metavar="OUT",
                        help="where to write the rendered mix (default: demo.wav)")
    parser.add_argument("--cache", metavar="DIR",
                        help="folder for the synthesised stems and the score's copy (default: "
                             "$STEMDECK_CACHE/demo, else ~/.cache/stemdeck/demo)")
    parser.add_argument("--score", metavar="FILE",
                        help=f"a score naming the demo stems by file name (default: "
                             f"examples/{SCORE_NAME})")
    parser.epilog = ("The stems are made once and reused. The score is copied beside them "
                     f"as {SCORE_NAME}; render or edit that copy with 'stemdeck render'.")


def bundled_score() -> Path:
    """The demo score shipped in the source tree (``examples/demo_mix.score``)."""
    return Path(__file__).resolve().parents[3] / "examples" / SCORE_NAME


def prepare(cache_dir=None, score=None, *, log=None) -> tuple[Path, dict[str, Path]]:
    """Make the stems and put the score beside them; return (score copy, stems)."""
    from stemdeck.tools.demo_songs import ensure_demo_stems

    source = Path(score) if score is not None else bundled_score()
    if not source.is_file():
        if score is not None:
            raise UsageError(f"score {source} does not exist")
        raise StemdeckError(f"the demo score is not installed (looked for {source}); "
                            "run from a source checkout or pass --score FILE")
    stems = ensure_demo_stems(cache_dir, log=log)
    folder = next(iter(stems.values())).parent
    copy = folder / SCORE_NAME
    if source.resolve() != copy.resolve():
        tmp = copy.with_name(f".{copy.name}.{os.getpid()}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, copy)   # always refreshed: an edited example takes effect
    return copy, stems


def run(args) -> int:
    out = Path(args.output)
    if out.is_dir():
        raise UsageError(f"{out} is a folder: give a file name, e.g. {out / 'demo.wav'}")

    def log(text: str) -> None:
        print(text, file=sys.stderr)

    score, _stems = prepare(args.cache, args.score, log=log)
    from stemdeck.tools.render import render_score

    info = render_score(score, out, sample_rate=SAMPLE_RATE, block_size=BLOCK_SIZE,
                        progress=True)
    seconds = info.get("seconds") if isinstance(info, dict) else None
    length = f" ({seconds:.1f} s)" if seconds else ""
    print(f"demo mix rendered to {out.resolve()}{length}")
    print("Live output is not available yet, so the demo was rendered to a file instead of "
          "played: open it in any audio player.")
    print(f"The score and its stems are in {score.parent}; edit {score} and render it with "
          f"'stemdeck render {score} -o mix.wav'.")
    return 0
