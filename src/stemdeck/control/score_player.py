"""Playing a score live: each line posted about a second ahead with ``at=`` its exact frame, paced by the engine's clock.

A score's times (:mod:`stemdeck.control.score`) are seconds from its
start, which is :data:`SCORE_LEAD_SECONDS` after the player begins. Each
line is dispatched to the Controller :data:`SCORE_AHEAD_SECONDS` ahead of
its frame with ``at=`` that frame, so the engine applies it on that frame;
the player paces itself by the engine's clock and never sleeps to schedule
inside the engine. With a recording started before the audio, the
recording from the start frame on is the offline render of the same score
(``stemdeck render``).

Threads: a coroutine on the control thread's asyncio loop (the live
server's, :mod:`stemdeck.live`).
"""

from __future__ import annotations

import asyncio
import logging

SCORE_LEAD_SECONDS = 0.5       # the score starts this long after the player begins
SCORE_AHEAD_SECONDS = 1.0      # lines are posted this far ahead of their frame

log = logging.getLogger("stemdeck")


async def play_score(engine, controller, lines, *, on_start) -> None:
    """Dispatch every line of a read score at its frame; ``on_start(frame)``
    is told the engine frame of the score's time zero before the first line."""
    sr = engine.sample_rate
    start = engine.frame + round(SCORE_LEAD_SECONDS * sr)
    late_before = engine.stats()["late_commands"]
    on_start(start)
    ahead = round(SCORE_AHEAD_SECONDS * sr)
    for line in lines:
        frame = start + round(line.time * sr)
        while True:
            wait = frame - ahead - engine.frame
            if wait <= 0:
                break
            # the audio clock may stop (device lost): look again at least every 0.25 s
            await asyncio.sleep(min(wait / sr, 0.25))
        controller.dispatch(line.call, at=frame, sender=line.where)
    last = start + round(lines[-1].time * sr)
    while engine.frame < last:
        await asyncio.sleep(min(max((last - engine.frame) / sr, 0.01), 0.25))
    late = engine.stats()["late_commands"] - late_before
    log.info("score: all %d messages played%s", len(lines),
             f"; {late} commands ran late (a load took longer than the {SCORE_AHEAD_SECONDS:g} s "
             "look-ahead)" if late else "")
