"""Hostile OSC at full speed against a real ``stemdeck serve --backend null``.

    .venv/bin/python benchmarks/fuzz.py [--packets 100000] [--seed 1] [--rate PPS] [--json out.json]

Starts ``stemdeck serve --backend null`` (a subprocess, real UDP on a free
loopback port, ``--media-root`` a temporary folder) playing one looped stem,
then sends ``--packets`` datagrams as fast as the socket takes them (or
``--rate`` per second: at full speed the kernel drops most of them before
the server can read them, counted, so a paced run is what makes the server
parse and answer them all), from a seeded generator (:func:`packets`), in
these kinds:

- ``random``: random bytes, some starting with ``/`` or ``#bundle``;
- ``mutated``: a message of the table with plausible and hostile arguments
  (NaN, huge numbers, ``..`` paths, strings that are not UTF-8), then
  truncated, a byte flipped, extended, or a type tag changed;
- ``huge``: a bundle of many messages near (and past) the 32 KiB packet limit,
  timetags from "now" to years ahead (which fill the future-bundle queue);
- ``nested``: bundles nested 1 to 12 deep (the limit is 8).

Messages that would legitimately stop the music (``/quit``, ``/reset``,
``/mixer_cleanup``, deck-wide ``/play`` ``/cue`` ``/fade`` ``/start_group``,
anything naming the playing stem's buffer) and ``/notify`` (whose events
would never let the reply stream end) are not sent: the generator parses
each packet with the server's own parser and draws again.

Checks (exit status 1 if any fails): the server survived and answers
``/status.json``; every packet was either received by the server
(``osc.packets``) or dropped by the kernel's full receive buffer and counted
(``osc.socket_drops``); when none was dropped, the server's parse errors and
oversized packets equal what the generator knows it sent; no internal error;
every reply parses with python-osc; the engine's clock moved on and the stem
still plays. Reported: packets/s sent, replies received, counted drops.
A benchmark: figures depend on the machine and what else runs on it.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))          # tests/serveproc.py
sys.path.insert(0, str(HERE.parent / "src"))

from pythonosc.osc_packet import OscPacket  # noqa: E402

from stemdeck.control import osc_wire as wire  # noqa: E402
from stemdeck.control import spec  # noqa: E402

SR = 44100
PROTECTED_ID = 4000              # the stem that must keep playing (deck D)
DENY = frozenset({"/quit", "/reset", "/mixer_cleanup", "/play", "/cue", "/fade", "/start_group",
                  "/notify"})
ADDRESSES = sorted(a for a in spec.BY_ADDRESS if a not in DENY)
NOT_UTF8 = b"\xff\xfe\xc3\x28"   # four bytes that are not UTF-8
PLACEHOLDER = "\x01\x02\x03\x04"  # replaced by NOT_UTF8 after encoding (same length: padding holds)
MAX_PACKET = 32768

_FLOATS = [0.0, 0.5, 1.0, -1.0, 4.0, 1e30, -1e30, float("nan"), float("inf"), float("-inf"), -0.0]
_WORDS = ["A", "b", "d", "E", "low", "mid", "hi", "q", "bar", "", "dc.wav", "tone.wav", "../../etc/passwd",
          "/etc/passwd", "~/x.wav", "\x00", "1e999", "nan", PLACEHOLDER, "x" * 300]


def _value(rng: random.Random, kind: str | None):
    """One argument: usually of the table's type, sometimes anything."""
    if kind is None or rng.random() < 0.2:
        kind = rng.choice(["int", "float", "string", "blob", "bool", "none"])
    if kind in ("int", "bool", "quantize", "bpm"):
        return rng.choice([rng.randint(-5, 9000), rng.randint(-2**31, 2**31 - 1), rng.randint(100, 4099),
                           rng.choice([0, 1, 2, 4, 8, 120]), 2**40])
    if kind == "float":
        return rng.choice([rng.uniform(-2, 5), rng.choice(_FLOATS)])
    if kind == "blob":
        return rng.randbytes(rng.randint(0, 24))
    if kind == "none":
        return rng.choice([None, True, False])
    return rng.choice(_WORDS)


def _message(rng: random.Random) -> bytes:
    if rng.random() < 0.9:
        msg = spec.BY_ADDRESS[rng.choice(ADDRESSES)]
        address, kinds = msg.address, [a.type for a in msg.args]
        n = max(0, len(kinds) + rng.choice([0, 0, 0, -1, 1, 3]))
    else:
        address, kinds = "/" + rng.choice(["x", "load", "status.jsonx", "dance", "ü"]), []
        n = rng.randint(0, 4)
    args = [_value(rng, kinds[i] if i < len(kinds) else None) for i in range(n)]
    return wire.encode_message(address, args).replace(PLACEHOLDER.encode(), NOT_UTF8)


def _mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    how = rng.choice(["keep", "keep", "truncate", "flip", "extend", "tag"])
    if how == "truncate" and data:
        del data[rng.randrange(len(data)):]
    elif how == "flip" and data:
        data[rng.randrange(len(data))] = rng.randrange(256)
    elif how == "extend":
        data += rng.randbytes(rng.choice([4, 8, rng.randint(1, 12)]))
    elif how == "tag":
        comma = data.find(b",")
        if 0 <= comma < len(data) - 1:
            data[comma + 1] = ord(rng.choice("ifsbhdtcrmTFNI[]xZ"))
    return bytes(data)


def _timetag(rng: random.Random) -> int:
    now = wire.ntp_now()
    return rng.choice([0, 1, 2**64 - 1, now, now - (5 << 32), now + (rng.randint(1, 3600) << 32),
                       now + (rng.randint(1, 10**6) << 32), rng.getrandbits(64)])


def _bundle(rng: random.Random, elements: list[bytes]) -> bytes:
    return wire.encode_bundle(_timetag(rng), elements)


def _nested(rng: random.Random, depth: int) -> bytes:
    inner = [_message(rng) for _ in range(rng.randint(0, 2))]
    if depth > 1:
        inner.append(_nested(rng, depth - 1))
    return _bundle(rng, inner)


def _one(rng: random.Random) -> tuple[str, bytes]:
    kind = rng.choices(["random", "mutated", "huge", "nested"], [2, 6, 1, 1])[0]
    if kind == "random":
        data = rng.randbytes(rng.randint(0, 96))
        if rng.random() < 0.5:
            data = rng.choice([b"/", b"#bundle\x00"]) + data[:len(data) & ~3]
    elif kind == "mutated":
        data = _mutate(rng, _message(rng) if rng.random() < 0.8 else _bundle(rng, [_message(rng)]))
    elif kind == "huge":
        target = rng.choice([2000, 16000, MAX_PACKET - 64, MAX_PACKET + rng.randint(4, 4000)])
        parts: list[bytes] = []
        while sum(len(p) + 4 for p in parts) < target:
            parts.append(_message(rng))
        data = _bundle(rng, parts)
    else:
        data = _mutate(rng, _nested(rng, rng.randint(1, 12)))
    return kind, data


def _allowed(data: bytes) -> tuple[bool, bool]:
    """(may be sent, is valid OSC the server will parse), by the server's own parser."""
    if len(data) > MAX_PACKET:
        return True, False
    try:
        packet = wire.parse_packet(data)
    except wire.WireError:
        return True, False
    stack = [packet]
    while stack:
        p = stack.pop()
        if isinstance(p, wire.Bundle):
            stack.extend(p.elements)
        elif p.address in DENY or PROTECTED_ID in p.args:
            return False, True
    return True, True


def packets(seed: int, count: int):
    """``count`` (kind, bytes, valid) triples from ``seed``; the same seed gives the same packets."""
    rng = random.Random(seed)
    made = 0
    while made < count:
        kind, data = _one(rng)
        ok, valid = _allowed(data)
        if ok:
            made += 1
            yield kind, data, valid


# -- running it against a server -----------------------------------------------------------------------

class Checker:
    """Asks the server for /status.json from a socket of its own."""

    def __init__(self, port: int):
        self.dest = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))

    def ask(self, address: str, *args, reply: str | None = None, timeout: float = 5.0) -> list:
        self.sock.sendto(wire.encode_message(address, args), self.dest)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                msg = wire.parse_packet(self.sock.recv(65536))
            except (socket.timeout, TimeoutError):
                break
            if msg.address == (reply or address + ".reply"):
                return list(msg.args)
        raise AssertionError(f"no reply to {address} within {timeout} s")

    def status(self) -> dict:
        return json.loads(self.ask("/status.json")[0])

    def close(self) -> None:
        self.sock.close()


def _udp_queue(*, port: int | None = None, sock: socket.socket | None = None) -> tuple[int, int]:
    """(bytes waiting in the receive queue, datagrams dropped) of the loopback UDP
    socket bound to ``port`` or of ``sock``, from Linux's /proc/net/udp ((0, 0) elsewhere)."""
    inode = str(os.fstat(sock.fileno()).st_ino) if sock is not None else None
    want = f"0100007F:{port:04X}" if port is not None else None
    try:
        with open("/proc/net/udp", encoding="ascii") as fh:
            next(fh, None)
            for line in fh:
                parts = line.split()
                if len(parts) >= 13 and (parts[9] == inode or parts[1] == want):
                    return int(parts[4].split(":")[1], 16), int(parts[-1])
    except OSError:
        pass
    return 0, 0


def fire(port: int, seed: int, count: int, checker: Checker, wait: float = 60.0, rate: float = 0.0) -> dict:
    """Send ``count`` packets at full speed (or ``rate`` per second); return what
    was sent, seen and counted."""
    generated = list(packets(seed, count))         # made first: the send loop runs at full speed
    before = checker.status()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.bind(("127.0.0.1", 0))
    replies: list[bytes] = []
    done = threading.Event()

    def receive():
        sock.settimeout(0.05)
        while not done.is_set():
            try:
                replies.append(sock.recv(65536))
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    kinds: dict[str, int] = {}
    invalid = 0
    t0 = time.perf_counter()
    for i, (kind, data, valid) in enumerate(generated):
        if rate:
            ahead = t0 + i / rate - time.perf_counter()
            if ahead > 0.001:
                time.sleep(ahead)
        sock.sendto(data, ("127.0.0.1", port))
        kinds[kind] = kinds.get(kind, 0) + 1
        invalid += not valid
    elapsed = time.perf_counter() - t0
    # the server has read everything when its receive queue is empty; then one
    # /status.json (which cannot be dropped now) is handled after every packet sent
    deadline = time.monotonic() + wait
    while _udp_queue(port=port)[0] and time.monotonic() < deadline:
        time.sleep(0.01)
    after = checker.status()
    got = after["osc"]["packets"] - before["osc"]["packets"] - 1          # less this /status.json
    drops = (after["osc"]["socket_drops"] or 0) - (before["osc"]["socket_drops"] or 0)
    # replies: until all the server counted have come (or were dropped here), or 2 s of quiet,
    # or ``wait`` (bundles due seconds to an hour ahead answer later); less the reply to `before`
    expected = after["osc"]["replies"] - before["osc"]["replies"] - 1
    quiet_until, give_up = time.monotonic() + 2.0, time.monotonic() + wait
    n = len(replies)
    while (len(replies) + _udp_queue(sock=sock)[1] < expected
           and time.monotonic() < min(quiet_until, give_up)):
        time.sleep(0.02)
        if len(replies) != n:
            n, quiet_until = len(replies), time.monotonic() + 2.0
    done.set()
    reader.join(2)
    own_drops = _udp_queue(sock=sock)[1]
    sock.close()
    bad = []
    for data in replies:
        try:
            OscPacket(data)
        except Exception as exc:                    # python-osc's ParseError and friends
            bad.append((data[:80], repr(exc)))
    d = {k: after["osc"][k] - before["osc"][k] for k in
         ("parse_errors", "oversized", "messages", "bundles", "accepted", "failed", "busy_dropped",
          "schedule_dropped", "internal_errors", "replies_dropped")}
    return {"sent": count, "kinds": kinds, "invalid_sent": invalid, "seconds": elapsed,
            "packets_per_s": count / elapsed if elapsed else 0.0, "server_received": got,
            "socket_drops": drops, "replies": len(replies), "replies_lost_here": own_drops,
            "unparseable_replies": bad, "server": d, "before": before, "after": after}


def problems(result: dict) -> list[str]:
    """What the run got wrong, in words (empty: all checks pass)."""
    out = []
    s = result["server"]
    if result["server_received"] + result["socket_drops"] != result["sent"]:
        out.append(f"{result['sent']} sent but {result['server_received']} received + "
                   f"{result['socket_drops']} counted drops")
    if result["socket_drops"] == 0 and s["parse_errors"] + s["oversized"] != result["invalid_sent"]:
        out.append(f"{result['invalid_sent']} invalid packets sent, server counted {s['parse_errors']} "
                   f"parse errors + {s['oversized']} oversized")
    if s["internal_errors"]:
        out.append(f"{s['internal_errors']} internal errors")
    if result["unparseable_replies"]:
        out.append(f"{len(result['unparseable_replies'])} replies python-osc cannot parse, e.g. "
                   f"{result['unparseable_replies'][0]}")
    return out


def music_plays_on(checker: Checker, before: dict, timeout: float = 10.0) -> str | None:
    """None if the clock moves on and the protected stem plays; else what is wrong."""
    deadline = time.monotonic() + timeout
    while True:
        st = checker.status()
        stems = [b for d in st["decks"] for b in d["buffers"] if b["id"] == PROTECTED_ID]
        moved = st["tempo"]["beats"] > before["tempo"]["beats"] and st["uptime_s"] > before["uptime_s"]
        if moved and stems and stems[0]["playing"]:
            return None
        if time.monotonic() > deadline:
            return f"clock moved: {moved}; stem: {stems}"
        time.sleep(0.05)


class Output:
    """Reads the server's output all along (a pipe nobody reads fills, and then
    the server's log calls block: /get_status logs its whole status); keeps
    the last lines and every error line."""

    def __init__(self, proc, keep: int = 200):
        self.proc = proc
        self.tail: collections.deque = collections.deque(maxlen=keep)
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.tail.append(line)
            if ("ERROR" in line or "Traceback" in line) and len(self.errors) < 100:
                self.errors.append(line)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGINT, then the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        status = self.proc.wait(timeout)
        self._thread.join(5)
        return status


def start_server(folder: Path):
    """``stemdeck serve --backend null`` playing a looped sine on buffer PROTECTED_ID;
    returns (process, its Output, port, Checker)."""
    import numpy as np
    import soundfile as sf

    from serveproc import free_port, start_serve

    t = np.arange(SR) / SR
    tone = np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * 2, 1).astype(np.float32)
    sf.write(folder / "tone.wav", tone, SR, subtype="FLOAT")
    sf.write(folder / "dc.wav", np.full((SR // 10, 2), 0.1, np.float32), SR, subtype="FLOAT")
    port = free_port()
    proc, startup = start_serve(["--backend", "null", "--port", str(port), "--buffer-size", "256",
                                 "--media-root", str(folder)], cwd=folder)
    output = Output(proc)
    checker = Checker(port)
    checker.ask("/load_buffer", PROTECTED_ID, "tone.wav", reply="/done", timeout=10)
    checker.sock.sendto(wire.encode_message("/play_stem", [PROTECTED_ID, 1.0, 0.5, 1]), checker.dest)
    if music_plays_on(checker, {"tempo": {"beats": -1.0}, "uptime_s": -1.0}) is not None:
        raise AssertionError("the stem did not start")
    return proc, output, port, checker


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packets", type=int, default=100000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="packets per second (default 0: full speed, when the kernel drops most)")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stemdeck-fuzz-") as tmp:
        proc, output, port, checker = start_server(Path(tmp))
        try:
            result = fire(port, args.seed, args.packets, checker, wait=120.0, rate=args.rate)
            wrong = problems(result)
            still = music_plays_on(checker, result["after"])
            if still:
                wrong.append(f"the music stopped: {still}")
        finally:
            checker.close()
            status = output.stop()
        survived = status == 0
        if not survived:
            wrong.append(f"serve exited {status}:\n{''.join(output.tail)}")
    s = result["server"]
    print(f"sent {result['sent']} packets in {result['seconds']:.2f} s ({result['packets_per_s']:,.0f}/s): "
          + ", ".join(f"{k} {v}" for k, v in sorted(result["kinds"].items())))
    print(f"server received {result['server_received']}, kernel dropped {result['socket_drops']} (counted); "
          f"parse errors {s['parse_errors']} + oversized {s['oversized']} (generator: "
          f"{result['invalid_sent']} invalid); messages {s['messages']} in {s['bundles']} bundles: "
          f"accepted {s['accepted']}, failed {s['failed']}, busy {s['busy_dropped']}, "
          f"future queue refused {s['schedule_dropped']}; internal errors {s['internal_errors']}")
    print(f"replies received {result['replies']} (lost on our socket {result['replies_lost_here']}, "
          f"not sent by the server {s['replies_dropped']}), unparseable "
          f"{len(result['unparseable_replies'])}; server survived: {'yes' if survived else 'NO'}")
    if args.json:
        Path(args.json).write_text(json.dumps({k: v for k, v in result.items() if k not in ("before", "after")},
                                              default=str, indent=1))
    for w in wrong:
        print("FAIL:", w)
    print("PASS" if not wrong else "FAIL")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
