"""Choosing and opening the output backend from the settings.

Holds :func:`open_output`. Both backends have the same face: ``open()``,
``start()``, ``close()``, ``info()`` (including ``state``, ``losses``,
``reconnects``), ``describe()``, ``state``,
``reported_latency`` (seconds), ``block_size``, ``sample_rate``.

Control thread only.
"""

from __future__ import annotations

from stemdeck.errors import UsageError


def open_output(engine, settings, *, reconnect: float = 30.0, realtime: bool = False,
                on_failed=None, on_message=None, on_event=None, rescan: bool = False):
    """Make and open the backend ``settings.backend`` names ("portaudio" or
    "null") for ``engine`` at ``settings.buffer_size`` / ``settings.sample_rate``.
    ``on_message(text)`` receives lines worth printing (real-time results);
    ``on_event(kind, detail)`` hears the device "lost" (reason) and "back"
    (seconds out), from the output's monitor thread (the null backend has
    no device to lose).
    Raises DeviceError / UsageError (no device: exit status 2 with a hint to
    use ``--backend null``)."""
    say = on_message or (lambda text: None)
    if settings.backend == "null":
        from stemdeck.audio.null import NullOutput

        def on_rt(ok, message):
            say(f"--realtime: {'clock thread ' + message if ok else message}")

        output = NullOutput(engine, block_size=settings.buffer_size, sample_rate=settings.sample_rate,
                            realtime=realtime, on_realtime=on_rt)
        output.open()
        return output
    if settings.backend != "portaudio":
        raise UsageError(f"backend {settings.backend!r}: use portaudio or null")
    from stemdeck.audio.portaudio import PortAudioOutput

    def prepare(out):
        if realtime:
            from stemdeck.audio import realtime as rt

            for line in rt.prepare_portaudio(out):
                say(line)

    output = PortAudioOutput(engine, block_size=settings.buffer_size, sample_rate=settings.sample_rate,
                             device=settings.device, latency=settings.latency, reconnect=reconnect,
                             on_failed=on_failed, on_realtime=prepare, on_event=on_event)
    output.open(rescan=rescan)
    return output
