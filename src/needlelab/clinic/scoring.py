"""Session scores, computed from the session file alone, so a researcher can recompute them.

- Localization: % level exact, mean |level error| in segments, side accuracy, median latency, a
  confusion matrix (true level x reported level), descriptors tallied; over the responses that
  stand after corrections.
- TPD: per staircase the trials, reversals, threshold (mean of the last reversals, as the
  recorded protocol says) and catch-trial false-alarm rate; per site and orientation the change
  post - pre.
- LRJ: per block the accuracy, median RT of correct answers and left/right bias (share of "R"
  answers minus share of right-side stimuli); the change post - pre.
- Ratings: NRS and ROM by moment.
- Stimulation dose: per stimulator channel, time with the output on at each (intensity,
  frequency), and in total, counted within the needling phase(s) (the template's `needling`
  phases, between their `phase` start and end events); stimulation outside them is counted
  apart (`dose_outside`) so the report can flag it. A recording without any phase counts its
  whole length (`dose_over_recording`).
- EMG: RMS in the second before and after each e-stim switch on and off within needling.
- Data quality: per stream samples lost, gaps, reconnects and clock-model uncertainty; per device
  the malformed messages, duplicates and resyncs its decoder counted (`device.quality`).
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from needlelab.clinic.localization import Accuracy, effective_responses, score, summarize
from needlelab.clinic.tpd import TpdSettings
from needlelab.events import (
    CorrectionEvent,
    DeviceStateEvent,
    Event,
    LrjTrialEvent,
    NeedleSiteEvent,
    NrsEvent,
    PhaseEvent,
    ProtocolEvent,
    ResponseEvent,
    RomEvent,
    StimSettingsEvent,
    TpdTrialEvent,
)
from needlelab.record import UnknownEvent, open_session
from needlelab.record.chunked import StreamSource
from needlelab.streams import StreamKind

EMG_WINDOW_S = 1.0  # RMS window each side of an e-stim switch
WHOLE_RECORDING = "the whole recording"  # the dose's window when no phase was recorded


@dataclass
class LocalizationScore:
    """Localization accuracy and its confusion matrix."""

    accuracy: Accuracy
    levels: list[str]  # rows: true level; columns: reported level
    confusion: list[list[int]]
    descriptors: dict[str, int]
    responses: list[ResponseEvent]


@dataclass
class TpdTrackScore:
    """One staircase."""

    name: str
    site: str
    orientation: str
    when: str
    trials: list[TpdTrialEvent]
    reversals_mm: list[float]
    threshold_mm: float | None
    false_alarm_rate: float | None


@dataclass
class LrjBlockScore:
    """One LRJ block."""

    block: str
    n: int
    accuracy_pct: float | None
    median_rt_ms: float | None
    bias: float | None  # share of "R" answers minus share of right-side stimuli
    trials: list[LrjTrialEvent]


@dataclass
class StreamQuality:
    """What a stream lost and how well its clock is known.

    A gap has two numbers: its time without data (`no_data_s`, all gaps together; `coverage`
    the share of the recording the stream delivered) and the samples it lost: `lost` counted
    by a device counter, `lost_inferred` inferred by the driver, and `gaps_loss_unknown` gaps
    whose loss nobody can count. `lost_pct` is counted and inferred losses over what the
    device made (recorded + lost)."""

    name: str
    samples: int
    lost: int
    lost_pct: float
    gaps: int
    uncertainty_ms: float | None
    lost_inferred: int = 0
    gaps_loss_unknown: int = 0
    no_data_s: float = 0.0
    coverage: float | None = None


@dataclass(frozen=True)
class DeviceQuality:
    """What a device's decoder counted (cumulative, as of `as_of_t_s`): messages it could not
    decode, repeats it dropped, and times it lost the framing and found it again."""

    device: str
    malformed: int
    duplicates: int
    resyncs: int
    as_of_t_s: float


@dataclass
class SessionScores:
    """Everything the report shows, from one session file."""

    path: Path
    patient_id: str
    started_utc: str
    duration_s: float
    protocol: str | None
    phases: list[tuple[str, float, float | None]]  # name, start s, end s
    localization: LocalizationScore
    tpd: list[TpdTrackScore]
    tpd_change: dict[str, float]  # "site orientation": post - pre threshold
    lrj: list[LrjBlockScore]
    nrs: dict[str, list[int]]
    rom: dict[str, dict[str, float]]  # movement: {when: degrees}
    dose: list[Dose]  # within the needling phase(s)
    stim_total_s: dict[str, float]  # per stimulator channel: seconds on within needling
    emg_rms: list[dict[str, Any]]  # switches within needling
    quality: list[StreamQuality]
    reconnects: dict[str, int]
    events: list[Event] = field(repr=False, default_factory=list)
    device_quality: list[DeviceQuality] = field(default_factory=list)
    needling: list[tuple[str, float, float]] = field(default_factory=list)  # name, start, end s
    dose_outside: list[Dose] = field(default_factory=list)  # stimulation outside needling
    stim_spans: list[StimSpan] = field(default_factory=list)  # every stretch with output on
    emg_switches_outside: int = 0  # e-stim switches outside needling (not in `emg_rms`)
    phase_kinds: dict[str, str] = field(default_factory=dict)  # phase name: template kind
    dose_over_recording: bool = False  # no phase recorded: `needling` is the whole recording

    @property
    def stim_outside(self) -> list[StimSpan]:
        """The stretches of stimulation outside every needling phase (clipped to it)."""
        return [p for span in self.stim_spans for p in span.outside(self.needling)]


def _localization(
    events: list[Event], levels: list[str], regions: dict[str, list[str]]
) -> LocalizationScore:
    sites = {e.id: e for e in events if isinstance(e, NeedleSiteEvent)}
    # Scored again from the site each answer was given at: the stored scores are a live
    # convenience, the file's sites and answers are the facts.
    standing = []
    for r in effective_responses(
        e for e in events if isinstance(e, ResponseEvent | CorrectionEvent)
    ):
        site = sites.get(r.site_id) if r.site_id is not None else None
        region_levels = regions.get(site.region, levels) if site else levels
        error, right = score(region_levels, site, r.level, r.side)
        standing.append(r.model_copy(update={"level_error": error, "side_correct": right}))
    index = {level: k for k, level in enumerate(levels)}
    confusion = [[0] * len(levels) for _ in levels]
    for r in standing:
        site = sites.get(r.site_id) if r.site_id is not None else None
        if site is None or r.level is None or site.level not in index or r.level not in index:
            continue
        confusion[index[site.level]][index[r.level]] += 1
    words = Counter(d for r in standing for d in r.descriptors)
    return LocalizationScore(summarize(standing), levels, confusion, dict(words), standing)


def _tpd(events: list[Event], settings: TpdSettings) -> list[TpdTrackScore]:
    tracks: dict[str, list[TpdTrialEvent]] = {}
    for e in events:
        if isinstance(e, TpdTrialEvent):
            tracks.setdefault(e.staircase, []).append(e)
    scores = []
    k = settings.threshold_reversals
    for name, trials in tracks.items():
        reversals = [t.distance_mm for t in trials if t.reversal]
        catch = [t for t in trials if t.points == 1]
        first = trials[0]
        scores.append(
            TpdTrackScore(
                name=name,
                site=first.site,
                orientation=first.orientation,
                when=first.when,
                trials=trials,
                reversals_mm=reversals,
                threshold_mm=sum(reversals[-k:]) / k if len(reversals) >= k else None,
                false_alarm_rate=(
                    sum(t.answer == "two" for t in catch) / len(catch) if catch else None
                ),
            )
        )
    return scores


def _tpd_change(tracks: list[TpdTrackScore]) -> dict[str, float]:
    by = {(t.site, t.orientation, t.when): t.threshold_mm for t in tracks}
    change = {}
    for (site, orientation, when), pre in by.items():
        post = by.get((site, orientation, "post"))
        if when == "pre" and pre is not None and post is not None:
            change[f"{site} {orientation}"] = post - pre
    return change


def _lrj(events: list[Event]) -> list[LrjBlockScore]:
    blocks: dict[str, list[LrjTrialEvent]] = {}
    for e in events:
        if isinstance(e, LrjTrialEvent):
            blocks.setdefault(e.block, []).append(e)
    scores = []
    for block, trials in blocks.items():
        answered = [t for t in trials if t.answer is not None]
        rts = [t.rt_ms for t in trials if t.correct and t.rt_ms is not None]
        bias = None
        if answered:
            said_r = sum(t.answer == "R" for t in answered) / len(answered)
            was_r = sum(t.true_side == "R" for t in answered) / len(answered)
            bias = said_r - was_r
        scores.append(
            LrjBlockScore(
                block=block,
                n=len(trials),
                accuracy_pct=100 * sum(t.correct for t in trials) / len(trials),
                median_rt_ms=statistics.median(rts) if rts else None,
                bias=bias,
                trials=trials,
            )
        )
    return scores


@dataclass(frozen=True)
class Dose:
    """Seconds one stimulator channel spent with its output on at one (intensity, frequency)."""

    channel: str  # "<device> ch<k>"
    intensity_ma: float
    frequency_hz: float
    seconds: float


@dataclass(frozen=True)
class StimSpan:
    """A stretch of time one stimulator channel's output was on at constant settings."""

    channel: str  # "<device> ch<k>"
    start_s: float
    end_s: float
    intensity_ma: float
    frequency_hz: float

    def clipped(self, start_s: float, end_s: float) -> StimSpan | None:
        """The part of this stretch between `start_s` and `end_s`, or None."""
        lo, hi = max(self.start_s, start_s), min(self.end_s, end_s)
        if hi <= lo:
            return None
        return StimSpan(self.channel, lo, hi, self.intensity_ma, self.frequency_hz)

    def outside(self, windows: list[tuple[str, float, float]]) -> list[StimSpan]:
        """The parts of this stretch outside every (name, start, end) window."""
        parts = [self]
        for _name, lo, hi in windows:
            rest = []
            for p in parts:
                rest += [q for q in (p.clipped(p.start_s, lo), p.clipped(hi, p.end_s)) if q]
            parts = rest
        return parts


def _stim_spans(events: list[Event], end_ns: int) -> list[StimSpan]:
    """Every stretch with the output on (and an intensity above 0), per stimulator channel."""
    current: dict[str, tuple[int, StimSettingsEvent]] = {}
    spans: list[StimSpan] = []

    def close(channel: str, t_ns: int) -> None:
        if channel in current:
            start, e = current.pop(channel)
            if e.settings.output_on and e.settings.intensity_ma > 0 and t_ns > start:
                spans.append(
                    StimSpan(channel, start / 1e9, t_ns / 1e9, e.settings.intensity_ma,
                             e.settings.frequency_hz)
                )  # fmt: skip

    for e in events:
        if isinstance(e, StimSettingsEvent):
            channel = f"{e.source} ch{e.settings.channel}"
            close(channel, e.t_ns)
            current[channel] = (e.t_ns, e)
    for channel in list(current):
        close(channel, end_ns)
    return spans


def _dose(spans: list[StimSpan]) -> list[Dose]:
    """Time with the output on at each (intensity, frequency), per stimulator channel."""
    at: dict[tuple[str, float, float], float] = {}
    for p in spans:
        key = (p.channel, p.intensity_ma, p.frequency_hz)
        at[key] = at.get(key, 0.0) + (p.end_s - p.start_s)
    return [Dose(*key, seconds) for key, seconds in sorted(at.items())]


def _within(spans: list[StimSpan], windows: list[tuple[str, float, float]]) -> list[StimSpan]:
    """The parts of the stretches inside the windows."""
    return [q for p in spans for _n, lo, hi in windows if (q := p.clipped(lo, hi)) is not None]


def _needling_windows(
    phases: list[tuple[str, float, float | None]], kinds: dict[str, str], end_s: float
) -> list[tuple[str, float, float]]:
    """The needling phases as (name, start, end) seconds; one still open ends with the file.
    Which phases are needling comes from the recorded template; a file without one counts a
    phase whose name says needling."""
    return [
        (name, start, end if end is not None else end_s)
        for name, start, end in phases
        if kinds.get(name, "needling" if "needling" in name.lower() else "") == "needling"
    ]


def _emg_rms(
    s: Any, events: list[Event], windows: list[tuple[str, float, float]]
) -> tuple[list[dict[str, Any]], int]:
    """EMG RMS (all channels pooled) in the second before and after each output switch within
    the windows (needling); and how many switches fell outside them."""
    switches = []
    previous: dict[tuple[str, int], bool] = {}
    for e in events:
        if isinstance(e, StimSettingsEvent):
            key = (e.source, e.settings.channel)
            on = e.settings.output_on and e.settings.intensity_ma > 0
            if key in previous and previous[key] != on:
                switches.append((e.t_ns, "on" if on else "off", f"{e.source} ch{key[1]}"))
            previous[key] = on
    inside = [w for w in switches if any(lo <= w[0] / 1e9 <= hi for _n, lo, hi in windows)]
    outside = len(switches) - len(inside)
    switches = inside
    out = []
    window = int(EMG_WINDOW_S * 1e9)
    emg = [n for n, spec in s.streams.items() if spec.type == "EMG"]
    for name in emg:
        # Block by block: a 2 h EMG stream is gigabytes; only the sums around switches are kept.
        sums = np.zeros((len(switches), 2))  # squares before, after
        counts = np.zeros((len(switches), 2), dtype=np.int64)
        starts = np.array([t for t, _w, _c in switches], dtype=np.int64)
        for t_ns, values in StreamSource(s.path, name, opened=s).chunks():
            if not len(t_ns):
                continue
            near = np.flatnonzero((starts + window > t_ns.min()) & (starts - window <= t_ns.max()))
            squares = np.square(values.astype(np.float64))
            for j in near:
                at = int(starts[j])
                for side, mask in enumerate(
                    ((t_ns >= at - window) & (t_ns < at), (t_ns >= at) & (t_ns < at + window))
                ):
                    sums[j, side] += squares[mask].sum()
                    counts[j, side] += int(mask.sum()) * values.shape[1]
        for k, (t, what, channel) in enumerate(switches):
            if counts[k].all():
                rms = np.sqrt(sums[k] / counts[k])
                out.append(
                    {
                        "stream": name,
                        "t_s": t / 1e9,
                        "switch": what,
                        "stimulator": channel,
                        "rms_before": float(rms[0]),
                        "rms_after": float(rms[1]),
                        "unit": s.streams[name].units[0],
                    }
                )
    return out, outside


def score_session(path: str | Path) -> SessionScores:
    """Every score of one session file."""
    from needlelab.config import LocalizationConfig
    from needlelab.record import verify_report

    path = Path(path)
    report = verify_report(path)
    with open_session(path) as s:
        # Kinds a newer needlelab wrote are skipped: they cannot change these scores.
        typed: list[Event] = [e for e in s.events() if not isinstance(e, UnknownEvent)]
        protocol = next((e for e in typed if isinstance(e, ProtocolEvent)), None)
        settings = (
            TpdSettings.model_validate(protocol.template["tpd"]) if protocol else TpdSettings()
        )
        localization = LocalizationConfig.model_validate(s.config.get("localization", {}))
        end_ns = int((report["closed_t_s"] or report["last_sample_t_s"] or 0) * 1e9)
        if typed:
            end_ns = max(end_ns, max(e.t_ns for e in typed))
        phases: list[tuple[str, float, float | None]] = []
        for e in typed:
            if isinstance(e, PhaseEvent) and e.boundary == "start":
                phases.append((e.name, e.t_ns / 1e9, None))
            elif isinstance(e, PhaseEvent) and e.boundary == "end":
                for k in range(len(phases) - 1, -1, -1):
                    if phases[k][0] == e.name and phases[k][2] is None:
                        phases[k] = (e.name, phases[k][1], e.t_ns / 1e9)
                        break
        sites = [e for e in typed if isinstance(e, NeedleSiteEvent)]
        region = sites[-1].region if sites else localization.region
        levels = localization.regions.get(region, localization.levels)
        tpd = _tpd(typed, settings)
        nrs: dict[str, list[int]] = {}
        rom: dict[str, dict[str, float]] = {}
        for e in typed:
            if isinstance(e, NrsEvent):
                nrs.setdefault(e.when or "-", []).append(e.value)
            elif isinstance(e, RomEvent):
                rom.setdefault(e.movement, {})[e.when or "-"] = e.degrees
        kinds = {
            str(ph.get("name")): str(ph.get("kind"))
            for ph in (protocol.template.get("phases", []) if protocol else [])
            if isinstance(ph, dict)
        }
        needling = _needling_windows(phases, kinds, end_ns / 1e9)
        # A recording without any protocol phase (a plain `needlelab record`) has no needling
        # phase to count within: its dose is the whole recording's.
        whole = not phases
        if whole:
            needling = [(WHOLE_RECORDING, 0.0, end_ns / 1e9)]
        spans = _stim_spans(typed, end_ns)
        dose = _dose(_within(spans, needling))
        total: dict[str, float] = {}
        for d in dose:
            total[d.channel] = total.get(d.channel, 0.0) + d.seconds
        reconnects = Counter(
            e.source for e in typed if isinstance(e, DeviceStateEvent) and e.state == "reconnecting"
        )
        quality = []
        for st in report["streams"]:
            spec = s.streams[st["name"]]
            lost = int(st.get("samples_lost_known", 0))
            inferred = int(st.get("samples_lost_inferred", 0))
            samples = int(st["samples"])
            model = s.clock_models.get(st["name"], {})
            uncertainty = model.get("uncertainty_ns")
            quality.append(
                StreamQuality(
                    name=st["name"],
                    samples=samples,
                    lost=lost,
                    lost_pct=(
                        100 * (lost + inferred) / (samples + lost + inferred)
                        if samples + lost + inferred
                        else 0.0
                    ),
                    gaps=int(st.get("gaps", 0)),
                    lost_inferred=inferred,
                    gaps_loss_unknown=int(st.get("gaps_loss_unknown", 0)),
                    no_data_s=float(st.get("time_without_data_s", 0.0)),
                    coverage=st.get("coverage"),
                    uncertainty_ms=(
                        uncertainty / 1e6
                        if uncertainty is not None and spec.kind is StreamKind.REGULAR
                        else None
                    ),
                )
            )
        emg_rms, emg_outside = _emg_rms(s, typed, needling)
        return SessionScores(
            path=path,
            patient_id=report["patient_id"],
            started_utc=report["started_utc"],
            duration_s=end_ns / 1e9,
            protocol=protocol.name if protocol else None,
            phases=phases,
            localization=_localization(typed, levels, localization.regions),
            tpd=tpd,
            tpd_change=_tpd_change(tpd),
            lrj=_lrj(typed),
            nrs=nrs,
            rom=rom,
            dose=dose,
            stim_total_s=total,
            emg_rms=emg_rms,
            quality=quality,
            reconnects=dict(reconnects),
            events=typed,
            device_quality=[DeviceQuality(**q) for q in report["quality"]],
            needling=needling,
            dose_outside=_dose([p for span in spans for p in span.outside(needling)]),
            stim_spans=spans,
            emg_switches_outside=emg_outside,
            phase_kinds=kinds,
            dose_over_recording=whole,
        )
