"""The session report: one self-contained HTML file a clinician can read and a researcher can
trust, every number from `clinic.scoring` on the session file, figures as embedded PNG.

`write_report(session_path, out_dir)` writes `<session>.report.html`; `write_trend_report(patient,
folder, out_dir)` writes the trend over a patient's sessions. Both files are created owner-only.
Needs matplotlib (the `report` extra).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from needlelab.clinic.scoring import SessionScores, score_session
from needlelab.clinic.tpd import TpdSettings
from needlelab.private import write_private
from needlelab.record.verify import device_facts, format_facts

REPORT_EXTRA_HINT = "the report needs matplotlib: pip install 'needlelab[report]'"

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.1em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.muted { color: #666; } .bad { color: #b71c1c; font-weight: bold; }
img { max-width: 100%; }
"""


def _matplotlib() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(REPORT_EXTRA_HINT) from None
    return plt


def _png(fig: Any) -> str:
    """A figure as an <img> with the PNG inline."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _matplotlib().close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def _fmt(value: Any, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return '<span class="muted">–</span>'
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{html.escape(str(value))}{unit}"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], section: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{cell if isinstance(cell, str) else _fmt(cell)}</td>" for cell in row)
        + "</tr>"
        for row in rows
    )
    data = f' data-section="{section}"' if section else ""
    return f"<table{data}><tr>{head}</tr>{body}</table>"


def _timeline(scores: SessionScores) -> str:
    if not scores.phases:
        return '<p class="muted">No phases were recorded.</p>'
    plt = _matplotlib()
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(scores.phases) + 0.8))
    for k, (name, start, end) in enumerate(scores.phases):
        stop = end if end is not None else scores.duration_s
        ax.barh(k, stop - start, left=start, color="#4f83cc")
        ax.text(start, k, f" {name}", va="center", ha="left", fontsize=8, color="white")
    ax.set_yticks([])
    ax.invert_yaxis()
    ax.set_xlabel("session time (s)")
    ax.set_xlim(0, max(scores.duration_s, 1))
    return _png(fig)


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
    rows = [
        (t.name, len(t.trials), len(t.reversals_mm), _fmt(t.threshold_mm, 1, " mm"),
         _fmt(None if t.false_alarm_rate is None else 100 * t.false_alarm_rate, 0, " %"))
        for t in scores.tpd
    ]  # fmt: skip
    change = _table(
        ("site, orientation", "post − pre threshold"),
        [(k, _fmt(v, 1, " mm")) for k, v in scores.tpd_change.items()],
        "tpd-change",
    )
    plt = _matplotlib()
    n = len(scores.tpd)
    cols = min(n, 2)
    fig, axes = plt.subplots(
        (n + cols - 1) // cols, cols, figsize=(10, 2.6 * ((n + cols - 1) // cols)), squeeze=False
    )
    for ax, track in zip(axes.ravel(), scores.tpd, strict=False):
        two = [t for t in track.trials if t.points == 2]
        catch = [t for t in track.trials if t.points == 1]
        ax.plot([t.trial for t in two], [t.distance_mm for t in two], "-o", ms=3, color="#4f83cc")
        wrong = [t for t in two if not t.correct]
        ax.plot([t.trial for t in wrong], [t.distance_mm for t in wrong], "x", color="#b71c1c")
        ax.plot(
            [t.trial for t in track.trials if t.reversal],
            [t.distance_mm for t in track.trials if t.reversal],
            "o", mfc="none", ms=8, color="#ef6c00",
        )  # fmt: skip
        ax.plot([t.trial for t in catch], [t.distance_mm for t in catch], "s", ms=4, color="#777")
        if track.threshold_mm is not None:
            ax.axhline(track.threshold_mm, color="#2e7d32", ls="--", lw=1)
        ax.set_title(track.name, fontsize=9)
        ax.set_xlabel("trial", fontsize=8)
        ax.set_ylabel("mm", fontsize=8)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.tight_layout()
    return (
        f"<p>{html.escape(method)}</p>"
        + _table(("staircase", "trials", "reversals", "threshold", "false alarms"), rows, "tpd")
        + change
        + _png(fig)
        + '<p class="muted">Blue: two-point trials (red × answered wrong); orange rings: '
        "reversals; grey squares: catch trials; green: the threshold.</p>"
    )


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
    )  # fmt: skip
    words = ", ".join(f"{w} ({n})" for w, n in sorted(loc.descriptors.items(), key=lambda x: -x[1]))
    plt = _matplotlib()
    used = [
        k for k in range(len(loc.levels))
        if any(loc.confusion[k]) or any(row[k] for row in loc.confusion)
    ]  # fmt: skip
    lo, hi = (min(used), max(used)) if used else (0, len(loc.levels) - 1)
    keep = list(range(max(0, lo - 1), min(len(loc.levels), hi + 2)))
    matrix = [[loc.confusion[i][j] for j in keep] for i in keep]
    labels = [loc.levels[k] for k in keep]
    fig, ax = plt.subplots(figsize=(0.55 * len(keep) + 2, 0.55 * len(keep) + 1.5))
    ax.imshow(matrix, cmap="Blues")
    top = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            if count:
                colour = "white" if count > top / 2 else "black"
                ax.text(j, i, str(count), ha="center", va="center", fontsize=9, color=colour)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("reported level")
    ax.set_ylabel("needled level")
    return (
        table
        + f"<p>Descriptors: {html.escape(words) or '–'}</p>"
        + "<p>Confusion matrix (needled level × reported level), standing answers after "
        "corrections:</p>" + _png(fig)
    )


def _lrj(scores: SessionScores) -> str:
    if not scores.lrj:
        return '<p class="muted">No left/right judgement trials were recorded.</p>'
    rows = [
        (b.block or "–", str(b.n), _fmt(b.accuracy_pct, 0, " %"), _fmt(b.median_rt_ms, 0, " ms"),
         _fmt(b.bias, 2))
        for b in scores.lrj
    ]  # fmt: skip
    return _table(
        ("block", "trials", "accuracy", "median RT (correct)", "bias (R − true R)"), rows, "lrj"
    )


def _ratings(scores: SessionScores) -> str:
    rows: list[Sequence[Any]] = [
        (
            "NRS pain (0–10)",
            *(", ".join(map(str, scores.nrs.get(w, []))) or "–" for w in ("pre", "post")),
        )
    ]
    for movement, by in scores.rom.items():
        rows.append((f"ROM {movement}", *(_fmt(by.get(w), 0, "°") for w in ("pre", "post"))))
    return _table(("measure", "pre", "post"), rows, "ratings")


def _dose(scores: SessionScores) -> str:
    """Per channel and frequency: time on, time-weighted mean and highest intensity (the exact
    time at every intensity is in `scoring.score_session(...).dose`)."""
    if not scores.dose:
        return '<p class="muted">The stimulator output was never on.</p>'
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
    return _table(
        ("channel", "frequency", "time with output on", "mean intensity", "highest"), rows, "dose"
    )


def _emg(scores: SessionScores) -> str:
    if not scores.emg_rms:
        return '<p class="muted">No e-stim switches with EMG around them.</p>'
    rows = [
        (f"{r['t_s']:.1f} s", r["switch"], r["stimulator"], r["stream"],
         _fmt(r["rms_before"], 1, f" {r['unit']}"), _fmt(r["rms_after"], 1, f" {r['unit']}"))
        for r in scores.emg_rms
    ]  # fmt: skip
    return _table(
        ("time", "e-stim", "stimulator", "EMG", "RMS 1 s before", "RMS 1 s after"), rows, "emg"
    ) + (
        '<p class="muted">RMS over all channels; the second after an "on" includes the '
        "stimulation artefacts.</p>"
    )


QUALITY_COLUMNS = (
    "stream", "samples", "gaps", "time without data", "coverage", "lost (counted)",
    "lost (inferred)", "gaps, loss unknown", "loss", "clock uncertainty",
)  # fmt: skip


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
        _table(("device", "malformed", "duplicates", "resyncs", "as of"), devices, "device-quality")
        + '<p class="muted">Malformed: messages the decoder could not read. Duplicates: messages '
        "repeating the one before them (same sequence counter), dropped; only devices whose "
        "frames carry a counter can tell. Resyncs: times the decoder lost the framing and had "
        "to find it again (each run of malformed input counts once).</p>"
        if devices
        else '<p class="muted">No device recorded data-quality counts in this file.</p>'
    )
    return (
        _table(QUALITY_COLUMNS, rows, "quality")
        + '<p class="muted">A gap is time without data; what it cost is counted where the '
        "device numbers its samples, inferred by the driver where it can only be judged from "
        "arrival times (and flagged), and unknown where nobody can tell (a device without a "
        "counter across a lost link). Loss: counted and inferred samples over what the device "
        "made.</p>" + f"<p>Reconnects: {html.escape(reconnects)}</p>" + counts + _facts(scores)
    )


def _facts(scores: SessionScores) -> str:
    """A line per device of what it said about itself (`device.info`): address, firmware..."""
    facts = device_facts(scores.events)
    return "".join(
        f'<p class="device-facts">{html.escape(name)}: {html.escape(format_facts(f))}</p>'
        for name, f in facts.items()
    )


def render_report(scores: SessionScores) -> str:
    """The report of one session, as HTML."""
    protocol = next((e for e in scores.events if getattr(e, "kind", "") == "protocol"), None)
    template = getattr(protocol, "template", None) or {}
    settings = TpdSettings.model_validate(template.get("tpd", {}))
    summary = _table(
        ("patient", "started (UTC)", "duration", "protocol", "file"),
        [(scores.patient_id, scores.started_utc, _fmt(scores.duration_s, 0, " s"),
          scores.protocol or "–", scores.path.name)],
        "summary",
    )  # fmt: skip
    sections = [
        ("Session", summary),
        ("Phases", _timeline(scores)),
        ("Stimulation dose", _dose(scores)),
        ("Two-point discrimination", _tpd(scores, settings)),
        ("Localization", _localization(scores)),
        ("Left/right judgement", _lrj(scores)),
        ("Pain and movement", _ratings(scores)),
        ("EMG around e-stim", _emg(scores)),
        ("Data quality", _quality(scores)),
    ]
    body = "".join(f"<h2>{html.escape(title)}</h2>{content}" for title, content in sections)
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


def write_trend_report(
    patient_id: str, folder: str | Path, out_dir: str | Path | None = None
) -> Path:
    """Write the trend across a patient's sessions in `folder`: TPD thresholds, localization
    accuracy, LRJ and NRS, one row per session; its path."""
    folder = Path(folder)
    files = sorted(folder.glob(f"{patient_id}_*.sqlite"))
    if not files:
        raise FileNotFoundError(f"no sessions of patient {patient_id} in {folder}")
    all_scores = [score_session(f) for f in files]
    rows = []
    for s in all_scores:
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
            (s.started_utc, s.path.name, thresholds or "–", _fmt(acc.level_exact_pct, 0, " %"),
             _fmt(acc.side_correct_pct, 0, " %"), lrj or "–",
             " → ".join(str(v) for w in ("pre", "post") for v in s.nrs.get(w, [])) or "–")
        )  # fmt: skip
    plt = _matplotlib()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.2))
    x = list(range(1, len(all_scores) + 1))
    for when, style in (("pre", "o-"), ("post", "s--")):
        ys = []
        for s in all_scores:
            values = [t.threshold_mm for t in s.tpd if t.when == when and t.threshold_mm]
            ys.append(sum(values) / len(values) if values else float("nan"))
        a1.plot(x, ys, style, label=f"TPD {when} (mean of sites)")
    a1.set_xlabel("session")
    a1.set_ylabel("mm")
    a1.legend(fontsize=8)
    a2.plot(x, [s.localization.accuracy.level_exact_pct or float("nan") for s in all_scores], "o-",
            label="level exact %")  # fmt: skip
    a2.plot(x, [s.localization.accuracy.side_correct_pct or float("nan") for s in all_scores],
            "s--", label="side correct %")  # fmt: skip
    a2.set_xlabel("session")
    a2.legend(fontsize=8)
    table = _table(
        ("started (UTC)", "file", "TPD thresholds (mm)", "level exact", "side", "LRJ", "NRS"),
        rows,
        "trend",
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>needlelab trend {html.escape(patient_id)}</title><style>{CSS}</style></head>"
        f"<body><h1>Trend: {html.escape(patient_id)}</h1><p>{len(files)} sessions in "
        f"{html.escape(str(folder))}</p>{table}{_png(fig)}</body></html>"
    )
    out = Path(out_dir) if out_dir is not None else folder
    return write_private(out / f"{patient_id}.trend.html", page)
