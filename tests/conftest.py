"""Shared pytest fixtures.

``jack_server``: a started JACK dummy server (44100 Hz, period 128) unique to
the test, stopped afterwards. ``make_jack_server(rate=..., period=...)``:
start any number with other settings. Tests using them are marked
``@pytest.mark.jack`` and skip when jackd is not installed. See
tests/jackserver.py.
"""

import pytest

from jackserver import JackServer, missing_tools


@pytest.fixture
def make_jack_server():
    """Factory: ``make_jack_server(rate=48000, period=256)`` -> started JackServer."""
    reason = missing_tools()
    if reason:
        pytest.skip(reason)
    servers = []

    def make(rate: int = 44100, period: int = 128, **kwargs) -> JackServer:
        server = JackServer(rate=rate, period=period, **kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.cleanup()


@pytest.fixture
def jack_server(make_jack_server):
    """A started JACK dummy server at 44100 Hz, period 128 (see tests/jackserver.py)."""
    return make_jack_server()
