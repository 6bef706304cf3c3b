"""Settings: the one table of what a user can set, and where each value came from.

Every setting (buffer size, sample rate, device, ...) is one row of
:data:`SETTINGS` (:mod:`stemdeck.config.table`): its command-line flag,
environment variable(s), key in ``stemdeck.toml``, validator
(:mod:`stemdeck.config.values`), default and help text. Precedence,
highest first:

1. the command-line flag (``--buffer-size 256``);
2. the environment (``AUDIO_BUFFER_SIZE``, then ``STEMDECK_BUFFER_SIZE``);
3. one config file: ``--config FILE`` (or ``STEMDECK_CONFIG``), else
   ``./stemdeck.toml``, else ``$XDG_CONFIG_HOME/stemdeck/stemdeck.toml``
   (``~/.config/stemdeck/stemdeck.toml``); the first that exists is read,
   files are not merged (:mod:`stemdeck.config.toml_file`);
4. the default, which for the buffer size and cache depends on the machine
   (:mod:`stemdeck.platform_info`).

Tools call :func:`add_arguments` on their parser and :func:`resolve` in
``run`` (:mod:`stemdeck.config.resolve`); the :class:`Settings` it returns
knows each value's source, the warnings to show, and the lines to print at
start-up. A bad value anywhere raises :class:`~stemdeck.errors.UsageError`
(exit status 2) naming where it came from and what is valid.
:func:`write_config` updates a stemdeck.toml in place for ``stemdeck tune
--write-config``.

To add a setting, add one row to ``SETTINGS`` (and a test); nothing else.

This package presents the names tools use (``config.resolve``,
``config.SETTINGS``, ...); each is defined once, in the module named above.
Control thread only (start-up). Standard library only (and the engine's
plain facts, :mod:`stemdeck.engine.commands`): imported by every subcommand,
so it must stay cheap.
"""

from stemdeck.config.resolve import Settings, add_arguments, resolve
from stemdeck.config.table import BACKENDS, BUFFER_SIZE_MAX, BUFFER_SIZE_MIN, POWERS_OF_TWO, SETTINGS, Setting
from stemdeck.config.toml_file import (CONFIG_ENV, CONFIG_FILE_NAME, config_search_path, user_config_path,
                                       write_config)
from stemdeck.config.values import QUIT_FROM_WORDS, latency_text

__all__ = [
    "BACKENDS", "BUFFER_SIZE_MAX", "BUFFER_SIZE_MIN", "CONFIG_ENV", "CONFIG_FILE_NAME", "POWERS_OF_TWO",
    "QUIT_FROM_WORDS", "SETTINGS", "Setting", "Settings", "add_arguments", "config_search_path",
    "latency_text", "resolve", "user_config_path", "write_config",
]
