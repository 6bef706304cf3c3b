"""``stemdeck demo``: synthesise two songs' stems and play a scripted two-deck mix.

    stemdeck demo [--render] [-o demo.wav] [--cache DIR] [--score FILE]
                  [--device INDEX|NAME] [--buffer-size N]

1. The eight stems (two songs x drums, bass, chords, lead) are synthesised
   into the cache folder, once (:mod:`stemdeck.tools.demo_songs`; later runs
   reuse them): ``--cache DIR``, else ``$STEMDECK_CACHE/demo``, else
   ``~/.cache/stemdeck/demo``.
2. The score (``examples/demo_mix.score``, or ``--score FILE``) names the
   stems by bare file name, relative to its own folder, so a copy of it is
   written into the cache folder beside the stems (``DIR/demo_mix.score``),
   and that copy is rendered with :func:`stemdeck.tools.render.render_score`.
3. Where there is an output device, the mix plays on it through the live
   server (:class:`stemdeck.live.Server` with the score, stopped when
   the score is over). Where there is none, or with ``--render``, it is
   rendered to a WAV file (``-o``, default ``demo.wav``). The command says
   which it did.

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
    parser.add_argument("--render", action="store_true",
                        help="render to the WAV file even if there is a sound card")
    from stemdeck import config

    config.add_arguments(parser, ("device", "buffer_size"))
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


def play_live(score: Path, args):
    """Play the score on the sound card through the live server. Returns its
    exit status, or None (with the reason) where no output device can be
    opened; the caller then renders instead."""
    import threading

    from stemdeck import config
    from stemdeck.audio.devices import NoOutputDeviceError
    from stemdeck.control.score import read_score
    from stemdeck.errors import DeviceError
    from stemdeck.app import SERVE_SETTINGS as SETTINGS
    from stemdeck.live import Server

    lines = read_score(score)
    ends = max(line.time for line in lines)
    settings = config.resolve(args, SETTINGS)
    server = Server(settings, score=str(score))
    try:
        # opening the output is the test: one PortAudio session for the whole run
        server.build()
    except NoOutputDeviceError as exc:
        server.abort()
        return None, str(exc).splitlines()[0].split(". ")[0]   # the finding, not serve's advice
    except DeviceError as exc:
        server.abort()
        if getattr(args, "device", None) is not None:
            raise                        # the device the user named cannot be used
        return None, str(exc).splitlines()[0]
    device = getattr(server.output, "device", None)
    where = device.label() if device is not None else "the sound card"
    print(f"playing the demo mix live on {where}; Ctrl-C stops it", flush=True)

    def stop_when_done() -> None:
        # the score is laid out on the engine's clock: stop a moment after its last line
        while getattr(server, "score_start_frame", None) is None:
            if server.stopped.wait(0.1):
                return
        end = server.score_start_frame + round((ends + 1.0) * server.engine.sample_rate)
        while server.engine.frame < end:
            if server.stopped.wait(0.2):
                return
        server.request_stop("demo: the score is over")

    threading.Thread(target=stop_when_done, name="demo-stop", daemon=True).start()
    return server.run(), None


def run(args) -> int:
    out = Path(args.output)
    if out.is_dir():
        raise UsageError(f"{out} is a folder: give a file name, e.g. {out / 'demo.wav'}")

    def log(text: str) -> None:
        print(text, file=sys.stderr)

    score, _stems = prepare(args.cache, args.score, log=log)
    status, why_not = (None, "--render was given") if args.render else play_live(score, args)
    if status is not None:
        print(f"The score and its stems are in {score.parent}; edit {score} and play it with "
              f"'stemdeck serve --score {score}', or render it with 'stemdeck render {score} -o mix.wav'.")
        return status

    from stemdeck.tools.render import render_score

    info = render_score(score, out, sample_rate=SAMPLE_RATE, block_size=BLOCK_SIZE,
                        progress=True)
    seconds = info.get("seconds") if isinstance(info, dict) else None
    length = f" ({seconds:.1f} s)" if seconds else ""
    print(f"demo mix rendered to {out.resolve()}{length}")
    print(f"Not played live ({why_not}): the demo was rendered to a file instead; open it in any "
          "audio player.")
    print(f"The score and its stems are in {score.parent}; edit {score} and render it with "
          f"'stemdeck render {score} -o mix.wav'.")
    return 0
