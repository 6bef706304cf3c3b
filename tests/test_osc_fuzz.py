"""Property-based fuzzing of the live OSC server (hypothesis): random bytes,
messages of the table with random and hostile arguments, truncated and
corrupted packets, random and nested bundles with random timetags, thrown
at a server whose engine keeps rendering. After every example the server
still answers ``/status``; at the end it has never hit an internal error,
has answered no message with an internal-error ``/fail``, and the engine
has kept rendering throughout.

The parser is also checked on its own: any byte string either parses or
raises WireError (never another exception), and what our encoder writes
python-osc reads back the same.

Then the real thing: 5,000 packets from benchmarks/fuzz.py's generator
(random bytes, mutated messages, huge and deeply nested bundles), sent at
full speed over UDP to a real ``stemdeck serve --backend null``, in
batches whose seeds hypothesis picks: every packet is received or dropped
by the kernel and counted, every reply parses with python-osc, nothing
errs inside, the clock moves on, the stem plays on, and SIGINT ends the
server with status 0. ``benchmarks/fuzz.py --packets 100000`` does the same
at scale.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pythonosc.osc_message import OscMessage

from osctools import Rig, write_wav
from signals import dc
from stemdeck.control import osc_wire as wire
from stemdeck.control import spec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import fuzz  # noqa: E402  (benchmarks/fuzz.py: the packet generator and the accounting)

ADDRESSES = sorted(a for a in spec.BY_ADDRESS if a != "/quit")   # /quit would end the run (tested)
EXAMPLES = 300


@pytest.fixture(scope="module")
def fuzz_rig(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_root")
    write_wav(root, "dc.wav", dc(0.25, 1.0))
    r = Rig(256, media_roots=[str(root)]).start()
    r.client.send("/load_buffer", 100, "dc.wav")
    r.client.expect("/done", timeout=5)
    r.client.send("/play_stem", 100, 1.0, 0.5, 1, 0.0)
    r.fails = []
    yield r
    r.stop()


# -- strategies ---------------------------------------------------------------------------------------

args_st = st.lists(st.one_of(
    st.integers(-2**31, 2**31 - 1),
    st.integers(-5, 9000),
    st.floats(width=32, allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 0.5, 1.0, 4.0, 4.0001, -0.0, 1e30, float("nan"), float("inf")]),
    st.text(max_size=24),
    st.sampled_from(["A", "b", "low", "mid", "hi", "E", "", "../../etc/passwd", "/etc/passwd",
                     "dc.wav", "~/x.wav", "\x00", "1e999"]),
    st.binary(max_size=16),
    st.booleans(),
    st.none(),
), max_size=7)

message_st = st.builds(wire.encode_message,
                       st.one_of(st.sampled_from(ADDRESSES),
                                 st.text(max_size=12).map(lambda t: "/" + t)),
                       args_st)


def _now_plus(seconds: float) -> int:
    return wire.ntp_from_unix_ns(time.time_ns() + int(seconds * 1e9))


timetag_st = st.one_of(
    st.sampled_from([0, 1, 2**64 - 1, 2**63]),
    st.floats(-3.0, 1.0).map(_now_plus),
    st.integers(0, 2**64 - 1),
)


@st.composite
def bundle_st(draw, depth=0):
    elements = draw(st.lists(
        message_st if depth >= 2 else st.one_of(message_st, bundle_st(depth=depth + 1)),
        max_size=4))
    return wire.encode_bundle(draw(timetag_st), elements)


@st.composite
def mangled(draw, packet):
    data = bytearray(draw(packet))
    how = draw(st.sampled_from(["keep", "truncate", "flip", "extend"]))
    if how == "truncate" and data:
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif how == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    elif how == "extend":
        data += draw(st.binary(max_size=12))
    return bytes(data)


packet_st = st.one_of(
    st.binary(max_size=64),
    mangled(message_st),
    mangled(bundle_st()),
    st.binary(min_size=40000, max_size=40000),        # oversized
)


def _is_quit(data: bytes) -> bool:
    try:
        packet = wire.parse_packet(data)
    except wire.WireError:
        return False
    stack = [packet]
    while stack:
        p = stack.pop()
        if isinstance(p, wire.Message):
            if p.address == "/quit":
                return True
        else:
            stack.extend(p.elements)
    return False


# -- the live fuzz ------------------------------------------------------------------------------------

@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(packets=st.lists(packet_st, min_size=1, max_size=4))
def test_random_and_malformed_packets_never_disturb_the_server(fuzz_rig, packets):
    r = fuzz_rig
    c = r.client
    for data in packets:
        if not _is_quit(data):
            c.send_raw(data)
    c.send("/status")
    args = c.expect("/status.reply", timeout=2)
    assert args[0] == 1 and args[7] == 44100          # scsynth's layout: unused, ..., nominal SR
    for address, reply in c.drain(0):
        if address == "/fail":
            r.fails.append(reply)
    c.inbox = []


def test_after_the_fuzz_the_server_is_sound(fuzz_rig):
    r = fuzz_rig
    frame = r.engine.frame
    time.sleep(0.2)
    assert r.engine.frame - frame > 0.15 * 44100            # still rendering in real time
    assert r.server.running
    counters = r.server.counters()
    assert counters["internal_errors"] == 0
    assert not [f for f in r.fails if "internal error" in str(f)]
    assert counters["parse_errors"] > 0 and counters["failed"] > 0
    st_ = r.client.status()
    assert st_["sample_rate"] == 44100
    # nothing outside the media root was ever loaded
    assert all(b.key.startswith(str(r.server.media.roots[0])) for b in r.controller.buffers.values())


# -- the parser alone ------------------------------------------------------------------------------------

@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(data=st.one_of(st.binary(max_size=128), mangled(message_st), mangled(bundle_st())))
def test_parser_either_parses_or_raises_wire_error(data):
    try:
        wire.parse_packet(data)
    except wire.WireError as exc:
        assert exc.reason


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(address=st.sampled_from(ADDRESSES), args=st.lists(st.one_of(
    st.integers(-2**31, 2**31 - 1), st.floats(width=32, allow_nan=False),
    st.text(st.characters(blacklist_characters="\x00"), max_size=20),
    st.binary(max_size=20)), max_size=6))
def test_encoder_and_parser_agree_with_python_osc(address, args):
    data = wire.encode_message(address, args)
    ours = wire.parse_packet(data)
    theirs = OscMessage(data)
    assert ours.address == theirs.address == address
    assert len(ours.args) == len(theirs.params) == len(args)
    for a, b, sent in zip(ours.args, theirs.params, args):
        if isinstance(sent, float):
            assert a == b or (math.isnan(a) and math.isnan(b))
        else:
            assert a == b == sent


def test_a_nul_inside_a_string_cannot_misalign_a_reply():
    data = wire.encode_message("/fail", ["/x", "a\x00b", 7])
    msg = wire.parse_packet(data)
    assert msg.args == ("/x", "a\\x00b", 7)


def test_a_path_that_is_not_utf8_is_escaped_in_the_fail_reply(fuzz_rig):
    c = fuzz_rig.client
    # the fuzz test before shares this rig: its /fail /load_buffer replies are not this one's
    while c._read(0.2) is not None:
        pass
    c.inbox.clear()
    c.send_raw(wire.encode_message("/load_buffer", [101, "PLAC"]).replace(b"PLAC", b"\xff\xfe\xc3("))
    reason = c.expect("/fail", first="/load_buffer")[1]           # python-osc parsed it
    assert "\\xff\\xfe\\xc3(" in reason, reason


# -- the real server, at full speed ----------------------------------------------------------------------

BATCHES, PER_BATCH = 5, 1000          # 5,000 packets


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    proc, output, port, checker = fuzz.start_server(tmp_path_factory.mktemp("fuzz_serve"))
    run = {"proc": proc, "output": output, "port": port, "checker": checker, "sent": 0}
    yield run
    checker.close()
    if proc.poll() is None:
        output.stop()


@settings(max_examples=BATCHES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_fuzzed_packets_at_full_speed_never_stop_the_music(served, seed):
    result = fuzz.fire(served["port"], seed, PER_BATCH, served["checker"])
    served["sent"] += result["sent"]
    assert fuzz.problems(result) == [], {k: v for k, v in result.items() if k not in ("before", "after")}
    assert result["server"]["parse_errors"] > 0 or result["socket_drops"] > 0
    assert fuzz.music_plays_on(served["checker"], result["after"]) is None
    assert served["proc"].poll() is None


def test_after_the_fuzz_sigint_ends_the_server_cleanly(served):
    assert served["sent"] == BATCHES * PER_BATCH
    output = served["output"]
    assert output.stop() == 0, "".join(output.tail)
    assert not output.errors, output.errors
