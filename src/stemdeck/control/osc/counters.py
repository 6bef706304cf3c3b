"""What the OSC server counts (``/status.json`` "osc") and its flood-proof logging.

Counters are written on the control thread and read as a snapshot by
anyone (``OscServer.counters()``, the reporter thread, benchmarks).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass


@dataclass
class Counters:
    """What the server has seen since start (``/status.json`` "osc", benchmarks)."""
    packets: int = 0             # datagrams / TCP frames received (allowed senders)
    bytes: int = 0
    messages: int = 0            # messages handed to the dispatcher (bundled or not)
    bundles: int = 0
    accepted: int = 0            # messages the Controller took (applied, or waiting for a load)
    failed: int = 0              # messages answered /fail (validation, busy, ...)
    parse_errors: int = 0        # packets that were not valid OSC
    oversized: int = 0
    not_allowed: int = 0         # packets dropped: sender outside --allow
    busy_dropped: int = 0        # messages dropped: engine command ring nearly full
    engine_dropped: int = 0      # commands the engine ring refused anyway
    late: int = 0                # bundles that ran after their frame
    scheduled: int = 0           # messages waiting in the future-bundle heap now
    schedule_dropped: int = 0    # messages refused: heap full or timetag absurd
    replies: int = 0
    replies_dropped: int = 0     # replies the socket could not take
    notifications: int = 0
    internal_errors: int = 0
    ignored_arguments: int = 0   # extra trailing arguments and empty arrays, ignored as crowdstream did
    tcp_clients: int = 0


class RateLimitedLog:
    """At most ``per_second`` lines (bursts of ``burst``); the rest are counted
    and summarised in one line when logging is allowed again."""

    def __init__(self, logger: logging.Logger, per_second: float = 5.0, burst: int = 20):
        self.logger = logger
        self.rate = per_second
        self.burst = burst
        self._tokens = float(burst)
        self._last = time.monotonic()
        self.suppressed = 0
        self._lock = threading.Lock()

    def __call__(self, level: int, msg: str, *args) -> None:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens < 1.0:
                self.suppressed += 1
                return
            self._tokens -= 1.0
            suppressed, self.suppressed = self.suppressed, 0
        if suppressed:
            self.logger.log(level, "(%d similar lines suppressed)", suppressed)
        self.logger.log(level, msg, *args)

    def flush(self) -> None:
        with self._lock:
            suppressed, self.suppressed = self.suppressed, 0
        if suppressed:
            self.logger.warning("(%d similar lines suppressed)", suppressed)
