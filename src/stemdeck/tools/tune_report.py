"""The report half of ``stemdeck tune``: verdicts, the recommendation, and the ways to show them.

Holds :func:`verdict` (one size), :func:`recommend` (the smallest size with
no underruns and callback p99 under the headroom, and why),
:func:`use_case` (what a latency is fit for), :func:`machine` (the
machine's description), and the outputs: :func:`print_table` (rich, on the
terminal), :func:`markdown`, :func:`to_json` and :func:`plot` (matplotlib,
optional). Results are the dicts :meth:`stemdeck.tools.tune_sweep.Sweep.measure`
returns.

Main thread; imports rich/matplotlib only inside the functions that draw.
"""

from __future__ import annotations

import json
import os
import platform as _platform

LIVE_MIDI_MS = 10.0
LIVE_DJ_MS = 25.0


# -- judging ----------------------------------------------------------------------------------

def secs(seconds: float) -> str:
    """``30 s``, ``1.5 s``."""
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def verdict(r: dict, headroom: float) -> tuple[str, str]:
    """``(word, detail)``; word is one of ok, tight, underruns, refused, lost, cut short."""
    status = r["status"]
    if status == "refused":
        return "refused", r.get("reason") or "the device refused this size"
    if status == "lost":
        return "lost", r.get("reason") or "the device was lost"
    if r["underruns"] > 0:
        return "underruns", f"{r['underruns']} underrun{'s' if r['underruns'] != 1 else ''} in {secs(r['seconds'])}"
    if r.get("callbacks_measured", 0) == 0:
        return "cut short", "no callbacks measured"
    if r["dsp_load_p99"] >= headroom:
        return "tight", f"callback p99 {r['dsp_load_p99']:.0f} % of the period, over the {headroom:g} % headroom"
    if status == "interrupted":
        return "cut short", f"stopped after {secs(r['seconds'])} of {secs(r.get('planned_seconds', r['seconds']))}"
    return "ok", f"no underruns, callback p99 {r['dsp_load_p99']:.0f} % of the period"


def latency_ms(r: dict) -> float:
    """The latency a listener hears: the device's own figure when it gives one, else the block's."""
    device = r.get("device_latency_ms")
    return device if device is not None else r["block_latency_ms"]


def use_case(ms: float) -> str:
    if ms < LIVE_MIDI_MS:
        return (f"{ms:.1f} ms: fit for live MIDI and cueing by hand (under {LIVE_MIDI_MS:g} ms, a key press "
                "and its sound feel simultaneous)")
    if ms <= LIVE_DJ_MS:
        return (f"{ms:.1f} ms: fit for live DJ control (faders, EQ, crossfader; {LIVE_MIDI_MS:g}-{LIVE_DJ_MS:g} ms), "
                "a little late for playing notes or cueing by ear")
    return (f"{ms:.1f} ms: for automated sets (scores, scripts, the movement detector), where no hand waits "
            f"on the sound; above {LIVE_DJ_MS:g} ms live control feels late")


def caution(seconds: float) -> str | None:
    """What a short measurement cannot show. With no underrun in T seconds, the
    rate is below 3/T per second at 95 % confidence (the rule of three)."""
    if seconds >= 30:
        return None
    return (f"each size played only {secs(seconds)}: no underrun in {secs(seconds)} still allows about one "
            f"every {seconds / 3:.1f} s (95 % bound), so rare glitches go unseen; confirm with the default "
            "30 s (or longer --seconds) before a gig")


def recommend(results: list[dict], headroom: float) -> dict:
    """The smallest measured size with zero underruns and p99 DSP load under
    ``headroom``: ``{"buffer_size": N or None, "reason": ..., "use_case": ...}``."""
    measured = sorted(results, key=lambda r: r["buffer_size"])
    rejected = []
    for r in measured:
        word, detail = verdict(r, headroom)
        if word == "ok":
            size = r["buffer_size"]
            ms = latency_ms(r)
            reason = (f"{size} frames is the smallest size with no underruns in {secs(r['seconds'])} and "
                      f"callback p99 at {r['dsp_load_p99']:.0f} % of its {r['period_ms']:.1f} ms period "
                      f"(under the {headroom:g} % headroom)")
            if rejected:
                reason += "; " + "; ".join(rejected)
            notes = [caution(r["seconds"])]
            bigger = [x for x in measured if x["buffer_size"] > size and x["status"] != "refused"
                      and x["underruns"] > 0]
            if bigger:
                notes.append(", ".join(f"{x['buffer_size']} frames had {x['underruns']} underrun"
                                       f"{'s' if x['underruns'] != 1 else ''}" for x in bigger)
                             + " although larger: something outside the callback (other programs, a virtual "
                               "machine's host, CPU power saving) stalls audio now and then, whatever the size; "
                               "see docs/tuning.md")
            notes = [n for n in notes if n]
            return {"buffer_size": size, "latency_ms": ms, "reason": reason, "use_case": use_case(ms),
                    "caution": "; ".join(notes) or None}
        rejected.append(f"{r['buffer_size']}: {detail}")
    if not measured:
        return {"buffer_size": None, "latency_ms": None, "reason": "no size was measured", "use_case": None,
                "caution": None}
    largest = measured[-1]["buffer_size"]
    reason = ("no size held: " + "; ".join(rejected) + ". Try larger sizes (--sizes "
              f"{min(largest * 2, 8192)},{min(largest * 4, 8192)}), --realtime, closing other programs, "
              "a performance CPU governor, or fewer stems (see docs/tuning.md)")
    return {"buffer_size": None, "latency_ms": None, "reason": reason, "use_case": None, "caution": None}


# -- the machine ----------------------------------------------------------------------------------

def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"') + f", kernel {_platform.release()}"
    except OSError:
        pass
    return _platform.platform()


def machine() -> dict:
    from stemdeck.platform_info import detect

    p = detect()
    return {"description": p.description, "cpu": p.cpu, "model": p.model, "cores": p.cores,
            "memory_mb": p.memory_mb, "virtual": p.virtual, "os": _os_name(),
            "python": _platform.python_version(), "tier": p.label}


# -- cells ---------------------------------------------------------------------------------------

def _latency_cells(r: dict) -> list[str]:
    device = r.get("device_latency_ms")
    return [f"{r['block_latency_ms']:.1f} ms", "-" if device is None else f"{device:.1f} ms"]


def _row(r: dict, headroom: float) -> list[str]:
    word, detail = verdict(r, headroom)
    if r["status"] == "refused":
        return [str(r["buffer_size"]), *_latency_cells(r), "-", "-", "-", "-", f"refused: {detail}"]
    seconds = r["seconds"]
    return [
        str(r["buffer_size"]),
        *_latency_cells(r),
        f"{r['underruns']}" + ("" if abs(seconds - r.get("planned_seconds", seconds)) < 0.5 else f" in {secs(seconds)}"),
        str(r["late_callbacks"]),
        f"{r['dsp_load_p50']:.0f} / {r['dsp_load_p99']:.0f} / {r['dsp_load_max']:.0f} %",
        f"{r['cpu_percent']:.0f} %",
        word if word == "ok" else f"{word}: {detail}",
    ]


def headers(seconds: float) -> list[str]:
    return ["buffer", "latency", "device latency", f"underruns / {seconds:g} s", "past period",
            "DSP p50 / p99 / max", "CPU", "verdict"]


NUMERIC_COLUMNS = 7


# -- outputs ----------------------------------------------------------------------------------------

def print_table(console, results: list[dict], headroom: float, seconds: float, rec: dict,
                partial: bool = False) -> None:
    from rich.table import Table

    table = Table(title="stemdeck tune" + (" (partial: interrupted)" if partial else ""), title_justify="left")
    for i, h in enumerate(headers(seconds)):
        table.add_column(h, justify="right" if i < NUMERIC_COLUMNS else "left", overflow="fold")
    styles = {"ok": "green", "tight": "yellow", "cut short": "yellow"}
    for r in results:
        word, _ = verdict(r, headroom)
        table.add_row(*_row(r, headroom), style=styles.get(word, "red"))
    console.print(table)
    console.print("latency: one buffer; device latency: the output latency the device reports. "
                  "DSP load: the callback's time as a share of its period (p50 / p99 / max); CPU: this "
                  "process, 100 % = one core; past period: callbacks that took longer than their period.")
    if rec["buffer_size"] is not None:
        console.print(f"[bold]Recommended: --buffer-size {rec['buffer_size']}[/bold]: {rec['reason']}.")
        console.print(f"Use: {rec['use_case']}.")
        if rec.get("caution"):
            console.print(f"[yellow]Note[/yellow]: {rec['caution']}.")
    else:
        console.print(f"[bold red]No recommendation[/bold red]: {rec['reason']}.")


def markdown(report: dict) -> str:
    results, headroom, seconds = report["results"], report["plan"]["headroom"], report["plan"]["seconds"]
    m, a, rec = report["machine"], report["audio"], report["recommendation"]
    lines = ["# stemdeck tune report", ""]
    if not report["complete"]:
        lines += ["**Partial report: the sweep was interrupted** "
                  f"({len(results)} of {len(report['plan']['sizes'])} sizes measured).", ""]
    lines += [
        f"- date: {report['date']}",
        f"- command: `{report['command']}`",
        f"- machine: {m['description']}" + (f"; CPU: {m['cpu']}" if m.get("cpu") else "")
        + (f"; model: {m['model']}" if m.get("model") else ""),
        f"- OS: {m['os']}; Python {m['python']}; stemdeck {report['stemdeck_version']}",
        f"- audio: {a['backend']}" + (f", host API {a['hostapi']}" if a.get("hostapi") else "")
        + (f", device {a['device']}" if a.get("device") else "") + f", {a['sample_rate']} Hz"
        + (f"; {a['jack']}" if a.get("jack") else ""),
        f"- workload: {report['plan']['workload']}",
        f"- each size: {seconds:g} s measured after a {report['plan']['warmup_seconds']:g} s warm-up; "
        f"headroom {headroom:g} %",
        "",
        "| " + " | ".join(headers(seconds)) + " |",
        "| " + " | ".join("---:" if i < NUMERIC_COLUMNS else "---" for i in range(NUMERIC_COLUMNS + 1)) + " |",
    ]
    for r in results:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _row(r, headroom)) + " |")
    lines.append("")
    if rec["buffer_size"] is not None:
        lines += [f"**Recommended buffer size: {rec['buffer_size']} frames** "
                  f"(`stemdeck serve --buffer-size {rec['buffer_size']}`): {rec['reason']}.", "",
                  f"Use: {rec['use_case']}.", ""]
        if rec.get("caution"):
            lines += [f"Note: {rec['caution']}.", ""]
    else:
        lines += [f"**No recommendation**: {rec['reason']}.", ""]
    lines += ["DSP load is the audio callback's time as a share of its period (p50 / p99 / max); "
              "an underrun is a block the device did not get in time (the device's underflow flag, "
              "or a callback that ran past its period); CPU is this process, 100 % = one core. "
              "How to read this: docs/tuning.md.", ""]
    return "\n".join(lines)


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, default=str) + "\n"


def plot_available() -> str | None:
    """None when matplotlib can be imported, else what to do about it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return ("--plot needs matplotlib, an optional extra that is not installed: "
                "pip install 'stemdeck[plot]' (or pip install matplotlib)")
    return None


def plot(report: dict, path: str) -> None:
    """Latency against underruns and DSP load per size, as a PNG (or any
    format matplotlib knows from the file name)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    headroom = report["plan"]["headroom"]
    rs = [r for r in report["results"] if r["status"] != "refused"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if rs:
        x = [latency_ms(r) for r in rs]
        ax.plot(x, [r["dsp_load_p99"] for r in rs], "o-", label="callback p99 (% of period)")
        ax.plot(x, [r["dsp_load_max"] for r in rs], "^--", label="callback max (% of period)", alpha=0.6)
        ax.axhline(headroom, color="grey", linestyle=":", label=f"headroom {headroom:g} %")
        ax.set_xscale("log", base=2)
        refused = [r for r in report["results"] if r["status"] == "refused"]
        for r in refused:
            ax.axvline(r["block_latency_ms"], color="tab:red", linestyle="--", alpha=0.4)
            ax.text(r["block_latency_ms"], headroom / 2, " refused", color="tab:red", rotation=90,
                    va="center", fontsize="small")
        ticks = sorted([(latency_ms(r), r) for r in rs] + [(r["block_latency_ms"], r) for r in refused],
                       key=lambda t: t[0])
        ax.set_xticks([t[0] for t in ticks])
        ax.set_xticklabels([f"{r['buffer_size']}\n{v:.1f} ms" for v, r in ticks])
        ax.minorticks_off()
        ax2 = ax.twinx()
        ax2.bar(x, [r["underruns"] for r in rs], width=[v * 0.25 for v in x], color="tab:red", alpha=0.35,
                label="underruns")
        ax2.set_ylabel(f"underruns in {report['plan']['seconds']:g} s", color="tab:red")
        ax2.set_ylim(bottom=0, top=max(1, max(r["underruns"] for r in rs)) * 1.2)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="upper right", fontsize="small")
    ax.set_xlabel("buffer size (frames) and latency")
    ax.set_ylabel("DSP load, % of the period")
    rec = report["recommendation"]["buffer_size"]
    ax.set_title(f"stemdeck tune: {report['machine']['description']}"
                 + (f" - recommended {rec}" if rec else " - no size held"), fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_text(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
