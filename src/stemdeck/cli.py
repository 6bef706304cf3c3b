"""The ``stemdeck`` command line: one subcommand per task.

Runs on the main thread. Each subcommand lives in its own module exposing
``add_arguments(parser)`` and ``run(args) -> int``; those modules import
numpy/numba lazily inside ``run`` so that ``stemdeck --help`` and argument
errors stay instant (start-up time is part of the product).
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
}


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad flags already; add how to get help."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n(see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from stemdeck import __version__

    parser = _Parser(prog="stemdeck", description="Real-time stem mixing server.")
    parser.add_argument("--version", action="version", version=f"stemdeck {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:   # a broken install: say which command and why, never drop it
            raise StemdeckError(f"the '{name}' command cannot be loaded ({module_name}): {exc}") from exc
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
    except StemdeckError as exc:
        print(f"stemdeck: {exc}", file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except UsageError as exc:
        print(f"stemdeck {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except StemdeckError as exc:
        print(f"stemdeck {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
