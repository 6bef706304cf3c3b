"""``stemdeck status``: ask a running server how it is doing.

    stemdeck status [--host ADDR] [--port PORT] [--timeout S] [--json]

Sends ``/status.json`` over UDP (the host and port follow the same settings
as ``serve``: flag, environment, stemdeck.toml) and prints the answer: the
audio settings and latency, underruns, DSP load and CPU, the clock, each
deck and the sample cache. ``--json`` prints the server's document as is.
Main thread; nothing but a socket.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

from stemdeck import config
from stemdeck.errors import StemdeckError, UsageError

SETTINGS = ("host", "port")
REPLY = "/status.json.reply"


PORT_HINT = "give the port the server listens on, 1 to 65535"


def _in_range(flag: str, text: str, kind, lo, hi, hint: str):
    """``text`` as ``kind`` within lo..hi, else argparse's one-line error with ``hint``."""
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise argparse.ArgumentTypeError(f"{flag} {text!r}: {hint}")
    return value


def _timeout(text: str) -> float:
    return _in_range("--timeout", text, float, 0.05, 60, "give 0.05 to 60 seconds, e.g. 2")


def _port(text: str) -> str:
    _in_range("--port", text, int, 1, 65535, PORT_HINT)
    return text                      # resolved as a setting (flag > environment > config file)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # --host and --port name the server to ask; they resolve like serve's settings, but
    # their help is this command's (serve's --port 0 means nothing here).
    config.add_arguments(parser, ())
    host, port = config.SETTINGS["host"], config.SETTINGS["port"]
    for s, what, kind in ((host, "address of the server to ask (0.0.0.0 and :: ask this machine)", None),
                          (port, "UDP port the server listens on, 1 to 65535", _port)):
        parser.add_argument(s.flag, dest=s.name, metavar=s.metavar, default=None, type=kind,
                            help=f"{what}. Env {', '.join(s.env)}; {config.CONFIG_FILE_NAME} [{s.section}] "
                                 f"{s.key}; default: {s.show(s.default)}, as serve")
    parser.add_argument("--timeout", type=_timeout, default=2.0, metavar="S",
                        help="how long to wait for the answer (default 2 s)")
    parser.add_argument("--json", action="store_true", help="print the server's JSON document as is")


def ask(host: str, port: int, timeout: float) -> dict:
    """The server's /status.json document, or StemdeckError if none answers."""
    from pythonosc.osc_message import OscMessage
    from pythonosc.osc_message_builder import OscMessageBuilder

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    target = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.sendto(OscMessageBuilder("/status.json").build().dgram, (target, port))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StemdeckError(f"no stemdeck server answered on {target}:{port} within {timeout:g} s "
                                    "(is 'stemdeck serve' running? give its --host and --port)")
            sock.settimeout(left)
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionRefusedError:
                raise StemdeckError(f"nothing listens on {target}:{port} "
                                    "(is 'stemdeck serve' running? give its --port)") from None
            try:
                msg = OscMessage(data)
            except Exception:
                continue
            if msg.address == REPLY and msg.params:
                return json.loads(msg.params[0])


def _pct(x) -> str:
    return "-" if x is None else f"{100 * float(x):.1f} %"


def show(doc: dict, out=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out or sys.stdout)
    rate, size = doc.get("sample_rate"), doc.get("buffer_size")
    console.print(f"[bold]stemdeck[/bold] up {doc.get('uptime_s', 0):.0f} s: {rate} Hz, {size} frames "
                  f"({doc.get('latency_ms', 0):.1f} ms per buffer)")
    underruns = doc.get("underruns", 0)
    colour = "red" if underruns else "green"
    console.print(f"underruns [{colour}]{underruns}[/{colour}], DSP load avg {_pct(doc.get('dsp_load_avg'))} "
                  f"peak {_pct(doc.get('dsp_load_peak'))}, CPU {doc.get('cpu_percent', 0):.0f} %, "
                  f"late commands {doc.get('late_commands', 0)}")
    tempo = doc.get("tempo", {})
    console.print(f"tempo {tempo.get('bpm', doc.get('bpm', 0)):.1f} BPM"
                  + (f" -> {tempo['target_bpm']:.1f}" if tempo.get("target_bpm") not in (None, tempo.get("bpm"))
                     else "")
                  + f", bar {doc.get('bar')} beat {doc.get('beat')} of {doc.get('meter', 4)}; "
                  f"{doc.get('voices_playing', 0)} stems playing, {doc.get('buffers_loaded', 0)} buffers loaded")
    decks = doc.get("decks") or []
    if decks:
        table = Table(show_edge=False)
        for col in ("deck", "level", "EQ low/mid/high %", "key lock", "playing"):
            table.add_column(col)
        for d in decks:
            playing = [b.get("name") or str(b.get("id")) for b in d.get("buffers", []) if b.get("playing")]
            eq = "/".join(f"{x:.0f}" for x in d.get("eq_percent", []))
            table.add_row(str(d.get("deck")), f"{d.get('level', 0):.2f}", eq,
                          "on" if d.get("keylock") else "off", ", ".join(playing) or "-")
        console.print(table)
    cache = doc.get("cache")
    if cache:
        console.print(f"samples: {cache.get('used_mb', 0):.0f} MB decoded of a {cache.get('budget_mb', 0):.0f} MB "
                      f"budget, {cache.get('mapped_mb', 0):.0f} MB memory-mapped, "
                      f"{cache.get('evictions', 0)} evictions")


def run(args) -> int:
    settings = config.resolve(args, SETTINGS)
    if settings.port == 0:
        raise UsageError(f"port 0 (from {settings.source('port')}): {PORT_HINT}")
    doc = ask(settings.host, settings.port, args.timeout)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        show(doc)
    return 0
