"""Who may stop the server with ``/quit``: the ``quit_from`` setting (flag >
environment > stemdeck.toml > default: this machine's loopback addresses).
A ``/quit`` from elsewhere gets ``/fail /quit <reason naming the setting>`` and
the music plays on; before the server stops, ``/notify`` subscribers get
``/server stopping <why>``. Live tests run ``stemdeck serve --backend null`` on
real UDP, the foreign sender being this machine's own non-loopback address."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest
import soundfile as sf

from osctools import Client, message_bytes
from serveproc import free_port, start_serve
from signals import SR, sine
from stemdeck import config
from stemdeck.errors import UsageError


def _own_address() -> str | None:
    """A non-loopback IPv4 address of this machine (no packet is sent to find it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))         # TEST-NET-1: only picks the outgoing interface
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


# -- the setting ----------------------------------------------------------------------------------

def test_quit_from_follows_flag_environment_config_default(tmp_path):
    env = {"HOME": str(tmp_path)}
    st = config.resolve({}, ["quit_from"], environ=env, cwd=tmp_path)
    assert st.quit_from == ("127.0.0.0/8", "::1/128") and st.source("quit_from") == "default"
    assert "this machine (loopback)" in "\n".join(st.describe())
    (tmp_path / "stemdeck.toml").write_text('[osc]\nquit_from = ["192.168.1.0/24", "local"]\n')
    st = config.resolve({}, ["quit_from"], environ=env, cwd=tmp_path)
    assert st.quit_from == ("192.168.1.0/24", "127.0.0.0/8", "::1/128")
    assert st.source("quit_from").startswith("config ")
    st = config.resolve({}, ["quit_from"], environ={**env, "STEMDECK_QUIT_FROM": "none"}, cwd=tmp_path)
    assert st.quit_from == () and st.show("quit_from").startswith("nobody")
    st = config.resolve({"quit_from": "10.0.0.7, any"}, ["quit_from"],
                        environ={**env, "STEMDECK_QUIT_FROM": "none"}, cwd=tmp_path)
    assert st.quit_from == ("10.0.0.7/32", "0.0.0.0/0", "::/0") and st.source("quit_from") == "flag --quit-from"
    with pytest.raises(UsageError, match=r"/quit from 'lan' \(from flag --quit-from\) must be local .*"
                                         r"'lan' is not an address or network"):
        config.resolve({"quit_from": "lan"}, ["quit_from"], environ=env, cwd=tmp_path)


# -- live ---------------------------------------------------------------------------------------------

class ForeignClient(Client):
    """A client whose packets come from ``source`` (an address of this machine)."""

    def __init__(self, source: str, address):
        self.address = address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        self.inbox = []

    def send(self, address, *args):
        self.sock.sendto(message_bytes(address, args), self.address)


class Served:
    """serve on 0.0.0.0 playing a looped stem; a loopback client subscribed to /notify."""

    def __init__(self, tmp_path, *args, env=None):
        sf.write(tmp_path / "tone.wav", sine(440.0, 1.0, 0.3), SR, subtype="FLOAT")
        self.port = free_port()
        self.proc, self.startup = start_serve(
            ["--backend", "null", "--host", "0.0.0.0", "--port", str(self.port), "--buffer-size", "256",
             "--media-root", str(tmp_path), *args], cwd=tmp_path, env=env)
        self.local = Client(("127.0.0.1", self.port))
        self.local.send("/load_buffer", 100, "tone.wav")
        assert self.local.expect("/done", first="/load_buffer", timeout=10) == ["/load_buffer", 100]
        self.local.send("/play_stem", 100, 1.0, 1.0, 1)
        self.subscriber = Client(("127.0.0.1", self.port))
        self.subscriber.send("/notify", 1)
        self.subscriber.expect("/done", first="/notify")
        self.wait_playing()

    def playing(self) -> bool:
        st = json.loads(self.local.ask("/status.json", timeout=5)[0])
        return st["voices_playing"] == 1 and self.proc.poll() is None

    def wait_playing(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.playing():
            assert time.monotonic() < deadline, "the stem did not start"
            time.sleep(0.02)

    def refused(self, client: Client, setting_text: str) -> None:
        client.send("/quit")
        reason = client.expect("/fail", first="/quit", timeout=5)[1]
        assert "not allowed from" in reason and "quit_from setting" in reason, reason
        assert "--quit-from" in reason and setting_text in reason and "plays on" in reason, reason
        assert self.playing()
        assert not [m for m in self.subscriber.drain(0.1) if m[0] == "/server"]

    def finish(self) -> str:
        for c in (self.local, self.subscriber):
            c.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.startup + self.proc.communicate(timeout=60)[0]


def test_by_default_only_this_machine_may_quit_and_subscribers_are_told(tmp_path):
    own = _own_address()
    if own is None:
        pytest.skip("this machine has no non-loopback IPv4 address to send a foreign /quit from")
    s = Served(tmp_path)
    try:
        assert "/quit from      this machine (loopback)" in s.startup
        foreign = ForeignClient(own, (own, s.port))
        s.refused(foreign, "this machine (loopback)")
        foreign.close()
        s.local.send("/quit")
        assert s.local.expect("/done", first="/quit", timeout=5) == ["/quit"]
        why = s.subscriber.expect("/server", timeout=5)
        assert why[0] == "stopping" and why[1].startswith("/quit from 127.0.0.1:"), why
        assert s.proc.wait(30) == 0
    finally:
        text = s.finish()
    assert s.proc.returncode == 0, text


def test_the_flag_overrides_the_environment_and_sigint_still_tells_subscribers(tmp_path):
    own = _own_address()
    if own is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    s = Served(tmp_path, "--quit-from", own, env={**os.environ, "STEMDECK_QUIT_FROM": "none"})
    try:
        assert f"{own}/32" in s.startup and "from flag --quit-from" in s.startup
        s.refused(s.local, f"{own}/32")                   # loopback is not in the flag's list
        s.proc.send_signal(signal.SIGINT)
        why = s.subscriber.expect("/server", timeout=10)
        assert why == ["stopping", "shutting down"], why
        assert s.proc.wait(30) == 0
    finally:
        text = s.finish()
    assert s.proc.returncode == 0, text
