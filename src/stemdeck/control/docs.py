"""Generate ``docs/osc-api.md`` from the message table.

    python -m stemdeck.control.docs > docs/osc-api.md

The reference is never edited by hand: a test fails when it differs from
what this module generates. Pure Python; any thread.
"""

from __future__ import annotations

import sys

from stemdeck.control import spec
from stemdeck.control.arg_types import bound_text
from stemdeck.control.osc.schedule import HORIZON_S, MAX_AHEAD_S, MAX_SCHEDULED

HEADER = f"""\
# OSC API reference

<!-- Generated from src/stemdeck/control/spec.py by
     `python -m stemdeck.control.docs > docs/osc-api.md`. Do not edit by hand. -->

stemdeck speaks the OSC API of crowdstream's `audio_server.py` (which replaced a
SuperCollider server), so existing mix scripts and the dance-movement detector keep
working unchanged, plus SuperCollider-style replies and timetagged bundles.

- **Transport:** OSC over UDP, default `127.0.0.1:57120`. Replies go back to the
  address and port the message came from.
- **Types:** `i` int32, `f` float32, `s` string. An int is accepted where a float is
  expected, a float with no fraction where an int is, and a numeric string for a
  number (as crowdstream converted with `float()`). NaN, infinities and out-of-range
  values are refused, never clamped.
- **Decks:** `A`, `B`, `C`, `D` (any case; `0`..`3` also accepted). Buffer IDs choose
  the deck a stem plays on: 100-1099 deck A, 1100-2099 B, 2100-3099 C, 3100-4099 D;
  any other ID (0-8190) plays on deck A. ID 8191 is reserved for `/test_tone`.
- **EQ bands:** `low` (below 250 Hz), `mid`, `high` (above 2.5 kHz); crowdstream's
  prefixes (`lo`, `mi`, `hi`) and `0`, `1`, `2` are accepted. The EQ is always on.
- **Extra arguments:** the live server ignores values past a message's last argument,
  and empty arrays (crowdstream's clients send `/reset` as python-osc's `[]`), as
  crowdstream did; `/status.json` counts them (`osc.ignored_arguments`) and the log says
  so once per address. A score refuses them. See docs/from-crowdstream.md.
- **Errors:** every rejected message (unknown address, wrong argument count or type,
  NaN, infinity, out of range, unknown deck, band or buffer) gets one
  `/fail <address> <reason>` and changes nothing.
- **Asynchronous commands** (loads, cues) answer `/done <address> [id]` when they
  complete. A command for a buffer whose load is still running waits for it and then
  runs, in arrival order; only a buffer never requested is refused.
- **Time:** a bundle's timetag makes its messages take effect on the matching sample
  frame. `/play`, `/fade` and `/start_group` take `start_at`, seconds after time zero
  (the last `/reset`); a time already past runs at once. A bundle due more than
  {HORIZON_S:g} s ahead waits in the server, which holds at most {MAX_SCHEDULED} such
  messages from all clients together: a bundle (or nested bundle) that would exceed
  that, or whose timetag is more than {MAX_AHEAD_S / 3600:g} hours ahead (a wrong clock), is
  refused with `/fail <its first address> <reason>` and none of its messages run.
- **Scores** (`stemdeck render`): one message per line, prefixed by its time in
  seconds, e.g. `12.5 /crossfade_levels 0.5 1.0`; `#` starts a comment; quote words
  with spaces; relative paths are relative to the score's folder. Messages marked
  *live only* are refused in a score. Every example below works in a score after a
  time: `4.0 /play_stem 100 1.0 0.8 1 0.0`.
"""


def _range(arg: spec.Arg) -> str:
    if arg.type == "deck":
        return "A-D"
    if arg.type == "band":
        return "low, mid, high"
    if arg.type == "bool":
        return "0, 1"
    if arg.type == "quantize":
        return "0, 1, 2, 4, 8, bar"
    if arg.type == "bpm":
        return "0 or 20..400"
    if arg.lo is None and arg.hi is None:
        return ""
    text = f"{bound_text(arg.lo)}..{bound_text(arg.hi)}"
    return f"{text} {arg.unit}" if arg.unit else text


def _default(arg: spec.Arg) -> str:
    if arg.variadic:
        return "one or more"
    if arg.default is spec.REQUIRED:
        return "required"
    if arg.default is spec.KEEP:
        return "unchanged"
    if arg.default is None:
        return arg.default_text or "none"
    if isinstance(arg.default, bool):
        return "1" if arg.default else "0"
    if isinstance(arg.default, float):
        return f"{arg.default:g}"
    return str(arg.default)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _message(msg: spec.Message) -> list[str]:
    out = [f"### `{msg.address}`", "", msg.summary, ""]
    out += [f"`{msg.usage()}`", ""]
    tags = []
    if msg.asynchronous:
        tags.append("asynchronous")
    if msg.live_only:
        tags.append("live only")
    if msg.origin != "crowdstream":
        tags.append({"scsynth": "SuperCollider (scsynth) convention",
                     "stemdeck": "stemdeck addition"}[msg.origin])
    if tags:
        out += ["*" + ", ".join(tags) + "*", ""]
    if msg.args:
        out += ["| argument | type | range | default | meaning |",
                "| --- | --- | --- | --- | --- |"]
        for a in msg.args:
            name = a.name + ("..." if a.variadic else "")
            out.append(f"| `{name}` | `{a.osc}` {_cell(spec.TYPES[a.type].name)} | {_cell(_range(a))} | "
                       f"{_cell(_default(a))} | {_cell(a.doc)} |")
        out.append("")
    else:
        out += ["No arguments.", ""]
    if msg.reply:
        out += [f"**Reply:** {msg.reply}", ""]
    if msg.notes:
        out += [msg.notes, ""]
    out += ["Example:", "", "```", msg.example, "```", ""]
    return out


def generate() -> str:
    lines = [HEADER]
    groups: dict[str, list[spec.Message]] = {}
    for msg in spec.MESSAGES:
        groups.setdefault(msg.group, []).append(msg)
    lines += ["## Index", "", "| address | what it does |", "| --- | --- |"]
    for msgs in groups.values():
        for msg in msgs:
            anchor = msg.address.replace("/", "").replace(".", "")    # GitHub's heading anchors
            lines.append(f"| [`{msg.address}`](#{anchor}) | {_cell(msg.summary)} |")
    lines.append("")
    for group, msgs in groups.items():
        lines += [f"## {group}", ""]
        for msg in msgs:
            lines += _message(msg)
    lines += ["## `/status.reply`", "",
              "The reply to `/status` and `/get_status`: one message in scsynth's layout, these "
              "arguments in order (`d` is a 64-bit float), so a SuperCollider client reads it "
              "as it reads scsynth's.", "",
              "| # | field | type | scsynth | stemdeck |", "| --- | --- | --- | --- | --- |"]
    for i, (name, tag, theirs, ours, _source) in enumerate(spec.SCSYNTH_STATUS_FIELDS, start=1):
        lines.append(f"| {i} | `{name}` | `{tag}` | {theirs} | {ours} |")
    lines += ["", "## `/status.json` summary", "",
              "The top-level figures of `/status.json.reply` (also logged by `/get_status`); the "
              "document adds the tempo, stretch, movement, cache, output, the OSC counters (`osc`, "
              "e.g. `ignored_arguments`) and every deck.", "",
              "| field | JSON type | meaning |", "| --- | --- | --- |"]
    for name, tag, doc in spec.STATUS_FIELDS:
        lines.append(f"| `{name}` | {'integer' if tag == 'i' else 'number'} | {doc} |")
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    sys.stdout.write(generate())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
