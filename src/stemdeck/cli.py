"""The ``stemdeck`` command line: one subcommand per task.

Runs on the main thread. Each subcommand lives in its own module exposing
``add_arguments(parser)`` and ``run(args) -> int``; those modules import
numpy/numba lazily inside ``run`` so that ``stemdeck --help`` and argument
errors stay instant (start-up time is part of the product). Only the module
of the command given is imported (``--help`` lists the others from the table).
The commands that run the engine first make sure it is compiled
(:func:`stemdeck.tools.warmup.ensure_compiled`: says so, with progress,
when numba's cache lacks a kernel).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from stemdeck.errors import StemdeckError, UsageError

# subcommand -> (module, one-line help). One table; order is the help order.
SUBCOMMANDS = {
    "serve": ("stemdeck.tools.serve", "run the OSC-controlled mixing server"),
    "render": ("stemdeck.tools.render", "render a score file offline to WAV/FLAC"),
    "demo": ("stemdeck.tools.demo", "play (or render) a scripted two-deck demo mix"),
    "tune": ("stemdeck.tools.tune", "measure underruns and load per buffer size; recommend one"),
    "bench": ("stemdeck.tools.bench", "time the reference workload through Engine.render"),
    "devices": ("stemdeck.tools.devices", "list audio host APIs and output devices"),
    "status": ("stemdeck.tools.status", "ask a running server for its status"),
    "warmup": ("stemdeck.tools.warmup", "compile the engine now (once per install; ./run does it)"),
}
ENGINE_COMMANDS = {"serve", "render", "demo", "tune", "bench"}   # they compile kernels unless cached


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad flags already; make it one line, pointing at
    this (sub)command's own --help, as every other usage error is."""

    def error(self, message):
        head, sep, rest = message.partition(": ")
        if head.startswith("argument ") and rest.startswith(head[len("argument "):].split("/")[0] + " "):
            message = rest               # our type functions name the flag already: say it once
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given ``argv``, only the command it names gets its
    arguments (and its module imported): the rest, listed by ``--help`` from
    the table, cost nothing at start-up."""
    from stemdeck import __version__

    parser = _Parser(prog="stemdeck", description="Real-time stem mixing server.")
    parser.add_argument("--version", action="version", version=f"stemdeck {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    named = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if argv is not None and name != named:
            sub.add_parser(name, help=help_text, description=help_text)
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:   # a broken install: say which command and why, never drop it
            raise StemdeckError(f"the '{name}' command cannot be loaded ({module_name}): {exc}") from exc
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _parser=p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser(argv)
    except StemdeckError as exc:
        print(f"stemdeck: {exc}", file=sys.stderr)
        return 1
    args, unknown = parser.parse_known_args(argv)
    if unknown:       # the subcommand's parser says so, pointing at its own --help
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    progress = None
    try:
        if args.command in ENGINE_COMMANDS:
            from stemdeck.tools.warmup import ensure_compiled

            progress = ensure_compiled()       # reports any later compile too, until the command ends
        return int(args._run(args) or 0)
    except UsageError as exc:
        print(f"stemdeck {args.command}: error: {exc} (see 'stemdeck {args.command} --help')", file=sys.stderr)
        return 2
    except StemdeckError as exc:
        print(f"stemdeck {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if progress is not None:
            progress.uninstall()
