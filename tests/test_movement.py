"""Movement -> tempo: crowdstream's bands and bpm_config.json, the glide up
and down measured on the engine's tempo while it renders, bad or missing
config files, and --no-movement-bpm."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest

from stemdeck.control.controller import Controller
from stemdeck.control.movement import MovementConfig, MovementConfigError, load_movement_config
from stemdeck.engine.engine import Engine

SR = 44100

# crowdstream's audio-mixer/bpm_config.json, as published
CROWDSTREAM_FILE = """{
  "movement_bpm": {
    "movement_max_value": 0.6,
    "thresholds": {
      "very_very_low": 0.02,
      "very_low": 0.05,
      "low": 0.10,
      "medium": 0.10
    },
    "bpm_targets": {
      "very_very_low": 105.0,
      "very_low": 110.0,
      "low": 115.0,
      "medium": 118.0,
      "high_max": 130.0
    },
    "smoothing": {
      "transition_time_seconds": 30.0,
      "audio_loop_rate_hz": 100.0,
      "smoothing_factor_up": 0.96,
      "smoothing_factor_down": 0.92
    }
  }
}
"""

CUSTOM = {"movement_bpm": {
    "movement_max_value": 50.0,
    "thresholds": {"very_very_low": 0.1, "very_low": 0.2, "low": 0.3, "medium": 0.4},
    "bpm_targets": {"very_very_low": 90.0, "very_low": 95.0, "low": 100.0, "medium": 110.0,
                    "high_max": 140.0},
    "smoothing": {"transition_time_seconds": 8.0, "smoothing_factor_up": 0.9,
                  "smoothing_factor_down": 0.8}}}


def write(tmp_path, text, name="bpm_config.json"):
    path = tmp_path / name
    path.write_text(text if isinstance(text, str) else json.dumps(text))
    return str(path)


# -- the mapping: every band ----------------------------------------------------------------------

@pytest.mark.parametrize("value,bpm", [
    (0.0, 105.0), (0.019, 105.0),                  # below very_very_low
    (0.02, 110.0), (0.049, 110.0),                 # below very_low
    (0.05, 115.0), (0.0999, 115.0),                # below low
    (0.10, 118.0),                                 # medium: the rise starts at its target
    (0.35, 124.0), (0.6, 130.0), (0.8, 130.0), (1.0, 130.0),   # linear to high_max at 0.6, held
    (1.5, 130.0), (6.0, 130.0),                    # raw values / 0.6, clamped to 1
])
def test_default_bands(value, bpm):
    assert MovementConfig().target_bpm(value) == pytest.approx(bpm)


def test_crowdstreams_file_is_the_defaults(tmp_path):
    config = load_movement_config(write(tmp_path, CROWDSTREAM_FILE))
    assert config == MovementConfig(source=config.source)
    assert config.glide_down == 30.0
    assert config.glide_up == pytest.approx(30.0 * math.log(0.96) / math.log(0.92))   # 14.69 s


@pytest.mark.parametrize("value,bpm", [
    (0.05, 90.0), (0.15, 95.0), (0.25, 100.0), (0.35, 110.0),   # every band of the file
    (0.4, 110.0), (0.5, 125.0), (0.6, 140.0), (0.9, 140.0),     # the rise: 0.4 -> 0.6
    (9.0, 95.0), (10.0, 100.0), (25.0, 125.0), (50.0, 140.0), (500.0, 140.0), # raw values / 50
])
def test_bands_from_a_config_file(tmp_path, value, bpm):
    config = load_movement_config(write(tmp_path, CUSTOM))
    assert config.target_bpm(value) == pytest.approx(bpm)
    assert config.glide_down == 8.0
    assert config.glide_up == pytest.approx(8.0 * math.log(0.9) / math.log(0.8))


def test_a_partial_file_keeps_the_other_defaults_and_explains_thresholds_out_of_order(tmp_path):
    # crowdstream's own documented example: "make it easier for BPM to increase"
    config = load_movement_config(write(tmp_path, {"movement_bpm": {"thresholds": {"medium": 0.08}}}))
    assert config.threshold_medium == 0.08 and config.threshold_low == 0.10
    assert config.bpm_high_max == 130.0 and config.transition_time_seconds == 30.0
    assert config.target_bpm(0.09) == 115.0          # the chain still says "low" below 0.10
    assert config.target_bpm(0.10) == pytest.approx(118 + 12 * 0.02 / 0.52)
    (note,) = config.notes
    assert "thresholds.medium 0.08 is below 0.1" in note and "step to 118.5 BPM" in note


# -- bad or missing files: one clear message, the documented defaults ------------------------------

@pytest.mark.parametrize("content,expect", [
    (None, "no such file"),
    ("{ not json", "not valid JSON: Expecting property name"),
    ('{"movement_bpm": {"thresholds": {"medium": "high"}}}', 'movement_bpm.thresholds.medium is "high": need a number'),
    ('{"movement_bpm": {"bpm_targets": {"low": 1000}}}', "movement_bpm.bpm_targets.low is 1000: need a number in [20, 400]"),
    ('{"movement_bpm": {"smoothing": {"smoothing_factor_up": 1.0}}}', "smoothing_factor_up is 1.0: need a number in (0, 1)"),
    ('{"movement_bpm": {"smoothing": {"transition_time_seconds": 0}}}', "transition_time_seconds is 0"),
    ('{"movement_bpm": {"thresholds": {"mediun": 0.1}}}', "thresholds.mediun is not a known key"),
    ('{"movement_bpm": []}', '"movement_bpm" must be an object'),
    ("[1, 2]", "must hold a JSON object"),
])
def test_bad_or_missing_file_says_why_and_uses_the_defaults(tmp_path, caplog, content, expect):
    path = str(tmp_path / "bpm.json") if content is None else write(tmp_path, content, "bpm.json")
    with pytest.raises(MovementConfigError, match="^" + path.replace(".", r"\.")):
        MovementConfig.from_file(path)
    log = logging.getLogger("test.movement")
    with caplog.at_level(logging.WARNING, logger="test.movement"):
        config = load_movement_config(path, log)
    assert config == MovementConfig(source=config.source)           # the documented defaults
    (record,) = caplog.records
    text = record.getMessage()
    assert text.startswith(f"--bpm-config {path}") and expect in text, text
    assert "using the default movement tempo settings" in text
    assert config.source.startswith("defaults (")


def test_no_file_means_the_defaults_quietly(caplog):
    with caplog.at_level(logging.DEBUG):
        assert load_movement_config(None, logging.getLogger("x")) == MovementConfig()
    assert not caplog.records


# -- the glide, on the engine's own tempo ---------------------------------------------------------------

class Run:
    """A Controller on a real Engine, rendered in blocks; ``bpm_after(s)``
    renders that many seconds and reads the engine's tempo."""

    def __init__(self, **kw):
        self.engine = Engine(SR, max_block=8192)
        self.c = Controller(self.engine, **kw)
        self.block = np.zeros((8192, 2), np.float32)

    def send(self, value):
        replies = self.c.handle("/dance/total_movement", [value])
        assert not replies, replies

    def bpm_after(self, seconds: float) -> float:
        left = int(round(seconds * SR))
        while left > 0:
            n = min(left, len(self.block))
            self.engine.render(self.block[:n])
            left -= n
        return self.engine.stats()["bpm"]


def test_one_message_glides_up_in_the_up_time_and_down_in_the_down_time():
    r = Run()
    up = r.c.movement_config.glide_up                       # 14.69 s
    r.send(0.6)                                             # -> 130 BPM, faster than 120
    assert r.bpm_after(5.0) == pytest.approx(120 + 10 * 5.0 / up, abs=1e-4)   # the ramp is whole frames
    assert r.bpm_after(5.0) == pytest.approx(120 + 10 * 10.0 / up, abs=1e-4)   # the ramp is whole frames
    assert r.bpm_after(5.0) == pytest.approx(130.0)          # arrived after 14.7 s, and stays
    r.send(0.0)                                             # -> 105 BPM: the 30 s glide down
    assert r.bpm_after(10.0) == pytest.approx(130 - 25 * 10 / 30, abs=1e-4)   # the ramp is whole frames
    assert r.bpm_after(20.0) == pytest.approx(105.0)
    assert r.c.movement_target == 105.0


@pytest.mark.parametrize("value,target", [(0.0, 105.0), (0.03, 110.0), (0.07, 115.0), (0.1, 118.0),
                                          (0.35, 124.0), (0.6, 130.0)])
def test_each_band_is_reached_from_both_sides(value, target):
    for start in (100.0, 140.0):                            # from below: up; from above: down
        r = Run()
        r.c.handle("/set_tempo", [start])
        r.send(value)
        glide = r.c.movement_config.glide_up if target > start else r.c.movement_config.glide_down
        half = r.bpm_after(glide / 2)
        assert half == pytest.approx((start + target) / 2, abs=0.05)
        assert r.bpm_after(glide / 2 + 0.2) == pytest.approx(target)


def test_a_stream_of_messages_approaches_exponentially_faster_up_than_down():
    r = Run()
    for _ in range(147):                                    # 14.7 s of messages, 10 a second
        r.send(0.6)
        r.bpm_after(0.1)
    rise = (r.engine.stats()["bpm"] - 120) / 10             # one time constant: 1 - 1/e
    assert rise == pytest.approx(1 - math.exp(-1), abs=0.01)
    start = r.engine.stats()["bpm"]
    for _ in range(147):                                    # the same time going down
        r.send(0.0)
        r.bpm_after(0.1)
    fall = (start - r.engine.stats()["bpm"]) / (start - 105)
    assert fall == pytest.approx(1 - math.exp(-14.7 / 30), abs=0.01)
    assert fall < rise


def test_glide_times_from_a_config_file(tmp_path):
    r = Run(movement=load_movement_config(write(tmp_path, CUSTOM)))
    r.send(30.0)                                            # raw 30 / 50 = 0.6 -> 140 BPM, up in 3.8 s
    up = 8.0 * math.log(0.9) / math.log(0.8)
    assert r.bpm_after(up / 2) == pytest.approx(130.0, abs=0.05)
    assert r.bpm_after(up / 2 + 0.1) == pytest.approx(140.0)
    r.send(1.0)                                             # up to 1 is taken as normalised: 140
    assert r.bpm_after(1.0) == pytest.approx(140.0)
    r.send(0.05)                                            # -> 90 BPM down in 8 s
    assert r.bpm_after(4.0) == pytest.approx(115.0, abs=0.05)
    assert r.bpm_after(4.1) == pytest.approx(90.0)


def test_no_movement_bpm_ignores_the_messages(caplog):
    with caplog.at_level(logging.INFO, logger="stemdeck.control"):
        r = Run(movement_bpm=False)
        r.send(0.6)
        r.send(0.0)
    assert r.bpm_after(2.0) == 120.0
    assert r.c.movement == 0.0 and r.c.movement_target is None
    assert sum("--movement-bpm off" in rec.getMessage() for rec in caplog.records) == 1   # said once
    detail = json.loads(r.c.handle("/status.json")[0][1][0])
    assert detail["movement"]["enabled"] is False


def test_status_shows_the_movement_settings(tmp_path):
    r = Run(movement=load_movement_config(write(tmp_path, CUSTOM)))
    r.send(0.5)
    m = json.loads(r.c.handle("/status.json")[0][1][0])["movement"]
    assert m["enabled"] is True and m["value"] == 0.5 and m["target_bpm"] == pytest.approx(125.0)
    assert m["thresholds"] == [0.1, 0.2, 0.3, 0.4] and m["bpm_targets"] == [90, 95, 100, 110, 140]
    assert m["glide_down_s"] == 8.0 and m["source"].endswith("bpm_config.json")
