"""stemdeck: a real-time stem mixing server (OSC in, stereo audio out).

Public entry points, by task:

- mixing: :class:`stemdeck.engine.Engine` (``render(out)`` is the one render
  path shared by the device callback, offline render, tune, bench and tests);
- offline render of a score: ``stemdeck render`` (:mod:`stemdeck.tools.render`);
- the command line: :func:`stemdeck.cli.main`.
"""

__version__ = "0.1.0"
