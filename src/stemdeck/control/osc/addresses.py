"""Network addresses for the OSC server: resolving and binding errors, ``--allow`` networks, and how a peer is written in logs and replies."""

from __future__ import annotations

import errno
import ipaddress
import socket

from stemdeck.errors import UsageError


def peer_text(peer) -> str:
    """``host:port`` (``[v6]:port``) of an address tuple, else ``str(peer)``."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = peer[0]
        return f"[{host}]:{peer[1]}" if ":" in str(host) else f"{host}:{peer[1]}"
    return str(peer)


def peek_address(data) -> str:
    raw = bytes(data[:256]).split(b"\x00", 1)[0]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "?"
    return text if text.startswith("/") else "?"


def in_networks(host, nets) -> bool:
    """Is ``host`` (an address; IPv4-mapped IPv6 counts as IPv4) in one of ``nets``?"""
    try:
        ip = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in nets)


def is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "", "0:0:0:0:0:0:0:0")


def resolve(host: str, port: int):
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_DGRAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: cannot resolve it ({exc.strerror}); use an IP address "
                         "such as 127.0.0.1 or 0.0.0.0") from None
    family, _type, _proto, _canon, addr = infos[0]
    return family, addr


def bind_failure(proto: str, host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (f"OSC {proto} port {port} on {host} is already in use (another stemdeck, or "
                "SuperCollider's scsynth/sclang on 57120?): stop it or choose --port")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"--host {host} is not an address of this machine: use 127.0.0.1 or 0.0.0.0"
    if exc.errno == errno.EACCES:
        return f"not allowed to listen on {proto} port {port}: ports below 1024 need root; choose --port"
    return f"cannot listen on {proto} {host}:{port}: {exc.strerror or exc}"
