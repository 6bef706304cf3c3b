"""Settings precedence (flag > environment > stemdeck.toml > default), sources,
every refusal and its message, config file lookup, and write_config."""

import argparse
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from stemdeck import config
from stemdeck.config import SETTINGS, resolve, user_config_path, write_config
from stemdeck.errors import UsageError
from stemdeck.platform_info import detect

FIXTURES = Path(__file__).parent / "fixtures" / "platforms"
PI4 = detect(FIXTURES / "raspberry-pi-4", system="Linux")
DESKTOP = detect(FIXTURES / "desktop-8-core", system="Linux")
POWERS = "32, 64, 128, 256, 512, 1024, 2048, 4096, 8192"


@pytest.fixture
def home(tmp_path):
    """A working folder and a home folder, both empty, and an environment
    that knows only HOME: nothing from the real user leaks in."""
    (tmp_path / "work").mkdir()
    (tmp_path / "home").mkdir()
    return tmp_path


def parse(argv=(), names=None):
    parser = argparse.ArgumentParser(exit_on_error=False)
    config.add_arguments(parser, names)
    return parser.parse_args(list(argv))


def run(tmp, argv=(), env=None, names=None, platform=PI4):
    environ = {"HOME": str(tmp / "home")}
    environ.update(env or {})
    return resolve(parse(argv, names), names, environ=environ, cwd=tmp / "work", platform=platform)


def toml(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- defaults and precedence ---


def test_defaults_with_nothing_set(home):
    s = run(home)
    assert s.as_dict() == {
        "buffer_size": 1024,
        "sample_rate": 44100,
        "device": None,
        "backend": "portaudio",
        "latency": "high",
        "host": "127.0.0.1",
        "port": 57120,
        "quit_from": ("127.0.0.0/8", "::1/128"),
        "stats_interval": 0.0,
        "cache_mb": 896,
        "bpm": 120.0,
        "stretch": "playback_rate",
        "keylock_engine": "finer",
        "bpm_config": None,
        "movement_bpm": True,
    }
    assert s.source("buffer_size") == "platform default (Raspberry Pi 4)"
    assert s.source("cache_mb") == "platform default (Raspberry Pi 4)"
    assert s.source("sample_rate") == "default"
    assert s.warnings == []
    assert s.config_path is None


@pytest.mark.parametrize(
    "platform, size, source",
    [
        (PI4, 1024, "platform default (Raspberry Pi 4)"),
        (detect(FIXTURES / "raspberry-pi-5", system="Linux"), 512, "platform default (Raspberry Pi 5)"),
        (DESKTOP, 256, "platform default (strong desktop, 8 cores)"),
        (detect(FIXTURES / "vm-2-core", system="Linux"), 512, "platform default (ordinary machine, 2 cores)"),
    ],
)
def test_platform_default_buffer_size(home, platform, size, source):
    s = run(home, platform=platform, names=["buffer_size"])
    assert s.buffer_size == size
    assert s.source("buffer_size") == source


def test_buffer_size_every_level(home):
    cfg = toml(home / "work" / "stemdeck.toml", "[audio]\nbuffer_size = 2048\n")

    s = run(home)
    assert (s.buffer_size, s.source("buffer_size")) == (2048, f"config {cfg}")

    s = run(home, env={"STEMDECK_BUFFER_SIZE": "512"})
    assert (s.buffer_size, s.source("buffer_size")) == (512, "environment STEMDECK_BUFFER_SIZE")

    s = run(home, env={"STEMDECK_BUFFER_SIZE": "512", "AUDIO_BUFFER_SIZE": "256"})
    assert (s.buffer_size, s.source("buffer_size")) == (256, "environment AUDIO_BUFFER_SIZE")
    assert s.warnings == [
        "AUDIO_BUFFER_SIZE=256 and STEMDECK_BUFFER_SIZE=512 are both set; using AUDIO_BUFFER_SIZE"
    ]

    s = run(home, ["--buffer-size", "128"], env={"STEMDECK_BUFFER_SIZE": "512", "AUDIO_BUFFER_SIZE": "256"})
    assert (s.buffer_size, s.source("buffer_size")) == (128, "flag --buffer-size")


def test_same_value_in_both_buffer_variables_is_not_a_warning(home):
    s = run(home, env={"STEMDECK_BUFFER_SIZE": "512", "AUDIO_BUFFER_SIZE": "512"})
    assert s.warnings == []


def test_empty_environment_variable_counts_as_unset(home):
    s = run(home, env={"AUDIO_BUFFER_SIZE": "", "STEMDECK_BUFFER_SIZE": "  ", "STEMDECK_PORT": ""})
    assert s.source("buffer_size") == "platform default (Raspberry Pi 4)"
    assert s.source("port") == "default"


# (setting, flag value, env value, toml text, expected from flag, env, toml)
EVERY_SETTING = [
    ("buffer_size", "256", "512", "2048", 256, 512, 2048),
    ("sample_rate", "48000", "48000", "48000", 48000, 48000, 48000),
    ("device", "3", "Focusrite", "2", 3, "Focusrite", 2),
    ("backend", "null", "NULL", '"null"', "null", "null", "null"),
    ("latency", "low", "0.02", "0.01", "low", 0.02, 0.01),
    ("host", "0.0.0.0", "localhost", '"::1"', "0.0.0.0", "localhost", "::1"),
    ("port", "9000", "0", "57121", 9000, 0, 57121),
    ("quit_from", "any", "10.0.0.0/8,local", '["192.168.1.20"]', ("0.0.0.0/0", "::/0"),
     ("10.0.0.0/8", "127.0.0.0/8", "::1/128"), ("192.168.1.20/32",)),
    ("stats_interval", "5", "0.5", "10", 5.0, 0.5, 10.0),
    ("cache_mb", "512", "0", "128", 512, 0, 128),
    ("bpm", "126", "174.5", "90", 126.0, 174.5, 90.0),
    ("stretch", "keylock", "playback_rate", '"keylock"', "keylock", "playback_rate", "keylock"),
    ("keylock_engine", "faster", "finer", '"faster"', "faster", "finer", "faster"),
    ("bpm_config", "a.json", "b.json", '"c.json"', "a.json", "b.json", "c.json"),
    ("movement_bpm", "off", "on", "false", False, True, False),
]


@pytest.mark.parametrize("name, flag_raw, env_raw, toml_raw, from_flag, from_env, from_toml", EVERY_SETTING)
def test_every_setting_from_every_source(home, name, flag_raw, env_raw, toml_raw, from_flag, from_env, from_toml):
    s = SETTINGS[name]
    cfg = toml(home / "work" / "stemdeck.toml", f"[{s.section}]\n{s.key} = {toml_raw}\n")
    env_var = s.env[-1]

    got = run(home, names=[name])
    assert (getattr(got, name), got.source(name)) == (from_toml, f"config {cfg}")

    got = run(home, env={env_var: env_raw}, names=[name])
    assert (getattr(got, name), got.source(name)) == (from_env, f"environment {env_var}")

    got = run(home, [s.flag, flag_raw], env={env_var: env_raw}, names=[name])
    assert (getattr(got, name), got.source(name)) == (from_flag, f"flag {s.flag}")


def test_every_setting_is_tested():
    assert {row[0] for row in EVERY_SETTING} == set(SETTINGS)


def test_env_names_follow_the_convention():
    for s in SETTINGS.values():
        assert s.env[-1] == "STEMDECK_" + s.name.upper()
    assert SETTINGS["buffer_size"].env == ("AUDIO_BUFFER_SIZE", "STEMDECK_BUFFER_SIZE")


def test_toml_string_for_a_number_is_accepted(home):
    toml(home / "work" / "stemdeck.toml", '[audio]\nbuffer_size = "256"\n')
    assert run(home).buffer_size == 256


def test_values_set_programmatically_on_the_namespace(home):
    # tune and tests set args.buffer_size = 256 (an int) rather than a string.
    args = argparse.Namespace(buffer_size=256, sample_rate=48000, config=None)
    s = resolve(args, ["buffer_size", "sample_rate"], environ={}, cwd=home / "work", platform=PI4)
    assert (s.buffer_size, s.sample_rate) == (256, 48000)
    assert resolve({"port": "9000"}, ["port"], environ={}, cwd=home / "work").port == 9000
    assert resolve(None, ["port"], environ={}, cwd=home / "work").port == 57120


# --- config file lookup ---


def test_working_folder_file_wins_over_user_file(home):
    local = toml(home / "work" / "stemdeck.toml", "[audio]\nbuffer_size = 256\n")
    toml(home / "home" / ".config" / "stemdeck" / "stemdeck.toml", "[audio]\nbuffer_size = 4096\n")
    s = run(home)
    assert s.buffer_size == 256
    assert s.config_path == local


def test_user_file_under_home_config(home):
    user = toml(home / "home" / ".config" / "stemdeck" / "stemdeck.toml", "[audio]\nbuffer_size = 4096\n")
    s = run(home)
    assert (s.buffer_size, s.source("buffer_size")) == (4096, f"config {user}")


def test_user_file_under_xdg_config_home(home):
    xdg = home / "xdg"
    user = toml(xdg / "stemdeck" / "stemdeck.toml", "[osc]\nport = 9001\n")
    toml(home / "home" / ".config" / "stemdeck" / "stemdeck.toml", "[osc]\nport = 9002\n")
    s = run(home, env={"XDG_CONFIG_HOME": str(xdg)})
    assert (s.port, s.source("port")) == (9001, f"config {user}")


def test_relative_xdg_config_home_is_ignored(home):
    assert user_config_path({"HOME": "/h", "XDG_CONFIG_HOME": "rel/dir"}) == Path("/h/.config/stemdeck/stemdeck.toml")
    assert user_config_path({"HOME": "/h", "XDG_CONFIG_HOME": "/x"}) == Path("/x/stemdeck/stemdeck.toml")


def test_files_are_not_merged(home):
    # The first file found is the config; the user file is not read at all.
    toml(home / "work" / "stemdeck.toml", "[osc]\nport = 9000\n")
    toml(home / "home" / ".config" / "stemdeck" / "stemdeck.toml", "[audio]\nbuffer_size = 4096\n")
    s = run(home)
    assert s.port == 9000
    assert s.source("buffer_size") == "platform default (Raspberry Pi 4)"


def test_config_flag_names_the_file(home):
    toml(home / "work" / "stemdeck.toml", "[audio]\nbuffer_size = 256\n")
    named = toml(home / "elsewhere.toml", "[audio]\nbuffer_size = 128\n")
    s = run(home, ["--config", str(named)])
    assert (s.buffer_size, s.source("buffer_size"), s.config_path) == (128, f"config {named}", named)


def test_config_flag_relative_to_working_folder(home):
    named = toml(home / "work" / "conf" / "live.toml", "[audio]\nbuffer_size = 128\n")
    s = run(home, ["--config", "conf/live.toml"])
    assert s.config_path == named
    assert s.buffer_size == 128


def test_config_from_environment(home):
    named = toml(home / "svc.toml", "[audio]\nbuffer_size = 8192\n")
    toml(home / "work" / "stemdeck.toml", "[audio]\nbuffer_size = 256\n")
    s = run(home, env={"STEMDECK_CONFIG": str(named)})
    assert s.buffer_size == 8192
    other = toml(home / "flag.toml", "[audio]\nbuffer_size = 64\n")
    assert run(home, ["--config", str(other)], env={"STEMDECK_CONFIG": str(named)}).buffer_size == 64


def test_named_config_file_must_exist(home):
    with pytest.raises(UsageError) as err:
        run(home, ["--config", str(home / "missing.toml")])
    assert str(err.value) == f"config file {home / 'missing.toml'} (from flag --config) does not exist"
    with pytest.raises(UsageError, match=r"\(from environment STEMDECK_CONFIG\) does not exist"):
        run(home, env={"STEMDECK_CONFIG": str(home / "missing.toml")})


def test_config_that_is_a_folder(home):
    (home / "work" / "stemdeck.toml").mkdir()
    with pytest.raises(UsageError, match="is a folder, not a file"):
        run(home)


def test_describe_names_the_config_file_or_where_it_looked(home):
    s = run(home)
    expected = f"none (looked for {home / 'work' / 'stemdeck.toml'}, {home / 'home' / '.config' / 'stemdeck' / 'stemdeck.toml'})"
    assert any(line.startswith("config file") and line.endswith(expected) for line in s.describe())
    cfg = toml(home / "work" / "stemdeck.toml", "")
    assert f"config file     {cfg}" in run(home).describe()


# --- bad values: exit-worthy messages ---


def test_the_documented_buffer_size_message(home):
    with pytest.raises(UsageError) as err:
        run(home, env={"AUDIO_BUFFER_SIZE": "10000"})
    assert str(err.value) == (
        "buffer size '10000' (from environment AUDIO_BUFFER_SIZE) must be a whole number "
        f"from 32 to 8192; powers of two are best: {POWERS}"
    )


@pytest.mark.parametrize("raw", ["0", "-256", "abc", "10000", "1.5", "", "31", "8193", "256 frames", "0x100"])
def test_bad_buffer_size_flag(home, raw):
    with pytest.raises(UsageError) as err:
        run(home, ["--buffer-size", raw])
    assert str(err.value) == (
        f"buffer size '{raw}' (from flag --buffer-size) must be a whole number from 32 to 8192; "
        f"powers of two are best: {POWERS}"
    )


@pytest.mark.parametrize("raw", ["1.5", "256.0", "true", "-1", "[256]"])
def test_bad_buffer_size_in_config_names_file_and_line(home, raw):
    cfg = toml(home / "work" / "stemdeck.toml", f"# my rig\n[audio]\nsample_rate = 48000\nbuffer_size = {raw}\n")
    with pytest.raises(UsageError) as err:
        run(home)
    shown = {"true": "true", "[256]": "[256]"}.get(raw, raw)
    assert str(err.value).startswith(
        f"buffer size '{shown}' (from config {cfg} line 4, [audio] buffer_size) must be a whole number"
    )


def test_bad_value_overridden_by_a_higher_source_is_not_an_error(home):
    toml(home / "work" / "stemdeck.toml", "[audio]\nbuffer_size = 99999\n")
    assert run(home, ["--buffer-size", "256"]).buffer_size == 256


@pytest.mark.parametrize(
    "flag, raw, message",
    [
        ("--sample-rate", "22050", "sample rate '22050' (from flag --sample-rate) must be 44100 or 48000"),
        ("--sample-rate", "44.1", "sample rate '44.1' (from flag --sample-rate) must be 44100 or 48000; did you mean 44100?"),
        ("--sample-rate", "48k", "sample rate '48k' (from flag --sample-rate) must be 44100 or 48000; did you mean 48000?"),
        ("--sample-rate", "48", "sample rate '48' (from flag --sample-rate) must be 44100 or 48000; did you mean 48000?"),
        ("--sample-rate", "fast", "sample rate 'fast' (from flag --sample-rate) must be 44100 or 48000"),
        ("--backend", "alsa", "backend 'alsa' (from flag --backend) must be portaudio or null"),
        ("--backend", "portaudoi", "backend 'portaudoi' (from flag --backend) must be portaudio or null; did you mean portaudio?"),
        ("--latency", "fast", "latency 'fast' (from flag --latency) must be low, high, or a number of seconds from 0.001 to 1 (e.g. 0.02 for 20 ms)"),
        ("--latency", "0", "latency '0' (from flag --latency) must be low, high, or a number of seconds from 0.001 to 1 (e.g. 0.02 for 20 ms)"),
        ("--latency", "-0.1", "latency '-0.1' (from flag --latency) must be low"),
        ("--latency", "5", "latency '5' (from flag --latency) must be low, high, or a number of seconds from 0.001 to 1 (e.g. 0.02 for 20 ms); for 5 ms write 0.005"),
        ("--latency", "10ms", "latency '10ms' (from flag --latency) must be low, high, or a number of seconds from 0.001 to 1 (e.g. 0.02 for 20 ms); for 10 ms write 0.01"),
        ("--latency", "nan", "latency 'nan' (from flag --latency) must be low"),
        ("--port", "70000", "OSC port '70000' (from flag --port) must be a whole number from 0 to 65535 (0 lets the system pick a free port)"),
        ("--port", "-1", "OSC port '-1' (from flag --port) must be a whole number from 0 to 65535"),
        ("--port", "http", "OSC port 'http' (from flag --port) must be a whole number from 0 to 65535"),
        ("--host", "my host", "OSC host 'my host' (from flag --host) must be an IP address or host name, e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (all interfaces)"),
        ("--host", "999.1.1.1", "OSC host '999.1.1.1' (from flag --host) must be an IP address or host name"),
        ("--host", "", "OSC host '' (from flag --host) must be an IP address or host name"),
        ("--host", "-bad.example", "OSC host '-bad.example' (from flag --host) must be an IP address or host name"),
        ("--stats-interval", "-1", "stats interval '-1' (from flag --stats-interval) must be 0 (off) or a number of seconds from 0.1 to 3600"),
        ("--stats-interval", "0.05", "stats interval '0.05' (from flag --stats-interval) must be 0 (off) or a number of seconds from 0.1 to 3600"),
        ("--stats-interval", "often", "stats interval 'often' (from flag --stats-interval) must be 0 (off)"),
        ("--stats-interval", "inf", "stats interval 'inf' (from flag --stats-interval) must be 0 (off)"),
        ("--cache-mb", "-5", "sample cache '-5' (from flag --cache-mb) must be a whole number of megabytes from 0 (no cache) to 1048576"),
        ("--cache-mb", "lots", "sample cache 'lots' (from flag --cache-mb) must be a whole number of megabytes"),
        ("--cache-mb", "1.5", "sample cache '1.5' (from flag --cache-mb) must be a whole number of megabytes"),
        ("--bpm", "0", "tempo '0' (from flag --bpm) must be a number of beats per minute from 20 to 400"),
        ("--bpm", "500", "tempo '500' (from flag --bpm) must be a number of beats per minute from 20 to 400"),
        ("--bpm", "fast", "tempo 'fast' (from flag --bpm) must be a number of beats per minute"),
        ("--bpm", "nan", "tempo 'nan' (from flag --bpm) must be a number of beats per minute"),
        ("--device", "", "device '' (from flag --device) must be a device index (0, 1, ...) or part of a device name, as listed by 'stemdeck devices'"),
        ("--device", "   ", "device '   ' (from flag --device) must be a device index"),
    ],
)
def test_bad_flag_values(home, flag, raw, message):
    with pytest.raises(UsageError) as err:
        run(home, [f"{flag}={raw}"])  # "=": a value may start with "-"
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"STEMDECK_SAMPLE_RATE": "96000"}, "sample rate '96000' (from environment STEMDECK_SAMPLE_RATE) must be 44100 or 48000"),
        ({"STEMDECK_PORT": "65536"}, "OSC port '65536' (from environment STEMDECK_PORT) must be"),
        ({"STEMDECK_BACKEND": "jack"}, "backend 'jack' (from environment STEMDECK_BACKEND) must be portaudio or null"),
        ({"STEMDECK_BUFFER_SIZE": "-1"}, "buffer size '-1' (from environment STEMDECK_BUFFER_SIZE) must be"),
    ],
)
def test_bad_environment_values(home, env, message):
    with pytest.raises(UsageError, match="^" + __import__("re").escape(message)):
        run(home, env=env)


@pytest.mark.parametrize(
    "text, message",
    [
        ('[audio]\nsample_rate = 44100.0\n', "sample rate '44100.0' (from config {cfg} line 2, [audio] sample_rate) must be 44100 or 48000"),
        ('[audio]\nbackend = 1\n', "backend '1' (from config {cfg} line 2, [audio] backend) must be portaudio or null"),
        ('[audio]\ndevice = -1\n', "device '-1' (from config {cfg} line 2, [audio] device) must be a device index"),
        ('[audio]\ndevice = true\n', "device 'true' (from config {cfg} line 2, [audio] device) must be a device index"),
        ('[osc]\nhost = 127\n', "OSC host '127' (from config {cfg} line 2, [osc] host) must be"),
        ('[osc]\n"port" = 99999\n', "OSC port '99999' (from config {cfg} line 2, [osc] port) must be"),
        ('osc.port = 99999\n', "OSC port '99999' (from config {cfg} line 1, [osc] port) must be"),
        ('[clock]\nbpm = "fast"\n', "tempo 'fast' (from config {cfg} line 2, [clock] bpm) must be"),
        ('[audio]\nlatency = "10 ms"\n', "latency '10 ms' (from config {cfg} line 2, [audio] latency) must be low, high, or a number of seconds from 0.001 to 1 (e.g. 0.02 for 20 ms); for 10 ms write 0.01"),
    ],
)
def test_bad_config_values(home, text, message):
    cfg = toml(home / "work" / "stemdeck.toml", text)
    with pytest.raises(UsageError) as err:
        run(home)
    assert str(err.value).startswith(message.format(cfg=cfg))


def test_bad_toml_syntax_names_file_and_line(home):
    cfg = toml(home / "work" / "stemdeck.toml", "[audio]\nsample_rate = 48000\nbuffer_size = = 256\n")
    with pytest.raises(UsageError) as err:
        run(home)
    message = str(err.value)
    assert message.startswith(f"config file {cfg} is not valid TOML: ")
    assert "line 3" in message
    assert "buffer_size = 512" in message  # shows what a valid line looks like


def test_config_not_utf8_names_the_line(home):
    cfg = home / "work" / "stemdeck.toml"
    cfg.write_bytes(b"[audio]\n# caf\xe9\nbuffer_size = 256\n")
    with pytest.raises(UsageError, match=f"^config file {cfg} line 2: not UTF-8 text"):
        run(home)


def test_section_that_is_not_a_table(home):
    cfg = toml(home / "work" / "stemdeck.toml", "# audio settings\naudio = 256\n")
    with pytest.raises(UsageError) as err:
        run(home)
    assert str(err.value).startswith(f"config file {cfg} line 2: 'audio' must be a table")


def test_unknown_keys_and_sections_are_warnings(home):
    cfg = toml(
        home / "work" / "stemdeck.toml",
        "buffer_size = 256\n[audio]\nbufer_size = 256\n[osc]\nspeed = 1\n[mixer]\nx = 1\n",
    )
    s = run(home)
    assert s.warnings == [
        f"{cfg}: key 'buffer_size' outside any section ignored; put it under [audio]",
        f"{cfg} line 3: unknown key [audio] bufer_size ignored; did you mean buffer_size?",
        f"{cfg} line 5: unknown key [osc] speed ignored (known: host, port, quit_from)",
        f"{cfg}: unknown section [mixer] ignored (known sections: audio, clock, media, osc, server)",
    ]
    assert s.source("buffer_size") == "platform default (Raspberry Pi 4)"


# --- warnings, describe ---


@pytest.mark.parametrize("size, below, above", [(300, 256, 512), (33, 32, 64), (8191, 4096, 8192), (1000, 512, 1024)])
def test_non_power_of_two_is_accepted_with_a_warning(home, size, below, above):
    s = run(home, ["--buffer-size", str(size)])
    assert s.buffer_size == size
    assert s.warnings == [
        f"buffer size {size} (from flag --buffer-size) is not a power of two; "
        f"audio drivers and JACK work best with powers of two: try {below} or {above}"
    ]


@pytest.mark.parametrize("size", [32, 8192])
def test_limits_are_accepted(home, size):
    assert run(home, ["--buffer-size", str(size)]).buffer_size == size


def test_describe_shows_each_value_source_and_latency(home):
    s = run(home, ["--buffer-size", "256"], env={"STEMDECK_PORT": "9000"})
    lines = s.describe()
    assert lines[0] == "platform        Raspberry Pi 4 Model B Rev 1.4, 4 cores"
    by_label = {line[:15].strip(): line for line in lines}
    assert "256 frames = 5.8 ms at 44100 Hz" in by_label["buffer size"]
    assert by_label["buffer size"].endswith("from flag --buffer-size")
    assert by_label["OSC port"].endswith("9000" + " " * 31 + "from environment STEMDECK_PORT")
    assert "off" in by_label["stats interval"]
    assert "the system's default output" in by_label["device"]
    assert by_label["sample cache"].endswith("from platform default (Raspberry Pi 4)")
    s = run(home, ["--buffer-size", "512", "--sample-rate", "48000"], names=["buffer_size", "sample_rate"])
    assert any("512 frames = 10.7 ms at 48000 Hz" in line for line in s.describe())
    # Without sample_rate resolved, the latency is given at the default rate.
    s = run(home, ["--buffer-size", "1024"], names=["buffer_size"])
    assert any("1024 frames = 23.2 ms at 44100 Hz" in line for line in s.describe())


def test_latency_text():
    assert config.latency_text(256, 44100) == "256 frames = 5.8 ms at 44100 Hz"
    assert config.latency_text(128, 48000) == "128 frames = 2.7 ms at 48000 Hz"


# --- API edges ---


def test_unresolved_and_unknown_names(home):
    s = run(home, names=["buffer_size"])
    with pytest.raises(AttributeError, match="setting 'port' was not resolved"):
        s.port
    with pytest.raises(ValueError, match="unknown setting 'bufsize'"):
        run(home, names=["bufsize"])
    with pytest.raises(ValueError, match="unknown setting"):
        config.add_arguments(argparse.ArgumentParser(), ["bufsize"])


def test_platform_detected_only_when_a_default_needs_it(home):
    # A flag for every platform-dependent setting: no detection needed.
    s = resolve(parse(["--buffer-size", "256"]), ["buffer_size"], environ={}, cwd=home / "work")
    assert s._platform is None
    s = resolve(parse([]), ["buffer_size"], environ={}, cwd=home / "work")
    assert s.source("buffer_size").startswith("platform default (")


def test_flags_default_to_none_and_help_names_sources():
    parser = argparse.ArgumentParser()
    config.add_arguments(parser, ["buffer_size", "port"])
    config.add_arguments(parser, ["bpm"])  # --config is added once
    args = parser.parse_args([])
    assert vars(args) == {"config": None, "buffer_size": None, "port": None, "bpm": None}
    text = " ".join(parser.format_help().split())  # undo line wrapping
    for expected in ["--buffer-size FRAMES", "AUDIO_BUFFER_SIZE", "STEMDECK_BUFFER_SIZE", "[audio] buffer_size", "--config FILE", "STEMDECK_PORT"]:
        assert expected in text
    assert "--sample-rate" not in text


# --- write_config ---


def test_write_config_creates_file_and_folders(home):
    path = home / "home" / ".config" / "stemdeck" / "stemdeck.toml"
    assert write_config(path, {"audio": {"buffer_size": 256}}) == path
    assert tomllib.loads(path.read_text()) == {"audio": {"buffer_size": 256}}
    s = run(home)
    assert (s.buffer_size, s.source("buffer_size")) == (256, f"config {path}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_write_config_updates_in_place_keeping_everything_else(home):
    path = toml(
        home / "work" / "stemdeck.toml",
        "# stemdeck settings for the club rig\n"
        "[audio]\n"
        "buffer_size = 1024  # was too small at 512\n"
        'device = "Focusrite"\n'
        "\n"
        "# OSC from the lighting desk\n"
        "[osc]\n"
        'host = "0.0.0.0"\n',
    )
    os.chmod(path, 0o600)
    write_config(path, {"audio": {"buffer_size": 256, "sample_rate": 48000}, "osc": {"port": 9000}, "clock": {"bpm": 126.0}})
    assert path.read_text() == (
        "# stemdeck settings for the club rig\n"
        "[audio]\n"
        "buffer_size = 256\n"
        'device = "Focusrite"\n'
        "sample_rate = 48000\n"
        "\n"
        "# OSC from the lighting desk\n"
        "[osc]\n"
        'host = "0.0.0.0"\n'
        "port = 9000\n"
        "\n"
        "[clock]\n"
        "bpm = 126.0\n"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    s = run(home)
    assert (s.buffer_size, s.sample_rate, s.device, s.host, s.port, s.bpm) == (256, 48000, "Focusrite", "0.0.0.0", 9000, 126.0)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_write_config_round_trips_any_value(home):
    path = home / "rt.toml"
    values = {"audio": {"device": 'Say "hi" \\ café\n', "latency": 0.005}, "tune": {"sizes": [128, 256], "ok": True}}
    write_config(path, values)
    assert tomllib.loads(path.read_text()) == values
    write_config(path, {"tune": {"ok": False}})
    assert tomllib.loads(path.read_text())["tune"] == {"sizes": [128, 256], "ok": False}


def test_write_config_with_layout_it_cannot_edit_rewrites_the_file(home):
    path = toml(home / "inline.toml", 'audio = { buffer_size = 1024, device = "USB" }\n[osc]\nport = 9000\n')
    write_config(path, {"audio": {"buffer_size": 512}})
    assert tomllib.loads(path.read_text()) == {"audio": {"buffer_size": 512, "device": "USB"}, "osc": {"port": 9000}}


def test_write_config_refuses_bad_values_and_leaves_the_file(home):
    path = toml(home / "stemdeck.toml", "[audio]\nbuffer_size = 1024\n")
    with pytest.raises(UsageError, match=r"^buffer size '10000' \(from the value to write to .*stemdeck.toml\) must be"):
        write_config(path, {"audio": {"buffer_size": 10000}})
    assert path.read_text() == "[audio]\nbuffer_size = 1024\n"


def test_write_config_refuses_to_overwrite_broken_toml(home):
    path = toml(home / "stemdeck.toml", "[audio\nbuffer_size = 1024\n")
    with pytest.raises(UsageError, match="is not valid TOML"):
        write_config(path, {"audio": {"buffer_size": 256}})
    assert path.read_text() == "[audio\nbuffer_size = 1024\n"


# --- through the real command line: bad settings exit 2 with the message ---


def _stemdeck(*argv, env=None, cwd=None):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("STEMDECK_", "AUDIO_BUFFER"))}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "stemdeck", *argv], capture_output=True, text=True, env=environ, cwd=cwd, timeout=60
    )


def test_cli_bad_setting_exits_2_with_message(home):
    result = _stemdeck("devices", "--device", "", cwd=home / "work")
    assert result.returncode == 2
    assert "stemdeck devices: error: device '' (from flag --device) must be a device index" in result.stderr


def test_cli_bad_config_file_exits_2_with_file_and_line(home):
    cfg = toml(home / "work" / "stemdeck.toml", "[audio]\ndevice = \n")
    result = _stemdeck("devices", cwd=home / "work")
    assert result.returncode == 2
    assert f"stemdeck devices: error: config file {cfg} is not valid TOML" in result.stderr
    assert "line 2" in result.stderr
