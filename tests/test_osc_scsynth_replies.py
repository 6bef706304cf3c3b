"""scsynth's reply layouts, live over UDP, read as a SuperCollider client reads
them: /status.reply (",iiiiiffdd"), /version.reply (",siisss") and
/done /notify with the client ID and max logins. The replies are decoded
from the raw datagram by this file's own reader, not by stemdeck's.
"""

from __future__ import annotations

import json
import socket
import struct
import time

import pytest

from osctools import SR, Client, Rig, message_bytes, write_wav
from signals import dc
from stemdeck import __version__
from stemdeck.control import spec


def read_osc(data: bytes) -> tuple[str, str, list]:
    """(address, type tags, values) of one OSC message, as a client parses it."""
    def string(at):
        end = data.index(b"\x00", at)
        return data[at:end].decode(), (end + 4) & ~3

    address, at = string(0)
    tags, at = string(at)
    values = []
    for tag in tags[1:]:
        if tag == "i":
            values.append(struct.unpack_from(">i", data, at)[0])
            at += 4
        elif tag == "f":
            values.append(struct.unpack_from(">f", data, at)[0])
            at += 4
        elif tag == "d":
            values.append(struct.unpack_from(">d", data, at)[0])
            at += 8
        elif tag == "s":
            text, at = string(at)
            values.append(text)
        else:
            raise AssertionError(f"a type a SuperCollider client does not expect here: {tag!r}")
    assert at == len(data), "trailing bytes"
    return address, tags, values


class RawClient:
    """A bare UDP socket: sends a message, returns the raw reply with that address."""

    def __init__(self, server):
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(3.0)

    def ask(self, address, *args, reply):
        self.sock.sendto(message_bytes(address, args), self.server)
        while True:                                   # a timeout raises: no reply
            got = read_osc(self.sock.recv(65536))
            if got[0] == reply:
                return got

    def close(self):
        self.sock.close()


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    write_wav(d, "dc.wav", dc(0.5, 2.0))
    r = Rig(256).start()
    r.media = d
    yield r
    r.stop()


@pytest.fixture
def raw(rig):
    c = RawClient(rig.server.address)
    yield c
    c.close()


def test_status_reply_has_scsynths_nine_fields(rig, raw):
    c = rig.client
    c.send("/mixer_cleanup")
    c.send("/load_buffer", 100, str(rig.media / "dc.wav"))
    c.send("/load_buffer", 1100, str(rig.media / "dc.wav"))
    c.send("/sync", 5)
    c.expect("/synced", first=5, timeout=5)
    c.send("/play_stem", 100)
    deadline = time.monotonic() + 5
    while True:                                      # until the engine has started it
        address, tags, v = raw.ask("/status", reply="/status.reply")
        if v[1] == 1 or time.monotonic() > deadline:
            break
    assert tags == ",iiiiiffdd"
    unused, ugens, synths, groups, synthdefs, avg_cpu, peak_cpu, nominal_sr, actual_sr = v
    assert unused == 1
    assert ugens == synths == 1                      # one stem playing
    assert groups == 4                               # the decks
    assert synthdefs == 2                            # buffers holding a sample
    assert 0.0 <= avg_cpu <= peak_cpu < 100.0        # DSP load, percent
    assert nominal_sr == actual_sr == SR
    detail = json.loads(c.ask("/status.json")[0])    # stemdeck's own figures stay there
    assert detail["buffers_loaded"] == 2 and detail["buffer_size"] == 256
    # /get_status answers the same layout (and logs crowdstream's status lines)
    assert raw.ask("/get_status", reply="/status.reply")[1] == ",iiiiiffdd"
    c.send("/mixer_cleanup")


def test_version_reply_has_scsynths_six_fields(raw):
    address, tags, v = raw.ask("/version", reply="/version.reply")
    assert tags == ",siisss"
    name, major, minor, patch, branch, commit = v
    assert name == "stemdeck"
    assert f"{major}.{minor}{patch}" == __version__ and patch.startswith(".")
    assert branch == "" and commit == ""


def test_done_notify_carries_the_client_id_and_max_logins(rig, raw):
    other = Client(rig.server.address)
    try:
        assert raw.ask("/notify", 1, 3, reply="/done") == ("/done", ",sii", ["/notify", 3, spec.MAX_LOGINS])
        # another client asking for 3 gets a free one; asking again keeps its own
        other.send("/notify", 1, 3)
        got = other.expect("/done", first="/notify")
        assert got[1] != 3 and got[1] in range(spec.MAX_LOGINS) and got[2] == spec.MAX_LOGINS
        assert raw.ask("/notify", 1, reply="/done")[2] == ["/notify", 3, spec.MAX_LOGINS]
        # unsubscribing frees the ID
        assert raw.ask("/notify", 0, reply="/done")[2][:2] == ["/notify", 3]
        other.send("/notify", 0)
        other.expect("/done", first="/notify")
        other.send("/notify", 1, 3)
        assert other.expect("/done", first="/notify") == ["/notify", 3, spec.MAX_LOGINS]
        other.send("/notify", 0)
        other.expect("/done", first="/notify")
    finally:
        other.close()
