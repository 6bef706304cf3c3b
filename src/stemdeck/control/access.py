"""Who may send OSC and which files messages may open.

Holds :func:`parse_allow` (``--allow CIDR``) and :class:`MediaRoots`
(``--media-root DIR``): the OSC server drops packets from senders outside the
allowed networks, and gives the Controller a ``check_path`` that refuses any
path with a ``..`` component or whose real path (symlinks followed) lies
outside every root, before anything is opened.

Pure Python; any thread.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Iterable

from stemdeck.errors import CommandError, UsageError


def parse_allow(values: Iterable[str] | None) -> list:
    """``--allow`` values -> networks; UsageError naming a bad one."""
    nets = []
    for value in values or ():
        text = str(value).strip()
        try:
            nets.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise UsageError(f"--allow {value}: not an address or network; use e.g. 192.168.1.20 "
                             "or 192.168.1.0/24 (repeat --allow for more)") from None
    return nets


class MediaRoots:
    """``--media-root``: which files ``/load_buffer``, ``/play`` and ``/cue`` may open."""

    def __init__(self, roots: Iterable[str]):
        self.roots: list[str] = []
        for root in roots:
            real = os.path.realpath(os.path.expanduser(str(root)))
            if not os.path.isdir(real):
                raise UsageError(f"--media-root {root}: no such folder")
            if real not in self.roots:
                self.roots.append(real)
        if not self.roots:
            raise ValueError("MediaRoots needs at least one folder")

    def _inside(self, real: str) -> bool:
        for root in self.roots:
            try:
                if os.path.commonpath([real, root]) == root:
                    return True
            except ValueError:
                continue
        return False

    def resolve(self, path: str) -> str:
        """A relative path names a file in the roots (the first root that has
        it, else the first root); an absolute path is kept."""
        if os.path.isabs(path) or path.startswith("~"):
            return path
        for root in self.roots:
            candidate = os.path.join(root, path)
            if os.path.lexists(candidate):
                return candidate
        return os.path.join(self.roots[0], path)

    def check(self, path: str) -> None:
        """Raise CommandError unless ``path`` is inside a root (the Controller's
        ``check_path``: called before any file is opened)."""
        if not isinstance(path, str):
            return
        if ".." in path.replace("\\", "/").split("/"):
            raise CommandError(f"outside media root: '..' is not allowed in paths ({path}); "
                               "name the file inside the media root")
        # the decoder opens the path as given; the sample cache keys on ~ expanded: check both
        for candidate in {os.path.realpath(path), os.path.realpath(os.path.expanduser(path))}:
            if not self._inside(candidate):
                where = " or ".join(self.roots)
                raise CommandError(f"outside media root: {path} is not under {where} "
                                   "(symlinks are followed)")
