"""``stemdeck devices`` and ``find_output_device`` against a real JACK dummy server.

PortAudio binds to the JACK server named in JACK_DEFAULT_SERVER when it
initialises, so everything that imports sounddevice runs in a subprocess
with the server's environment. Extra JACK clients make extra PortAudio
devices: ``jack_rec`` (input ports) is an output device to PortAudio,
``jack_metro`` (an output port) an input-only one.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from jackserver import reclaim_dead_registrations, registered_servers
from stemdeck.audio.devices import NoOutputDeviceError
from stemdeck.errors import DeviceError, UsageError

JACK_API = "JACK Audio Connection Kit"

# Prints, for each spec in argv[1] (JSON list), the device it resolves to or the error.
FIND_SCRIPT = """
import json, sys
from stemdeck.audio.devices import find_output_device, query
system = query()
results = []
for spec in json.loads(sys.argv[1]):
    try:
        d = find_output_device(spec, system)
        results.append({"index": d.index, "name": d.name, "hostapi": d.hostapi})
    except Exception as exc:
        results.append({"error": type(exc).__name__, "message": str(exc)})
print(json.dumps(results))
"""


def _clean_env(env):
    return {k: v for k, v in env.items() if not k.startswith(("STEMDECK_", "AUDIO_BUFFER"))}


def stemdeck(*argv, env, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "stemdeck", *argv],
        capture_output=True,
        text=True,
        env=_clean_env(env),
        cwd=cwd,
        timeout=60,
    )


def find(server, *specs):
    result = subprocess.run(
        [sys.executable, "-c", FIND_SCRIPT, json.dumps(list(specs))],
        capture_output=True,
        text=True,
        env=_clean_env(server.env),
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


def device_rows(stdout):
    """{name: (marks, index, rest of the row)} from the output device table."""
    rows = {}
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(("Output devices (", "Devices (")))
    table = lines[start + 2 :]  # after the title and the column headings
    for line in table:
        m = re.match(r"  ([* ])([> ])\s+(\d+)\s+(\S+)\s+(.*)$", line)
        if m:
            rows[m.group(4)] = (m.group(1) + m.group(2), int(m.group(3)), m.group(5))
    return rows


@pytest.fixture
def extra_clients(jack_server, tmp_path):
    """Three more PortAudio devices on the server: 'clicker' (input only),
    'jackrec' (1 output channel) and 'jackrec-01' (2 output channels)."""
    jack_server.spawn_client("jack_metro", "-n", "clicker", "-b", "120", wait_for_port="clicker:")
    jack_server.spawn_client(
        "jack_rec", "-f", str(tmp_path / "a.wav"), "-d", "600", "system:capture_1", wait_for_port="jackrec:input1"
    )
    jack_server.spawn_client(
        "jack_rec",
        "-f",
        str(tmp_path / "b.wav"),
        "-d",
        "600",
        "system:capture_1",
        "system:capture_2",
        wait_for_port="jackrec-01:input2",
    )
    return jack_server


# --- stemdeck devices ---


@pytest.mark.jack
def test_devices_lists_the_jack_server_as_default(jack_server):
    result = stemdeck("devices", env=jack_server.env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("PortAudio V19")
    assert re.search(rf"^  \d+\s+{re.escape(JACK_API)}\s+1\s+#0 system$", result.stdout, re.MULTILINE)
    rows = device_rows(result.stdout)
    assert list(rows) == ["system"]
    marks, index, rest = rows["system"]
    assert marks == "* "
    assert index == 0
    assert re.fullmatch(rf"{re.escape(JACK_API)}\s+2\s+2\s+44100 Hz\s+\d+\.\d / \d+\.\d ms", rest)


@pytest.mark.jack
def test_devices_shows_the_servers_sample_rate(make_jack_server):
    server = make_jack_server(rate=48000, period=256)
    result = stemdeck("devices", env=server.env)
    assert result.returncode == 0, result.stderr
    assert "48000 Hz" in device_rows(result.stdout)["system"][2]


@pytest.mark.jack
def test_devices_lists_outputs_only_unless_all(extra_clients):
    result = stemdeck("devices", env=extra_clients.env)
    assert result.returncode == 0, result.stderr
    rows = device_rows(result.stdout)
    assert set(rows) == {"system", "jackrec", "jackrec-01"}
    assert rows["system"][0] == "* " and rows["jackrec"][0] == "  "

    result = stemdeck("devices", "--all", env=extra_clients.env)
    rows = device_rows(result.stdout)
    assert set(rows) == {"system", "clicker", "jackrec", "jackrec-01"}
    assert re.fullmatch(rf"{re.escape(JACK_API)}\s+0\s+1\s+.*", rows["clicker"][2])  # 0 out, 1 in


@pytest.mark.jack
def test_devices_marks_the_configured_device(extra_clients):
    env = dict(extra_clients.env, STEMDECK_DEVICE="jackrec-01")
    result = subprocess.run(
        [sys.executable, "-m", "stemdeck", "devices"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    rows = device_rows(result.stdout)
    assert rows["jackrec-01"][0] == " >"
    index = rows["jackrec-01"][1]
    assert (
        f"--device 'jackrec-01' (from environment STEMDECK_DEVICE) selects #{index} 'jackrec-01' ({JACK_API})"
        in result.stdout
    )


@pytest.mark.jack
def test_devices_with_an_ambiguous_device_exits_2_listing_candidates(extra_clients):
    result = stemdeck("devices", "--device", "rec", env=extra_clients.env)
    assert result.returncode == 2
    assert "jackrec-01" in result.stdout  # the listing is still printed
    assert re.search(
        r"stemdeck devices: error: device setting \(flag --device\): device 'rec' is ambiguous: "
        rf"it matches #\d+ 'jackrec' \({JACK_API}\); #\d+ 'jackrec-01' \({JACK_API}\); "
        r"give more of the name, add the host API",
        result.stderr,
    ), result.stderr


@pytest.mark.jack
def test_no_output_device_at_all(jack_server):
    jack_server.kill()  # the only output device on this machine goes away
    result = stemdeck("devices", env=jack_server.env)
    if "Output devices (* = default output):\n  none" not in result.stdout:
        pytest.skip("this machine has an audio output device besides JACK")
    assert result.returncode == 1
    assert JACK_API not in result.stdout
    assert "no audio output device found (PortAudio host APIs: ALSA (0 devices)" in result.stderr
    assert "run without audio output with --backend null" in result.stderr

    [error] = find(jack_server, None)
    assert error["error"] == "NoOutputDeviceError"
    assert "--backend null" in error["message"]


def test_no_output_device_error_is_a_device_and_a_usage_error():
    # DeviceError as the brief says; UsageError so that serve exits 2.
    assert issubclass(NoOutputDeviceError, DeviceError)
    assert issubclass(NoOutputDeviceError, UsageError)


def test_bad_flag_exits_2():
    result = subprocess.run(
        [sys.executable, "-m", "stemdeck", "devices", "--bogus"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "unrecognized arguments: --bogus" in result.stderr


def test_help_is_instant_and_names_the_device_setting():
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "stemdeck", "devices", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert "--device INDEX|NAME" in result.stdout
    assert "STEMDECK_DEVICE" in result.stdout
    # PortAudio is not initialised just to print help, and (a project rule for
    # every tool module, all of which cli.py imports) numpy is not imported.
    heavy = [line for line in result.stderr.splitlines() if re.search(r"\|\s*(sounddevice|numpy|numba)$", line)]
    assert not heavy, "imported at start-up (import lazily inside run()):\n" + result.stderr


# --- find_output_device ---


@pytest.mark.jack
def test_find_output_device(extra_clients):
    system, clicker, rec1, rec2 = find(extra_clients, "system", "clicker", "jackrec", "jackrec-01")
    assert system["name"] == "system" and system["index"] == 0
    assert clicker["error"] == "UsageError"  # input only
    indexes = {"jackrec": rec1["index"], "jackrec-01": rec2["index"]}
    assert rec1["name"] == "jackrec"  # exact name wins over 'jackrec-01' containing it
    assert rec2["name"] == "jackrec-01"

    results = find(
        extra_clients,
        None,  # default output
        0,  # index as int
        str(indexes["jackrec-01"]),  # index as text
        "SYST",  # substring, any case
        "-01",
        "jackrec, jack audio",  # name plus host API
        "rec",  # ambiguous
        "nonesuch",  # unknown
        "clicker",  # input only
        "click",
        99,  # no such index
        "",
    )
    by_spec = dict(zip(["default", "0", "idx", "SYST", "-01", "api", "rec", "none", "clicker", "click", "99", "empty"], results))
    assert by_spec["default"]["name"] == "system"
    assert by_spec["0"]["name"] == "system"
    assert by_spec["idx"]["name"] == "jackrec-01"
    assert by_spec["SYST"]["name"] == "system"
    assert by_spec["-01"]["name"] == "jackrec-01"
    assert by_spec["api"]["name"] == "jackrec"

    outputs = (
        f"#0 'system' ({JACK_API}); #{indexes['jackrec']} 'jackrec' ({JACK_API}); "
        f"#{indexes['jackrec-01']} 'jackrec-01' ({JACK_API})"
    )
    assert by_spec["rec"] == {
        "error": "UsageError",
        "message": (
            f"device 'rec' is ambiguous: it matches #{indexes['jackrec']} 'jackrec' ({JACK_API}); "
            f"#{indexes['jackrec-01']} 'jackrec-01' ({JACK_API}); give more of the name, add the host API "
            f"(e.g. 'jackrec, {JACK_API}'), or use the index"
        ),
    }
    assert by_spec["none"] == {
        "error": "UsageError",
        "message": f"no output device matches 'nonesuch'; output devices: {outputs} (run 'stemdeck devices' to list them)",
    }
    clicker_index = [i for i in range(4) if i not in (0, *indexes.values())][0]
    assert by_spec["clicker"] == {
        "error": "UsageError",
        "message": (
            f"device 'clicker' matches only input devices (#{clicker_index} 'clicker' ({JACK_API})), which have no "
            f"output channels; output devices: {outputs}"
        ),
    }
    assert by_spec["click"]["message"].startswith("device 'click' matches only input devices")
    assert by_spec["99"] == {
        "error": "UsageError",
        "message": f"there is no device #99; output devices: {outputs} (run 'stemdeck devices' to list them)",
    }
    assert by_spec["empty"]["error"] == "UsageError"

    [by_index] = find(extra_clients, clicker_index)
    assert by_index == {
        "error": "UsageError",
        "message": (
            f"device #{clicker_index} 'clicker' ({JACK_API}) has no output channels (it is an input device); "
            f"output devices: {outputs}"
        ),
    }


# --- the JACK fixture these tests rely on ---


RESCAN_SCRIPT = """
import sys
from stemdeck.audio.devices import query, rescan
print([d.name for d in query().outputs], flush=True)
sys.stdin.readline()  # the test restarts the JACK server meanwhile
print([d.name for d in rescan().outputs], flush=True)
"""


@pytest.mark.jack
def test_rescan_sees_a_restarted_server(jack_server):
    jack_server.kill()
    proc = subprocess.Popen(
        [sys.executable, "-c", RESCAN_SCRIPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_clean_env(jack_server.env),
    )
    try:
        assert proc.stdout.readline().strip() == "[]"
        jack_server.start()  # same name, after a crash
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "['system']"
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.jack
def test_jack_fixture_counts_xruns_of_a_late_client(jack_server):
    assert jack_server.name in jack_server.env["JACK_DEFAULT_SERVER"]
    assert jack_server.xruns() == 0
    client = jack_server.spawn_client("jack_simple_client", "latecomer", wait_for_port="latecomer:")
    time.sleep(0.2)
    client.send_signal(signal.SIGSTOP)  # misses its deadlines
    time.sleep(0.3)
    client.send_signal(signal.SIGCONT)
    assert jack_server.xruns() > 0


@pytest.mark.jack
def test_jack_fixture_kill_and_restart(jack_server):
    assert jack_server.is_running()
    jack_server.kill()
    assert not jack_server.is_running()
    assert not [p for p in os.listdir("/dev/shm") if jack_server.name in p]  # leftovers removed
    jack_server.start()
    assert jack_server.is_running()
    assert "system:playback_1" in jack_server.ports()


def _registered():
    return [name for name, _pid in registered_servers()]


@pytest.mark.jack
def test_jack_fixture_gives_back_a_killed_servers_registry_slot(jack_server):
    # JACK has 8 server slots; a SIGKILLed server keeps its slot until a
    # server of the same name starts again. Leaking them locks out every
    # JACK test on the machine.
    assert jack_server.name in _registered()
    jack_server.kill()
    assert jack_server.name in _registered()
    jack_server.stop()
    assert jack_server.name not in _registered()


@pytest.mark.jack
def test_reclaim_dead_registrations(jack_server):
    jack_server.process.kill()  # behind the helper's back, as a crashed test would
    jack_server.process.wait()
    assert jack_server.name in _registered()
    assert jack_server.name in reclaim_dead_registrations()
    assert jack_server.name not in _registered()
