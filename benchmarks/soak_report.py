"""The soak benchmark's verdicts, table and plot: from the samples benchmarks/soak.py
took (one dict per interval) to PASS/FAIL lines with their figures, a table per
interval, and a PNG (matplotlib, optional: the ``plot`` extra)."""

from __future__ import annotations

import math

import numpy as np

FLAT_TOLERANCE = 0.05          # RSS and descriptors: within 5 % of the value after warm-up
LONG_RUN_S = 20 * 60           # from 20 minutes on: minute ten against the last ten minutes
WARMUP_LONG_S = 10 * 60
SIGNIFICANCE = 0.01            # more late cycles than the witness alone, beyond this chance: FAIL

COLUMNS = (  # key, heading, format
    ("t_s", "time", "{:>6.0f}s"), ("rss_mb", "RSS MB", "{:>7.1f}"), ("rss_anon_mb", "anon MB", "{:>7.1f}"),
    ("fds", "fds", "{:>4d}"), ("threads", "thr", "{:>4d}"), ("maps", "maps", "{:>5d}"),
    ("xruns_ours", "xr sd", "{:>5d}"), ("xruns_witness", "xr wit", "{:>6d}"),
    ("xruns_driver", "xr drv", "{:>6d}"), ("late_cycles", "late cyc", "{:>8d}"),
    ("underruns", "underruns", "{:>9d}"), ("late_commands", "late cmd", "{:>8d}"),
    ("voices", "voices", "{:>6d}"), ("cycles", "cycles", "{:>6d}"), ("events", "events", "{:>6d}"),
)


def table(samples: list[dict]) -> str:
    """One line per sample: xruns, late cycles, underruns, late commands and events are counts
    for the interval; the rest as sampled."""
    head = " ".join(f"{h:>{len(f.format(0) if 'd' in f else f.format(0.0))}}" for _, h, f in COLUMNS)
    lines = [head]
    for s in samples:
        cells = []
        for key, _, fmt in COLUMNS:
            v = s.get(key)
            width = len(fmt.format(0) if "d" in fmt else fmt.format(0.0))
            cells.append(f"{'-':>{width}}" if v is None else fmt.format(v))
        lines.append(" ".join(cells))
    return "\n".join(lines)


def comparison_window(total_s: float) -> tuple[float, float, str]:
    """(reference time, window start, how it was chosen) for the flatness criteria."""
    if total_s >= LONG_RUN_S:
        return (WARMUP_LONG_S, total_s - 10 * 60,
                "the last ten minutes against minute ten")
    return (total_s / 2, total_s / 2,
            f"a run under {LONG_RUN_S // 60} minutes: its last half against the value at its middle "
            f"({total_s / 120:.1f} min, after warm-up)")


def flat(samples: list[dict], key: str, total_s: float, tolerance: float = FLAT_TOLERANCE) -> dict:
    """Is ``key`` flat: every sample in the comparison window within ``tolerance`` of the
    first sample at or after the reference time?"""
    t_ref, start, how = comparison_window(total_s)
    ref = next((s for s in samples if s["t_s"] >= t_ref - 1e-6 and s.get(key) is not None), None)
    window = [s[key] for s in samples if s["t_s"] >= start - 1e-6 and s.get(key) is not None]
    if ref is None or not window or not ref[key]:
        return {"ok": False, "why": f"no {key} samples to compare", "how": how}
    ratios = np.array(window, dtype=float) / float(ref[key]) - 1.0
    worst = float(ratios[np.argmax(np.abs(ratios))])
    return {"ok": bool(abs(worst) <= tolerance), "how": how, "ref_t_s": ref["t_s"], "ref": ref[key],
            "min": float(min(window)), "max": float(max(window)), "worst_change": worst,
            "samples": len(window)}


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if p >= 1.0:
        return 1.0
    if p <= 0.0:
        return 0.0
    total = 0.0
    for i in range(k, n + 1):
        log_term = (math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                    + i * math.log(p) + (n - i) * math.log1p(-p))
        total += math.exp(log_term)
    return min(1.0, total)


def late_cycle_verdict(base_cycles: int, base_s: float, soak_cycles: int, soak_s: float,
                       significance: float = SIGNIFICANCE) -> dict:
    """Late JACK cycles per minute during the soak against the witness-alone window.

    Late cycles come in bursts of chance (the VM stalls), so "more per minute" alone would
    fail half of all runs of a server that adds none. PASS when the soak's rate is not
    above the baseline's, or is above it by no more than chance explains: given all
    n = soak + baseline late cycles at one common rate, the soak's share is
    Binomial(n, soak_s / (soak_s + base_s)); FAIL when its count is in that distribution's
    upper ``significance`` tail."""
    base_rate = 60.0 * base_cycles / base_s
    soak_rate = 60.0 * soak_cycles / soak_s
    n = base_cycles + soak_cycles
    p_value = binomial_tail(soak_cycles, n, soak_s / (soak_s + base_s))
    if soak_rate <= base_rate:
        ok, why = True, "not more per minute than the witness alone"
    elif p_value >= significance:
        ok, why = True, f"more per minute, but within chance (p = {p_value:.2f} >= {significance})"
    else:
        ok, why = False, f"more per minute than chance explains (p = {p_value:.2g} < {significance})"
    return {"ok": ok, "why": why, "baseline_per_min": base_rate, "soak_per_min": soak_rate,
            "baseline_cycles": base_cycles, "baseline_s": base_s, "soak_cycles": soak_cycles,
            "soak_s": soak_s, "p_value": p_value}


def percentiles(values) -> dict:
    """Median, p90, max of per-interval figures (for rates: events per interval)."""
    a = np.asarray([v for v in values if v is not None], dtype=float)
    if a.size == 0:
        return {}
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "max": float(a.max())}


def verdict_lines(verdicts: dict) -> list[str]:
    """PASS/FAIL lines with their figures."""
    out = []
    c = verdicts["no_crash"]
    out.append(f"{'PASS' if c['ok'] else 'FAIL'}  no crash: {c['why']}")
    for key, label, unit in (("rss_flat", "RSS flat", " MB"), ("fds_flat", "descriptors flat", "")):
        v = verdicts[key]
        if "ref" not in v:
            out.append(f"FAIL  {label}: {v['why']}")
            continue
        out.append(f"{'PASS' if v['ok'] else 'FAIL'}  {label} ({v['how']}): reference {v['ref']:.6g}{unit} "
                   f"at {v['ref_t_s']:.0f} s; window {v['min']:.6g}..{v['max']:.6g}{unit} over {v['samples']} "
                   f"samples; largest change {100 * v['worst_change']:+.1f} % (limit {100 * FLAT_TOLERANCE:.0f} %)")
    x = verdicts["late_cycles"]
    out.append(f"{'PASS' if x['ok'] else 'FAIL'}  late JACK cycles: {x['soak_per_min']:.2f}/min during the soak "
               f"({x['soak_cycles']} in {x['soak_s'] / 60:.1f} min) vs {x['baseline_per_min']:.2f}/min with the "
               f"witness alone ({x['baseline_cycles']} in {x['baseline_s']:.0f} s): {x['why']}")
    return out


def plot(result: dict, path: str) -> str | None:
    """A PNG of RSS, descriptors/threads/maps and late cycles per minute. Returns why it
    could not be drawn (matplotlib missing), or None."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ("matplotlib is not installed, so no plot was drawn: "
                ".venv/bin/pip install -e '.[plot]' (or matplotlib)")
    samples = result["samples"]
    t = np.array([s["t_s"] for s in samples]) / 60.0
    fig, axes = plt.subplots(3, 1, figsize=(9, 10), sharex=True)
    edges = np.concatenate([[0.0], t])
    ax = axes[0]
    for key, label in (("rss_mb", "RSS"), ("rss_anon_mb", "RSS anonymous (heap)")):
        v = np.array([s[key] for s in samples], dtype=float)
        ax.plot(t, v - v[0], marker=".", label=f"{label}, {v[0]:.0f} MB at first row")
    ax.set_ylabel("MB since the first row")
    ax.legend(loc="best")
    ax.set_title(f"stemdeck serve soak: {result['minutes']:g} min at {result['block']} frames")
    ax = axes[1]
    for key, label in (("fds", "open descriptors"), ("threads", "threads"), ("maps", "memory mappings / 10")):
        ax.plot(t, [s[key] / (10 if key == "maps" else 1) for s in samples], marker=".", label=label)
    ax.set_ylabel("count")
    ax.legend(loc="best")
    ax = axes[2]
    interval_min = np.diff(edges)
    for key, label, style in (("late_cycles", "late cycles", "-"), ("xruns_ours", "blamed on stemdeck", "--"),
                              ("xruns_witness", "blamed on the witness", ":")):
        ax.stairs(np.array([s[key] for s in samples]) / interval_min, edges, linestyle=style, linewidth=2,
                  label=label)
    ax.axhline(result["verdicts"]["late_cycles"]["baseline_per_min"], color="k", linestyle="-.",
               label="late cycles, witness alone")
    ax.set_ylabel("per minute")
    ax.set_xlabel("minutes")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None
