"""The session report: one self-contained HTML file a clinician can read and a researcher can
trust, every number from `clinic.scoring` on the session file, figures as embedded PNG.

Each section has a figure where a picture reads faster than a table (the session's timeline,
the stimulation, TPD staircases, the localization map, LRJ, pain and movement, EMG around
e-stim), its table, and a line explaining every statistic in it. Phases are named in full as
the protocol names them; the stimulation dose is counted within the needling phase, and any
stimulation outside it is flagged in a line of its own.

`write_report(session_path, out_dir)` writes `<session>.report.html`; `write_trend_report(patient,
folder, out_dir)` writes the trend over a patient's sessions (visits). Both files are created
owner-only. Needs matplotlib (the `report` extra).
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import statistics
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from needlelab.clinic.scoring import LrjBlockScore, SessionScores, StimSpan, score_session
from needlelab.clinic.tpd import TpdSettings
from needlelab.events import (
    LrjTrialEvent,
    MarkerEvent,
    NeedleSiteEvent,
    NrsEvent,
    PromptEvent,
    ResponseEvent,
    RomEvent,
    TpdTrialEvent,
)
from needlelab.private import write_private
from needlelab.record.verify import device_facts, format_facts

REPORT_EXTRA_HINT = "the report needs matplotlib: pip install 'needlelab[report]'"

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.1em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.6em 0 0.3em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.muted { color: #666; } .bad { color: #b71c1c; font-weight: bold; }
.flag { color: #b71c1c; font-weight: bold; border-left: 4px solid #b71c1c; padding-left: 0.5em; }
ul.explain { color: #555; font-size: 0.9em; margin: 0.2em 0 1.2em; padding-left: 1.2em; }
img { max-width: 100%; display: block; margin: 0.6em 0; }
"""

# Colours: one per meaning, the same in every figure.
BLUE, RED, ORANGE, GREEN, GREY = "#4f83cc", "#c62828", "#ef6c00", "#2e7d32", "#888888"
PRE, POST = "#5e35b1", "#00897b"  # pre and post: two hues a colour-blind reader tells apart
NEEDLING_SHADE = "#e8f5e9"


def _matplotlib() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(REPORT_EXTRA_HINT) from None
    return plt


def unit(text: str) -> str:
    """A unit as a reader writes it: µV, not the ASCII "uV" devices and files use."""
    return re.sub(r"\bu(?=[VA]\b)", "µ", text)


def _png(fig: Any, alt: str) -> str:
    """A figure as an <img> with the PNG inline and `alt` saying what it shows."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _matplotlib().close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return '<span class="muted">–</span>'
    if isinstance(value, float):
        if math.isnan(value):
            return '<span class="muted">–</span>'
        return f"{value:.{digits}f}{suffix}"
    return f"{html.escape(str(value))}{suffix}"


def _explain(terms: Mapping[str, str]) -> str:
    """One line per statistic saying what it is."""
    items = "".join(
        f'<li data-term="{html.escape(term)}"><b>{html.escape(term)}</b>: {html.escape(text)}</li>'
        for term, text in terms.items()
    )
    return f'<ul class="explain">{items}</ul>'


def _table(
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    section: str,
    explain: Mapping[str, str],
) -> str:
    """A table and, under it, a line for each of its columns (every column must have one)."""
    missing = [h for h in header if h not in explain]
    assert not missing, f"columns without an explanation: {missing}"  # a programming error
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{cell if isinstance(cell, str) else _fmt(cell)}</td>" for cell in row)
        + "</tr>"
        for row in rows
    )
    return f'<table data-section="{section}"><tr>{head}</tr>{body}</table>' + _explain(
        {h: explain[h] for h in header}
    )


def _wrap(name: str, width: int = 22) -> str:
    """A phase name in full, on several lines if it is long."""
    return "\n".join(textwrap.wrap(name, width)) or name


def _shade_needling(ax: Any, scores: SessionScores, label: bool = False) -> None:
    if scores.dose_over_recording:
        return  # no needling phase: nothing to shade
    for k, (_name, lo, hi) in enumerate(scores.needling):
        ax.axvspan(lo, hi, color=NEEDLING_SHADE, zorder=0,
                   label="needling" if label and k == 0 else None)  # fmt: skip


def _merged(pieces: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Stretches of time joined where they touch or overlap."""
    out: list[tuple[float, float]] = []
    for lo, hi in sorted(pieces):
        if out and lo <= out[-1][1] + 1e-9:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _seconds(spans: Iterable[StimSpan]) -> float:
    return sum(p.end_s - p.start_s for p in spans)


# -- session and phases ---------------------------------------------------------------------------
def _shortening(scores: SessionScores) -> str:
    """The template's own word that it was shortened on purpose (a demo's), if it says so."""
    protocol = next((e for e in scores.events if getattr(e, "kind", "") == "protocol"), None)
    template = getattr(protocol, "template", None) or {}
    said = str((template.get("protocol") or {}).get("shortened") or "")
    return f"<p>Shortened protocol: {html.escape(said)}</p>" if said else ""


def _summary(scores: SessionScores) -> str:
    return _shortening(scores) + _table(
        ("patient", "started (UTC)", "duration", "protocol", "file"),
        [(scores.patient_id, scores.started_utc, _fmt(scores.duration_s, 0, " s"),
          scores.protocol or "–", scores.path.name)],
        "summary",
        {
            "patient": "the pseudonymous id the session was recorded under (never a name)",
            "started (UTC)": "when recording started, in universal time",
            "duration": "session time from the start of recording to its end",
            "protocol": "the protocol template the session followed (recorded in the file)",
            "file": "the session file every number in this report is computed from",
        },
    )  # fmt: skip


def _timeline(scores: SessionScores) -> str:
    """The whole session on one time axis: phases, each stimulator channel's output, events."""
    if not scores.phases and not scores.stim_spans:
        return '<p class="muted">No phases were recorded.</p>'
    plt = _matplotlib()
    channels = sorted({p.channel for p in scores.stim_spans})
    events = scores.events
    marks: list[tuple[str, list[float]]] = [
        ("localization questions", [e.t_ns / 1e9 for e in events if isinstance(e, PromptEvent)]),
        ("localization answers", [e.t_ns / 1e9 for e in events if isinstance(e, ResponseEvent)]),
        ("TPD trials", [e.t_ns / 1e9 for e in events if isinstance(e, TpdTrialEvent)]),
        ("LRJ trials", [e.t_ns / 1e9 for e in events if isinstance(e, LrjTrialEvent)]),
        ("pain / movement ratings",
         [e.t_ns / 1e9 for e in events if isinstance(e, NrsEvent | RomEvent)]),
        ("notes", [e.t_ns / 1e9 for e in events if isinstance(e, MarkerEvent)]),
    ]  # fmt: skip
    marks = [(name, ts) for name, ts in marks if ts]
    labels = [_wrap(name) for name, _s, _e in scores.phases]
    labels += [f"{c} output on" for c in channels] + [name for name, _ts in marks]
    rows = len(labels)
    fig, ax = plt.subplots(figsize=(11, 0.34 * rows + 1.1))
    _shade_needling(ax, scores)
    for k, (_name, start, end) in enumerate(scores.phases):
        stop = end if end is not None else scores.duration_s
        ax.barh(k, stop - start, left=start, color=BLUE, height=0.6)
    base = len(scores.phases)
    for k, channel in enumerate(channels):
        inside, outside = [], []
        for span in (p for p in scores.stim_spans if p.channel == channel):
            inside += [(q.start_s, q.end_s) for _n, lo, hi in scores.needling
                       if (q := span.clipped(lo, hi))]  # fmt: skip
            outside += [(q.start_s, q.end_s) for q in span.outside(scores.needling)]
        for pieces, colour in ((inside, GREEN), (outside, RED)):
            for lo, hi in _merged(pieces):  # one bar per stretch on: no seams between settings
                ax.barh(base + k, hi - lo, left=lo, color=colour, height=0.6)
    base += len(channels)
    for k, (_name, ts) in enumerate(marks):
        ax.plot(ts, [base + k] * len(ts), "|", color="#333", ms=9)
    ax.set_yticks(range(rows), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("session time (s)")
    ax.set_xlim(0, max(scores.duration_s, 1))
    ax.grid(axis="x", color="#eee")
    ax.set_axisbelow(True)
    from matplotlib.patches import Patch

    ax.legend(
        handles=[Patch(color=BLUE, label="phase"), Patch(color=NEEDLING_SHADE, label="needling"),
                 Patch(color=GREEN, label="stimulation within needling"),
                 Patch(color=RED, label="stimulation outside needling")],
        fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, frameon=False,
    )  # fmt: skip
    figure = _png(fig, "Timeline of the session: phases, stimulator output and events over time")
    rows_table = [
        (html.escape(name), scores.phase_kinds.get(name, "–"), _fmt(start, 1, " s"),
         _fmt(end, 1, " s"),
         _fmt(None if end is None else end - start, 1, " s"))
        for name, start, end in scores.phases
    ]  # fmt: skip
    table = _table(
        ("phase", "kind", "start", "end", "length"),
        rows_table,
        "phases",
        {
            "phase": "the phase as the protocol names it",
            "kind": "what the phase does: nrs (pain rating), tpd (two-point discrimination), "
            "lrj (left/right judgement), rom (range of motion), needling, note",
            "start": "session time the phase started",
            "end": "session time the phase ended (– : still running when recording stopped)",
            "length": "how long the phase lasted",
        },
    )
    return figure + table


# -- stimulation ----------------------------------------------------------------------------------
def _outside_flag(scores: SessionScores) -> str:
    outside = scores.stim_outside
    if not outside:
        return ""
    where = (
        "no needling phase was recorded"
        if not scores.needling
        else "outside " + ", ".join(f"“{name}”" for name, _lo, _hi in scores.needling)
    )
    per = ", ".join(
        f"{c} {_seconds(p for p in outside if p.channel == c):.1f} s "
        f"(up to {max(p.intensity_ma for p in outside if p.channel == c):.1f} mA)"
        for c in sorted({p.channel for p in outside})
    )
    return (
        f'<p class="flag" data-flag="stim-outside-needling">Stimulation outside needling: the '
        f"stimulator output was on {where}: {per}. This time is not counted in the dose "
        "below; check the device and the protocol.</p>"
    )


def _dose(scores: SessionScores) -> str:
    """Per channel and frequency, within needling: time on, time-weighted mean and highest
    intensity (the exact time at every intensity is in `scoring.score_session(...).dose`)."""
    flag = _outside_flag(scores)
    if not scores.needling:
        note = '<p class="muted">No needling phase was recorded: no dose is counted.</p>'
    elif not scores.dose:
        note = '<p class="muted">The stimulator output was never on during needling.</p>'
    else:
        note = ""
    groups: dict[tuple[str, float], list[tuple[float, float]]] = {}
    for d in scores.dose:
        groups.setdefault((d.channel, d.frequency_hz), []).append((d.intensity_ma, d.seconds))
    rows: list[Sequence[Any]] = []
    for (channel, hz), parts in sorted(groups.items()):
        seconds = sum(s for _ma, s in parts)
        mean = sum(ma * s for ma, s in parts) / seconds if seconds else 0.0
        peak = max(ma for ma, _s in parts)
        rows.append((channel, _fmt(hz, 1, " Hz"), _fmt(seconds, 1, " s"), _fmt(mean, 1, " mA"),
                     _fmt(peak, 1, " mA")))  # fmt: skip
    for channel, total in sorted(scores.stim_total_s.items()):
        rows.append((f"{channel} total", "", _fmt(total, 1, " s"), "", ""))
    needling = ", ".join(f"“{name}” {lo:.1f}–{hi:.1f} s" for name, lo, hi in scores.needling)
    table = (
        _table(
            ("channel", "frequency", "time with output on", "mean intensity", "highest"),
            rows,
            "dose",
            {
                "channel": "the stimulator and its output channel",
                "frequency": "pulse frequency the channel was set to",
                "time with output on": "seconds the output was on (intensity above 0) within "
                f"{'the recording' if scores.dose_over_recording else 'the needling phase'}, at "
                "that frequency; the total row sums the channel",
                "mean intensity": "intensity averaged over that time, each setting weighted by "
                "how long it was held",
                "highest": "the highest intensity set during that time",
            },
        )
        if rows
        else ""
    )
    if scores.dose_over_recording:
        head = (
            "<p>No protocol phase was recorded: the dose covers the whole recording, from the "
            "stimulator's own settings messages.</p>"
        )
    elif scores.needling:
        head = (
            f"<p>Counted within the needling phase ({html.escape(needling)}), from the "
            "stimulator's own settings messages.</p>"
        )
    else:
        head = ""
    return flag + head + note + _dose_figure(scores) + table


def _dose_figure(scores: SessionScores) -> str:
    channels = sorted({p.channel for p in scores.stim_spans})
    if not channels:
        return '<p class="muted">The stimulator output was never on.</p>'
    plt = _matplotlib()
    fig, axes = plt.subplots(
        len(channels), 1, figsize=(11, 1.5 * len(channels) + 0.6), sharex=True, squeeze=False
    )
    for ax, channel in zip(axes[:, 0], channels, strict=True):
        _shade_needling(ax, scores, label=True)
        for span in (p for p in scores.stim_spans if p.channel == channel):
            for _n, lo, hi in scores.needling:
                if (q := span.clipped(lo, hi)) is not None:
                    ax.hlines(q.intensity_ma, q.start_s, q.end_s, color=GREEN, lw=2.5)
            for q in span.outside(scores.needling):
                ax.hlines(q.intensity_ma, q.start_s, q.end_s, color=RED, lw=2.5)
        ax.set_ylabel(f"{channel}\nmA", fontsize=8)
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", color="#eee")
    whole = scores.dose_over_recording
    axes[0, 0].plot([], [], color=GREEN, lw=2.5, label="on" if whole else "within needling")
    if not whole:
        axes[0, 0].plot([], [], color=RED, lw=2.5, label="outside needling")
    axes[0, 0].legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3,
                      frameon=False)  # fmt: skip
    axes[-1, 0].set_xlabel("session time (s)")
    axes[-1, 0].set_xlim(0, max(scores.duration_s, 1))
    return _png(fig, "Stimulation intensity over the session per channel, needling shaded")


# -- TPD ------------------------------------------------------------------------------------------
def _tpd(scores: SessionScores, settings: TpdSettings) -> str:
    if not scores.tpd:
        return '<p class="muted">No TPD trials were recorded.</p>'
    method = (
        f"Adaptive 1-up/{settings.down}-down staircase per site, orientation and moment (settles "
        f"at the distance called two points {100 * 0.5 ** (1 / settings.down):.1f} % of the "
        f"time), steps {', '.join(f'{s:g}' for s in settings.steps_mm)} mm, stopped after "
        f"{settings.reversals} reversals or {settings.max_trials} trials; threshold = mean "
        f"distance at the last {settings.threshold_reversals} reversals. One-point catch trials "
        f"at {100 * settings.catch_rate:.0f} % (one per block of "
        f"{max(2, round(1 / settings.catch_rate)) if settings.catch_rate else 0}); "
        '"two" on them is a false alarm.'
    )
    said = {"caliper": "read from the caliper", "manual": "set by hand (the staircase's)"}
    sources = sorted({said.get(t.distance_source, t.distance_source)
                      for track in scores.tpd for t in track.trials})  # fmt: skip
    rows = [
        (t.name, len(t.trials), len(t.reversals_mm), _fmt(t.threshold_mm, 1, " mm"),
         _fmt(None if t.false_alarm_rate is None else 100 * t.false_alarm_rate, 0, " %"))
        for t in scores.tpd
    ]  # fmt: skip
    change = _table(
        ("site, orientation", "post − pre threshold"),
        [(k, _fmt(v, 1, " mm")) for k, v in scores.tpd_change.items()],
        "tpd-change",
        {
            "site, orientation": "the skin site tested and the caliper's orientation",
            "post − pre threshold": "threshold after treatment minus before: negative means the "
            "patient tells two points apart at a shorter distance after (sharper touch)",
        },
    )
    plt = _matplotlib()
    n = len(scores.tpd)
    cols = min(n, 2)
    nrows = (n + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(11, 2.7 * nrows), squeeze=False)
    for ax, track in zip(axes.ravel(), scores.tpd, strict=False):
        two = [t for t in track.trials if t.points == 2]
        catch = [t for t in track.trials if t.points == 1]
        ax.plot([t.trial for t in two], [t.distance_mm for t in two], "-o", ms=3, color=BLUE,
                label="two-point trial")  # fmt: skip
        wrong = [t for t in two if not t.correct]
        ax.plot([t.trial for t in wrong], [t.distance_mm for t in wrong], "x", color=RED,
                label='answered "one"')  # fmt: skip
        ax.plot(
            [t.trial for t in track.trials if t.reversal],
            [t.distance_mm for t in track.trials if t.reversal],
            "o", mfc="none", ms=8, color=ORANGE, label="reversal",
        )  # fmt: skip
        ax.plot([t.trial for t in catch], [t.distance_mm for t in catch], "s", ms=4, color=GREY,
                label="catch (one point)")  # fmt: skip
        if track.threshold_mm is not None:
            ax.axhline(track.threshold_mm, color=GREEN, ls="--", lw=1,
                       label=f"threshold {track.threshold_mm:.1f} mm")  # fmt: skip
        ax.set_title(track.name, fontsize=9)
        ax.set_xlabel("trial", fontsize=8)
        ax.set_ylabel("distance (mm)", fontsize=8)
        ax.legend(fontsize=6, loc="upper right")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.tight_layout()
    return (
        f"<p>{html.escape(method)} Distances: {html.escape(' and '.join(sources))}.</p>"
        + _png(fig, "TPD staircases: distance per trial, reversals and threshold per track")
        + _table(
            ("staircase", "trials", "reversals", "threshold", "false alarms"),
            rows,
            "tpd",
            {
                "staircase": "one adaptive track: moment (pre/post), site and orientation",
                "trials": "trials given on this track, catch trials included",
                "reversals": "trials where the staircase turned (from shorter to longer distances "
                "or back)",
                "threshold": "the shortest distance the patient tells as two points: mean "
                "distance at the last reversals (lower is sharper touch)",
                "false alarms": 'share of one-point catch trials answered "two" (high: the '
                "patient guesses; thresholds are then less trustworthy)",
            },
        )
        + change
    )


# -- localization ---------------------------------------------------------------------------------
MAP_SIDES = ("L", "midline / both", "R", "unsure")


def _map_column(side: str | None) -> int:
    return {"L": 0, "midline": 1, "both": 1, "R": 2}.get(side or "", 3)


def _localization(scores: SessionScores) -> str:
    loc = scores.localization
    acc = loc.accuracy
    if not acc.n:
        return '<p class="muted">No localization answers were recorded.</p>'
    table = _table(
        ("answers", "level exact", "mean |level error|", "side correct", "median latency"),
        [(str(acc.n), _fmt(acc.level_exact_pct, 0, " %"),
          _fmt(acc.mean_abs_level_error, 2, " segments"), _fmt(acc.side_correct_pct, 0, " %"),
          _fmt(None if acc.median_latency_ms is None else acc.median_latency_ms / 1000, 1, " s"))],
        "localization",
        {
            "answers": "localization answers that stand after corrections and withdrawals",
            "level exact": "share of answers naming the needled level itself",
            "mean |level error|": "average distance between the level named and the needled "
            "level, in vertebral segments (0: always exact; 1: one level off on average)",
            "side correct": "share of answers naming the needled side (both, for a midline site)",
            "median latency": "typical time from the question to the patient's answer",
        },
    )  # fmt: skip
    words = ", ".join(f"{w} ({n})" for w, n in sorted(loc.descriptors.items(), key=lambda x: -x[1]))
    return (
        _localization_figure(scores)
        + table
        + f"<p>Descriptors (how the patient described the sensation, times): "
        f"{html.escape(words) or '–'}</p>"
    )


def _localization_figure(scores: SessionScores) -> str:
    loc = scores.localization
    sites = {e.id: e for e in scores.events if isinstance(e, NeedleSiteEvent)}
    needled = {
        (s.level, _map_column(s.side))
        for r in loc.responses
        if r.site_id is not None and (s := sites.get(r.site_id)) is not None
    }
    index = {level: k for k, level in enumerate(loc.levels)}
    used = {index[lv] for lv, _c in needled if lv in index}
    used |= {index[r.level] for r in loc.responses if r.level in index}
    lo, hi = (min(used), max(used)) if used else (0, len(loc.levels) - 1)
    keep = list(range(max(0, lo - 1), min(len(loc.levels), hi + 2)))
    labels = [loc.levels[k] for k in keep] + ["could not say"]
    row = {loc.levels[k]: i for i, k in enumerate(keep)}
    counts: dict[tuple[int, int], int] = {}
    for r in loc.responses:
        y = row.get(r.level, len(keep)) if r.level is not None else len(keep)
        key = (y, _map_column(r.side))
        counts[key] = counts.get(key, 0) + 1
    plt = _matplotlib()
    fig, (a1, a2) = plt.subplots(
        1, 2, figsize=(11, 0.45 * len(labels) + 1.6), gridspec_kw={"width_ratios": [1, 1.1]}
    )
    top = max(counts.values()) if counts else 1
    for (y, x), n in counts.items():
        hit = any(row.get(lv) == y and c == x for lv, c in needled)
        a1.scatter(x, y, s=250 + 900 * n / top, color=GREEN if hit else BLUE, alpha=0.75,
                   zorder=2)  # fmt: skip
        a1.text(x, y, str(n), ha="center", va="center", color="white", fontsize=9, zorder=3)
    for lv, x in needled:
        if lv in row:
            a1.scatter(x, row[lv], s=1500, marker="s", facecolor="none", edgecolor=RED, lw=2,
                       zorder=4)  # fmt: skip
    a1.set_xticks(range(len(MAP_SIDES)), MAP_SIDES, fontsize=8)
    a1.set_yticks(range(len(labels)), labels, fontsize=8)
    a1.set_xlim(-0.6, len(MAP_SIDES) - 0.4)
    a1.set_ylim(len(labels) - 0.5, -0.5)
    a1.grid(color="#eee")
    a1.set_axisbelow(True)
    a1.set_xlabel("side the patient named (patient's left on the left)")
    a1.set_ylabel("level the patient named")
    a1.set_title("Answers vs the needled site (red square)", fontsize=9)
    a1.scatter([], [], color=GREEN, label="at the needled level and side")
    a1.scatter([], [], color=BLUE, label="elsewhere")
    a1.legend(fontsize=7, loc="lower right")
    matrix = [[loc.confusion[i][j] for j in keep] for i in keep]
    a2.imshow(matrix, cmap="Blues")
    peak = max((max(r) for r in matrix), default=0) or 1
    for i, line in enumerate(matrix):
        for j, count in enumerate(line):
            if count:
                colour = "white" if count > peak / 2 else "black"
                a2.text(j, i, str(count), ha="center", va="center", fontsize=9, color=colour)
    short = [loc.levels[k] for k in keep]
    a2.set_xticks(range(len(short)), short, fontsize=8)
    a2.set_yticks(range(len(short)), short, fontsize=8)
    a2.set_xlabel("level the patient named")
    a2.set_ylabel("needled level")
    a2.set_title("Needled level × named level (diagonal: exact)", fontsize=9)
    fig.tight_layout()
    return _png(fig, "Localization map: levels and sides the patient named against the needled "
                "site, and the needled-by-named level matrix")  # fmt: skip


# -- LRJ ------------------------------------------------------------------------------------------
def _view(trial: LrjTrialEvent) -> str:
    """The picture's view: body part and rotation, from the stimulus name."""
    rotation = re.search(r"rot(\d+)", trial.stimulus)
    return f"{trial.body_part} {rotation.group(1)}°" if rotation else trial.body_part


def _lrj(scores: SessionScores) -> str:
    if not scores.lrj:
        return '<p class="muted">No left/right judgement trials were recorded.</p>'
    rows = [
        (b.block or "–", str(b.n), _fmt(b.accuracy_pct, 0, " %"), _fmt(b.median_rt_ms, 0, " ms"),
         _fmt(b.bias, 2))
        for b in scores.lrj
    ]  # fmt: skip
    by_side = []
    for b in scores.lrj:
        for side in ("L", "R"):
            trials = [t for t in b.trials if t.true_side == side]
            rts = [t.rt_ms for t in trials if t.correct and t.rt_ms is not None]
            by_side.append(
                (f"{b.block or '–'} {'left' if side == 'L' else 'right'}", str(len(trials)),
                 _fmt(100 * sum(t.correct for t in trials) / len(trials) if trials else None, 0,
                      " %"),
                 _fmt(statistics.median(rts) if rts else None, 0, " ms"))
            )  # fmt: skip
    common = {
        "trials": "pictures shown",
        "accuracy": "share of pictures whose side the patient named correctly (a picture not "
        "answered in time counts as wrong)",
        "median RT (correct)": "typical time from the picture appearing to a correct answer",
    }
    return (
        _lrj_figure(scores.lrj)
        + _table(
            ("block", "trials", "accuracy", "median RT (correct)", "right bias"),
            rows,
            "lrj",
            {
                "block": "the moment of the block: pre (before treatment) or post (after)",
                **common,
                "right bias": 'share of answers "right" minus share of pictures that were '
                'right: 0 = no lean; +0.25 = the patient says "right" a quarter more often '
                "than right pictures were shown; negative = a lean to the left",
            },
        )
        + _table(
            ("block and side shown", "trials", "accuracy", "median RT (correct)"),
            by_side,
            "lrj-side",
            {"block and side shown": "the block and the side of the pictures", **common},
        )
    )


def _lrj_figure(blocks: list[LrjBlockScore]) -> str:
    plt = _matplotlib()
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(11, 3.2),
                                     gridspec_kw={"width_ratios": [1, 1.2, 2]})  # fmt: skip
    colours = [PRE, POST, ORANGE, BLUE, GREY]
    width = 0.8 / max(len(blocks), 1)
    views = sorted({_view(t) for b in blocks for t in b.trials})
    for k, b in enumerate(blocks):
        colour, offset = colours[k % len(colours)], (k - (len(blocks) - 1) / 2) * width
        acc = []
        for side in ("L", "R"):
            trials = [t for t in b.trials if t.true_side == side]
            acc.append(100 * sum(t.correct for t in trials) / len(trials) if trials else 0.0)
        a1.bar([x + offset for x in (0, 1)], acc, width, color=colour, label=b.block or "–")
        for x, side in enumerate(("L", "R")):
            rts = [t.rt_ms for t in b.trials if t.true_side == side and t.correct and t.rt_ms]
            a2.plot([x + offset] * len(rts), rts, "o", ms=3, color=colour, alpha=0.6)
            if rts:
                a2.hlines(statistics.median(rts), x + offset - width / 2, x + offset + width / 2,
                          color=colour, lw=2.5)  # fmt: skip
        by_view = []
        for v in views:
            trials = [t for t in b.trials if _view(t) == v]
            by_view.append(
                100 * sum(t.correct for t in trials) / len(trials) if trials else float("nan")
            )
        a3.bar([x + offset for x in range(len(views))], by_view, width, color=colour,
               label=b.block or "–")  # fmt: skip
        for x, value in enumerate(by_view):
            if value == 0:  # a bar of height 0 is invisible: say it
                a3.text(x + offset, 1, "0", ha="center", va="bottom", fontsize=7, color=colour)
    a1.set_xticks((0, 1), ("left pictures", "right pictures"), fontsize=8)
    a1.set_ylabel("accuracy (%)")
    a1.set_ylim(0, 105)
    a1.legend(fontsize=7, loc="lower right")
    a1.set_title("Accuracy by side", fontsize=9)
    a2.set_xticks((0, 1), ("left pictures", "right pictures"), fontsize=8)
    a2.set_ylabel("reaction time, correct answers (ms)")
    a2.set_ylim(bottom=0)
    a2.set_title("Reaction time by side (bar: median)", fontsize=9)
    a3.set_xticks(range(len(views)), views, fontsize=7, rotation=45, ha="right")
    a3.set_ylabel("accuracy (%)")
    a3.set_ylim(0, 105)
    a3.set_title("Accuracy by view (body part, rotation; no bar: not shown)", fontsize=9)
    fig.tight_layout()
    return _png(fig, "Left/right judgement: accuracy and reaction time by side shown and by view, "
                "per block")  # fmt: skip


# -- pain and movement ----------------------------------------------------------------------------
def _ratings(scores: SessionScores) -> str:
    rows: list[Sequence[Any]] = [
        (
            "NRS pain (0–10)",
            *(", ".join(map(str, scores.nrs.get(w, []))) or "–" for w in ("pre", "post")),
        )
    ]
    for movement, by in scores.rom.items():
        rows.append((f"ROM {movement}", *(_fmt(by.get(w), 0, "°") for w in ("pre", "post"))))
    table = _table(
        ("measure", "pre", "post"),
        rows,
        "ratings",
        {
            "measure": "NRS: pain on the numeric rating scale, 0 no pain to 10 worst imaginable; "
            "ROM: range of motion of the movement, in degrees (more is freer movement)",
            "pre": "before treatment",
            "post": "after treatment",
        },
    )
    if not scores.nrs and not scores.rom:
        return table
    plt = _matplotlib()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3), gridspec_kw={"width_ratios": [1, 2]})
    for k, (when, colour) in enumerate((("pre", PRE), ("post", POST))):
        values = scores.nrs.get(when, [])
        if values:
            a1.bar(k, statistics.mean(values), 0.6, color=colour)
            a1.text(k, statistics.mean(values) + 0.2, ", ".join(map(str, values)), ha="center",
                    fontsize=8)  # fmt: skip
    a1.set_xticks((0, 1), ("pre", "post"))
    a1.set_ylim(0, 10.5)
    a1.set_ylabel("pain, NRS 0–10")
    a1.set_title("Pain", fontsize=9)
    movements = list(scores.rom)
    for k, (when, colour) in enumerate((("pre", PRE), ("post", POST))):
        xs = [m + (k - 0.5) * 0.38 for m in range(len(movements))]
        ys = [scores.rom[m].get(when, float("nan")) for m in movements]
        a2.bar(xs, ys, 0.38, color=colour, label=when)
    a2.set_xticks(range(len(movements)), movements, fontsize=8)
    a2.set_ylabel("range of motion (°)")
    a2.set_title("Movement", fontsize=9)
    if movements:
        a2.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig, "Pain (NRS) and range of motion before and after treatment") + table


# -- EMG ------------------------------------------------------------------------------------------
def _emg(scores: SessionScores) -> str:
    skipped = scores.emg_switches_outside
    left_out = (
        f'<p class="muted">{skipped} e-stim switch{"es" if skipped != 1 else ""} outside '
        "needling left out (see the flag under Stimulation dose).</p>"
        if skipped
        else ""
    )
    if not scores.emg_rms:
        return '<p class="muted">No e-stim switches within needling with EMG around them.</p>' + (
            left_out
        )
    rows = [
        (f"{r['t_s']:.1f} s", r["switch"], r["stimulator"], r["stream"],
         _fmt(r["rms_before"], 1, f" {unit(r['unit'])}"),
         _fmt(r["rms_after"], 1, f" {unit(r['unit'])}"))
        for r in scores.emg_rms
    ]  # fmt: skip
    plt = _matplotlib()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3), sharey=True)
    for ax, what in zip(axes, ("on", "off"), strict=True):
        mine = [r for r in scores.emg_rms if r["switch"] == what]
        for r in mine:
            ax.plot((0, 1), (r["rms_before"], r["rms_after"]), "-o", ms=4,
                    color=ORANGE if what == "on" else BLUE, alpha=0.7)  # fmt: skip
        ax.set_xticks((0, 1), ("1 s before", "1 s after"))
        ax.set_xlim(-0.3, 1.3)
        ax.set_title(f"output switched {what} ({len(mine)})", fontsize=9)
        ax.grid(axis="y", color="#eee")
    units = sorted({unit(r["unit"]) for r in scores.emg_rms})
    axes[0].set_ylabel(f"EMG RMS ({', '.join(units)})")
    axes[0].set_ylim(bottom=0)
    fig.tight_layout()
    return (
        _png(fig, "EMG RMS in the second before and after each e-stim switch within needling")
        + _table(
            ("time", "e-stim", "stimulator", "EMG", "RMS 1 s before", "RMS 1 s after"),
            rows,
            "emg",
            {
                "time": "session time of the switch",
                "e-stim": "whether the output was switched on or off",
                "stimulator": "the stimulator channel that switched",
                "EMG": "the EMG stream measured",
                "RMS 1 s before": "root mean square of the EMG (all channels pooled) in the "
                "second before the switch: the muscle's activity level",
                "RMS 1 s after": "the same in the second after; after an “on” it includes the "
                "stimulation artefacts",
            },
        )
        + left_out
    )


# -- data quality ---------------------------------------------------------------------------------
QUALITY_COLUMNS = (
    "stream", "samples", "gaps", "time without data", "coverage", "lost (counted)",
    "lost (inferred)", "gaps, loss unknown", "loss", "clock uncertainty",
)  # fmt: skip

QUALITY_EXPLAIN = {
    "stream": "the recorded data stream (device and signal)",
    "samples": "samples recorded",
    "gaps": "stretches without data (a lost link, a stalled device)",
    "time without data": "all gaps together",
    "coverage": "share of the recording the stream delivered data",
    "lost (counted)": "samples lost, counted from the device's own sample counter",
    "lost (inferred)": "samples lost, inferred by the driver from arrival times (no counter)",
    "gaps, loss unknown": "gaps whose cost nobody can count (a device without a counter across "
    "a lost link)",
    "loss": "counted and inferred losses over all the device made",
    "clock uncertainty": "how well the device's clock is known on the session clock (regular "
    "streams): the timing error a sample time may carry",
}


def _quality(scores: SessionScores) -> str:
    rows = [
        (q.name, str(q.samples), str(q.gaps), _fmt(q.no_data_s, 2, " s"),
         _fmt(None if q.coverage is None else 100 * q.coverage, 1, " %"), str(q.lost),
         f"~{q.lost_inferred}" if q.lost_inferred else "0", str(q.gaps_loss_unknown),
         _fmt(q.lost_pct, 2, " %"), _fmt(q.uncertainty_ms, 3, " ms"))
        for q in scores.quality
    ]  # fmt: skip
    reconnects = ", ".join(f"{d}: {n}" for d, n in scores.reconnects.items()) or "none"
    devices = [
        (html.escape(d.device), str(d.malformed), str(d.duplicates), str(d.resyncs),
         _fmt(d.as_of_t_s, 1, " s"))
        for d in scores.device_quality
    ]  # fmt: skip
    counts = (
        _table(
            ("device", "malformed", "duplicates", "resyncs", "as of"),
            devices,
            "device-quality",
            {
                "device": "the device whose decoder counted",
                "malformed": "messages the decoder could not read",
                "duplicates": "messages repeating the one before them (same sequence counter), "
                "dropped; only devices whose frames carry a counter can tell",
                "resyncs": "times the decoder lost the framing and had to find it again (each "
                "run of malformed input counts once)",
                "as of": "session time of the last count",
            },
        )
        if devices
        else '<p class="muted">No device recorded data-quality counts in this file.</p>'
    )
    return (
        _table(QUALITY_COLUMNS, rows, "quality", QUALITY_EXPLAIN)
        + f"<p>Reconnects: {html.escape(reconnects)}</p>"
        + counts
        + _facts(scores)
    )


def _facts(scores: SessionScores) -> str:
    """A line per device of what it said about itself (`device.info`): address, firmware..."""
    facts = device_facts(scores.events)
    return "".join(
        f'<p class="device-facts">{html.escape(name)}: {html.escape(unit(format_facts(f)))}</p>'
        for name, f in facts.items()
    )


def render_report(scores: SessionScores) -> str:
    """The report of one session, as HTML."""
    protocol = next((e for e in scores.events if getattr(e, "kind", "") == "protocol"), None)
    template = getattr(protocol, "template", None) or {}
    settings = TpdSettings.model_validate(template.get("tpd", {}))
    sections = [
        ("Session", _summary(scores)),
        ("Phases", _timeline(scores)),
        ("Stimulation dose", _dose(scores)),
        ("Two-point discrimination", _tpd(scores, settings)),
        ("Localization", _localization(scores)),
        ("Left/right judgement", _lrj(scores)),
        ("Pain and movement", _ratings(scores)),
        ("EMG around e-stim", _emg(scores)),
        ("Data quality", _quality(scores)),
    ]
    body = "".join(
        f'<section data-title="{html.escape(title)}"><h2>{html.escape(title)}</h2>{content}'
        "</section>"
        for title, content in sections
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>needlelab report {html.escape(scores.patient_id)}</title><style>{CSS}</style>"
        f"</head><body><h1>Session report: {html.escape(scores.patient_id)}</h1>"
        f'<p class="muted">Every figure is computed from {html.escape(scores.path.name)} by '
        "needlelab.clinic.scoring; run it again to check.</p>"
        f"{body}</body></html>"
    )


def write_report(session_path: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write the report of one session file; its path."""
    session_path = Path(session_path)
    out = Path(out_dir) if out_dir is not None else session_path.parent
    scores = score_session(session_path)
    return write_private(out / f"{session_path.stem}.report.html", render_report(scores))


# -- trend ----------------------------------------------------------------------------------------
def _mean_threshold(s: SessionScores, when: str) -> float:
    values = [t.threshold_mm for t in s.tpd if t.when == when and t.threshold_mm is not None]
    return sum(values) / len(values) if values else float("nan")


def _lrj_block(s: SessionScores, when: str) -> LrjBlockScore | None:
    return next((b for b in s.lrj if b.block == when), None)


def _trend_figure(all_scores: list[SessionScores]) -> str:
    """Per visit (an integer axis), pre and post side by side in two colours and markers."""
    plt = _matplotlib()
    fig, axes = plt.subplots(2, 2, figsize=(11, 6))
    x = list(range(1, len(all_scores) + 1))
    shift = 0.08  # pre just left of the visit, post just right: never on top of each other

    def plot(ax: Any, values: Any, title: str, ylabel: str) -> None:
        for when, colour, marker, style, dx in (
            ("pre", PRE, "o", "-", -shift), ("post", POST, "s", "--", shift)
        ):  # fmt: skip
            ys = [values(s, when) for s in all_scores]
            ax.plot([v + dx for v in x], ys, style, marker=marker, color=colour, label=when,
                    ms=6)  # fmt: skip
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_xticks(x, [str(v) for v in x])
        ax.set_xlim(0.5, len(x) + 0.5)
        ax.set_xlabel("visit")
        ax.grid(axis="y", color="#eee")
        ax.legend(fontsize=7, loc="best")

    def nrs(s: SessionScores, when: str) -> float:
        values = s.nrs.get(when, [])
        return statistics.mean(values) if values else float("nan")

    def lrj_acc(s: SessionScores, when: str) -> float:
        b = _lrj_block(s, when)
        return b.accuracy_pct if b is not None and b.accuracy_pct is not None else float("nan")

    def lrj_rt(s: SessionScores, when: str) -> float:
        b = _lrj_block(s, when)
        return b.median_rt_ms if b is not None and b.median_rt_ms is not None else float("nan")

    plot(axes[0, 0], _mean_threshold, "TPD threshold (mean of sites; lower is sharper)", "mm")
    plot(axes[0, 1], nrs, "Pain (NRS 0–10)", "NRS")
    plot(axes[1, 0], lrj_acc, "LRJ accuracy", "%")
    plot(axes[1, 1], lrj_rt, "LRJ median RT (correct answers)", "ms")
    axes[0, 1].set_ylim(0, 10.5)
    axes[1, 0].set_ylim(0, 105)
    fig.tight_layout()
    fig.canvas.draw()  # the ticks as drawn, for the alt text
    ticks = [t.get_text() for t in axes[1, 0].get_xticklabels()]
    return _png(
        fig,
        f"Trend across visits: TPD, pain and LRJ, pre and post; x axis: visit {', '.join(ticks)}",
    )


def _localization_trend(all_scores: list[SessionScores]) -> str:
    plt = _matplotlib()
    fig, ax = plt.subplots(figsize=(5.5, 3))
    x = list(range(1, len(all_scores) + 1))
    for label, values, colour, marker, dx in (
        ("level exact", [s.localization.accuracy.level_exact_pct for s in all_scores], BLUE,
         "o", -0.08),
        ("side correct", [s.localization.accuracy.side_correct_pct for s in all_scores], ORANGE,
         "s", 0.08),
    ):  # fmt: skip
        ys = [float("nan") if v is None else v for v in values]
        ax.plot([v + dx for v in x], ys, "-", marker=marker, color=colour, label=label)
    ax.set_xticks(x, [str(v) for v in x])
    ax.set_xlim(0.5, len(x) + 0.5)
    ax.set_ylim(0, 105)
    ax.set_xlabel("visit")
    ax.set_ylabel("%")
    ax.set_title("Localization during needling", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.canvas.draw()
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    return _png(fig, f"Localization accuracy per visit; x axis: visit {', '.join(ticks)}")


def write_trend_report(
    patient_id: str, folder: str | Path, out_dir: str | Path | None = None
) -> Path:
    """Write the trend across a patient's sessions in `folder`: TPD thresholds, localization
    accuracy, LRJ and NRS, one row per session (visit); its path."""
    folder = Path(folder)
    files = sorted(folder.glob(f"{patient_id}_*.sqlite"))
    if not files:
        raise FileNotFoundError(f"no sessions of patient {patient_id} in {folder}")
    all_scores = [score_session(f) for f in files]
    rows = []
    for visit, s in enumerate(all_scores, 1):
        thresholds = "; ".join(
            f"{t.name}: {t.threshold_mm:.1f}" for t in s.tpd if t.threshold_mm is not None
        )
        lrj = "; ".join(
            f"{b.block}: {b.accuracy_pct:.0f} %, {b.median_rt_ms:.0f} ms"
            for b in s.lrj
            if b.accuracy_pct is not None and b.median_rt_ms is not None
        )
        acc = s.localization.accuracy
        rows.append(
            (str(visit), s.started_utc, s.path.name, thresholds or "–",
             _fmt(acc.level_exact_pct, 0, " %"), _fmt(acc.side_correct_pct, 0, " %"), lrj or "–",
             " → ".join(str(v) for w in ("pre", "post") for v in s.nrs.get(w, [])) or "–")
        )  # fmt: skip
    table = _table(
        ("visit", "started (UTC)", "file", "TPD thresholds (mm)", "level exact", "side", "LRJ",
         "NRS"),
        rows,
        "trend",
        {
            "visit": "the session's number in time order (the x axis of the figures)",
            "started (UTC)": "when the session started, in universal time",
            "file": "the session file",
            "TPD thresholds (mm)": "per staircase, the shortest distance told as two points "
            "(lower is sharper touch)",
            "level exact": "share of localization answers naming the needled level",
            "side": "share of localization answers naming the needled side",
            "LRJ": "per block, the share of left/right pictures judged correctly and the median "
            "reaction time of correct answers",
            "NRS": "pain 0–10, before → after treatment",
        },
    )  # fmt: skip
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>needlelab trend {html.escape(patient_id)}</title><style>{CSS}</style></head>"
        f"<body><h1>Trend: {html.escape(patient_id)}</h1><p>{len(files)} sessions (visits) in "
        f"{html.escape(str(folder))}; in each figure, pre (before treatment, circles) sits "
        "just left of its visit and post (after, squares) just right.</p>"
        f"{_trend_figure(all_scores)}{_localization_trend(all_scores)}{table}</body></html>"
    )
    out = Path(out_dir) if out_dir is not None else folder
    return write_private(out / f"{patient_id}.trend.html", page)
