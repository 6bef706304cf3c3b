"""The live OSC server, in four parts: transport (sockets), schedule (timetags to frames), reporter (replies and events), server (the wiring).

:class:`~stemdeck.control.osc.server.OscServer` is the one entry point; the
modules say which thread runs what.
"""

from stemdeck.control.osc.counters import Counters, RateLimitedLog
from stemdeck.control.osc.server import OscServer

__all__ = ["OscServer", "Counters", "RateLimitedLog"]
