"""Score files: what parses, and every malformed line reported as ``file:line: reason``."""

from __future__ import annotations

import os

import pytest

from stemdeck.control import spec
from stemdeck.control.score import parse_score, read_score
from stemdeck.errors import ScoreError

PREAMBLE = "# a score\n\n0.0 /reset   # time zero\n"     # the bad line is always line 4


def write(tmp_path, text, name="set.score", mode="w"):
    path = tmp_path / name
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# -- what parses ----------------------------------------------------------------------------------

def test_lines_comments_blank_lines_and_types(tmp_path):
    path = write(tmp_path, """\
# whole-line comment

0.0 /load_buffer 100 "my drums.wav" 'Drums #1'   # trailing comment
0 /play_stem 100 1 0.5 0
   12.5   /crossfade_levels 0.5 1     
12.5 /deck_eq b LOW 25
13 /start_group A B 14
14 /deck_levels 1
""")
    lines = read_score(path)
    assert [(l.lineno, l.time, l.address) for l in lines] == [
        (3, 0.0, "/load_buffer"), (4, 0.0, "/play_stem"), (5, 12.5, "/crossfade_levels"),
        (6, 12.5, "/deck_eq"), (7, 13.0, "/start_group"), (8, 14.0, "/deck_levels")]
    load = lines[0].call.values
    assert load == {"id": 100, "path": os.path.join(str(tmp_path), "my drums.wav"), "name": "Drums #1",
                    "bpm": None}
    play = lines[1].call.values
    assert play == {"id": 100, "rate": 1.0, "volume": 0.5, "loop": False, "start_pos": 0.0,
                    "quantize": None}
    assert isinstance(play["id"], int) and isinstance(play["rate"], float)
    assert lines[3].call.values == {"deck": 1, "band": 0, "percent": 25.0}
    assert lines[4].call.values == {"start_at": 14.0, "deck": (0, 1)}
    assert lines[5].call.values["b"] is spec.KEEP
    assert lines[0].where == f"{path}:3"


def test_paths_resolve_against_the_scores_folder(tmp_path):
    sub = tmp_path / "sets"
    sub.mkdir()
    path = write(sub, "0 /load_buffer 100 ../stems/a.wav\n"
                      "0 /load_buffer 101 /abs/b.wav\n"
                      "0 /cue A c.flac\n"
                      "0 /play B ~/d.wav 1\n")
    lines = read_score(path)
    assert lines[0].call["path"] == os.path.join(str(tmp_path), "stems", "a.wav")
    assert lines[1].call["path"] == "/abs/b.wav"
    assert lines[2].call["path"] == os.path.join(str(sub), "c.flac")
    assert lines[3].call["path"] == os.path.expanduser("~/d.wav")


def test_equal_times_keep_file_order_and_crlf_bom(tmp_path):
    path = write(tmp_path, "\ufeff1 /reset\r\n1 /set_meter 3\r\n1.0 /set_tempo 126\r\n")
    assert [l.address for l in read_score(path)] == ["/reset", "/set_meter", "/set_tempo"]


def test_empty_score_is_empty():
    assert parse_score("# nothing\n\n   \n") == []


# -- every malformed line --------------------------------------------------------------------------

BAD_LINES = [
    ("abc /reset", "time 'abc' is not a number"),
    ("1,5 /reset", "time '1,5' is not a number"),
    ("-0.5 /reset", "time -0.5 is negative"),
    ("nan /reset", "time 'nan' is not a finite number"),
    ("inf /reset", "time 'inf' is not a finite number"),
    ("1e9 /reset", "beyond 86400 s"),
    ("/reset", "missing time before /reset"),
    ("5", "no OSC address after the time 5"),
    ("5 reset", "'reset' is not an OSC address"),
    ("5 /nothing_here", "/nothing_here: unknown address"),
    ("5 /stop_stemm 100", "/stop_stemm: unknown address (did you mean /stop_stem?)"),
    ("5 /stem_volume 100", "/stem_volume: expects 2 arguments, got 1"),
    ("5 /stem_volume 100 0.5 0.5", "/stem_volume: expects 2 arguments, got 3"),
    ("5 /reset now", "/reset: takes no arguments, got 1"),
    ("5 /stem_volume 100 loud", "/stem_volume: volume 'loud' is not a number"),
    ("5 /stem_volume x 0.5", "/stem_volume: id 'x' is not a number"),
    ("5 /stem_volume 100.5 0.5", "/stem_volume: id 100.5 is not a whole number"),
    ("5 /stem_volume 100 7", "/stem_volume: volume 7.0 out of range 0..4"),
    ("5 /stem_volume 100 nan", "/stem_volume: volume nan is not a finite number"),
    ("5 /stem_volume 100 -inf", "/stem_volume: volume -inf is not a finite number"),
    ("5 /deck_eq E low 50", "/deck_eq: deck 'E' unknown"),
    ("5 /deck_eq A treble 50", "/deck_eq: band 'treble' unknown"),
    ("5 /deck_eq A low 150", "/deck_eq: percent 150.0 out of range 0..100"),
    ("5 /play_stem 100 1 1 2", "/play_stem: loop 2.0: use 0 or 1"),
    ("5 /start_group A B", "/start_group: missing start_at"),
    ('5 /load_buffer 100 "drums.wav', "unterminated quote"),
    ("5 /load_buffer 100 'drums.wav", "unterminated quote"),
    ("5 /load_buffer 100 drums.wav\\", "a backslash at the end of the line"),
    ("5 /load_buffer 100 ''", "/load_buffer: path is empty"),
    ("5 /notify 1", "/notify only works on a live server, not in a score"),
    ("5 /quit", "/quit only works on a live server"),
]


@pytest.mark.parametrize("line,reason", BAD_LINES, ids=[b[0] for b in BAD_LINES])
def test_malformed_line_reports_file_and_line(tmp_path, line, reason):
    path = write(tmp_path, PREAMBLE + line + "\n9 /reset\n")
    with pytest.raises(ScoreError) as info:
        read_score(path)
    text = str(info.value)
    assert text.startswith(f"{path}:4: "), text
    assert reason in text, text


def test_times_going_backwards(tmp_path):
    path = write(tmp_path, "1 /reset\n# comment\n3.5 /reset\n\n2 /reset\n")
    with pytest.raises(ScoreError) as info:
        read_score(path)
    assert str(info.value) == (f"{path}:5: time 2 is before the previous line's 3.5 (line 3): "
                               "keep lines in time order")


def test_parse_score_names_the_given_file():
    with pytest.raises(ScoreError, match=r"^mix\.txt:2: /fade: expects 2 to 3 arguments, got 1"):
        parse_score("0 /reset\n1 /fade A\n", filename="mix.txt")


def test_not_a_text_file(tmp_path):
    path = write(tmp_path, b"0 /reset\n1 /reset \xff\xfe\n", mode="wb")
    with pytest.raises(ScoreError, match=r":2: not UTF-8 text"):
        read_score(path)
    path = write(tmp_path, b"0 /reset\n\x00\x01", name="bin.score", mode="wb")
    with pytest.raises(ScoreError, match=r":2: NUL byte"):
        read_score(path)


def test_missing_or_unreadable_score(tmp_path):
    with pytest.raises(ScoreError, match="no such score file"):
        read_score(tmp_path / "nope.score")
    with pytest.raises(ScoreError, match="a directory, not a score file"):
        read_score(tmp_path)
