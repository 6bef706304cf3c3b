"""What the OSC transport tells about its sockets: the start-up lines and warnings, and the kernel's dropped datagrams.

Apart from :mod:`stemdeck.control.osc.transport` (which owns the sockets) so
that module keeps to the control loop. Pure functions of the bound address,
the ``--host``, ``--tcp`` and ``--allow`` settings.
"""

from __future__ import annotations

import logging

from stemdeck.control.osc.addresses import is_wildcard, peer_text


def kernel_drops(inode: int) -> int | None:
    """Datagrams the kernel dropped from the UDP socket with this inode because
    its receive buffer was full (Linux ``/proc/net/udp``); None if not found."""
    key = str(inode)
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(name, encoding="ascii") as fh:
                next(fh, None)
                for line in fh:
                    parts = line.split()
                    if len(parts) >= 13 and parts[9] == key:
                        return int(parts[-1])
        except (OSError, ValueError):
            continue
    return None


def describe(address: tuple, host: str, tcp: bool, allow) -> list[str]:
    bound_host, _port = address
    lines = [f"{'osc':<15} UDP {peer_text(address)}" + (" and TCP" if tcp else "")
             + ("" if not is_wildcard(host) else " (all interfaces)")]
    if allow:
        senders = ", ".join(map(str, allow))
    elif is_wildcard(host):
        senders = "anyone on the network (no --allow)"
    else:
        senders = f"anyone who can reach {bound_host}"
    lines.append(f"{'osc senders':<15} {senders}")
    return lines


def log_startup(log: logging.Logger, address: tuple, host: str, tcp: bool, allow) -> None:
    where = peer_text(address)
    log.info("OSC: listening on UDP %s%s", where, " and TCP" if tcp else "")
    if is_wildcard(host):
        if allow:
            log.warning("OSC: listening on all interfaces (%s); only %s may send",
                        where, ", ".join(map(str, allow)))
        else:
            log.warning(
                "OSC: listening on all interfaces (%s): anyone who can reach this machine "
                "can control stemdeck and make it load audio files; limit senders with "
                "--allow CIDR (e.g. --allow 192.168.1.0/24) and files with --media-root DIR",
                where)
    elif allow:
        log.info("OSC: only %s may send", ", ".join(map(str, allow)))
