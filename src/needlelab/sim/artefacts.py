"""Stimulation artefacts: the ground truth that lets a recording's sync be checked.

A simulated stimulator's settings history (monotonic ns, settings) defines its pulse times: while a
channel's output is on with a non-zero intensity, pulses repeat at the set frequency from the
moment the output came on or the frequency or mode last changed (an intensity change does not
reset a real unit's pulse clock). In `burst` mode each period starts a train of
`BURST_PULSES` pulses at `BURST_RATE_HZ`, the usual TENS burst.

The simulated EMG sensor adds an artefact at each pulse time, placed on its own (drifting)
sample grid with sub-sample precision: the spike is split between the two samples around the
pulse so that its centroid is the pulse time. `detect_artefacts` finds the centroids again in a
recording; comparing them with `pulse_times` measures the whole chain's timing error.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

from needlelab.events import StimSettings

SYNC_GOAL_P95_MS = 1.0
"""The sync goal: |artefact time − true pulse time| p95 at most this (ms) over a recording."""

ARTEFACT_WINDOW_MS = 2.5
"""An artefact is matched to the true pulse within this much of it (pulses closer than twice
this to another are left out: their spikes can merge). Times off by more than a pulse spacing
match other pulses than their own: only a check that cannot alias (the frames' counter) tells."""

BURST_PULSES = 7
BURST_RATE_HZ = 100.0
RECOVERY_DELAY_SAMPLES = 3  # the amplifier's recovery swing, after the spike
RECOVERY_FRACTION = -0.3


def artefact_amplitude_uv(intensity_ma: float) -> float:
    """Peak artefact in µV at an intensity: large next to EMG (tens to hundreds of µV)."""
    return 1500.0 + 250.0 * intensity_ma


def pulse_times(
    changes: Sequence[tuple[int, StimSettings]], channel: int, t0_ns: int, t1_ns: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pulse times (monotonic ns, int64) in [t0_ns, t1_ns) and their intensities (mA).

    `changes` is the unit's settings history in time order, as `SimulatedStim.changes()` gives.
    """
    times: list[np.ndarray] = []
    levels: list[np.ndarray] = []
    history = [(t, s) for t, s in changes if s.channel == channel]
    anchor: int | None = None
    for i in range(_pulse_clock_start(history, t0_ns), len(history)):
        t_change, s = history[i]
        if not _pulsing(s):
            anchor = None
            continue
        previous = history[i - 1][1]  # unused at i = 0, where anchor is still None
        if anchor is None or (previous.frequency_hz, previous.mode) != (s.frequency_hz, s.mode):
            anchor = t_change
        end = history[i + 1][0] if i + 1 < len(history) else t1_ns
        lo, hi = max(t_change, t0_ns), min(end, t1_ns)
        if hi <= lo:
            continue
        period_ns = 1e9 / s.frequency_hz
        k = np.arange(np.floor((lo - anchor) / period_ns) - 1, np.ceil((hi - anchor) / period_ns))
        starts = anchor + k * period_ns
        if s.mode == "burst":
            offsets = np.arange(BURST_PULSES) * (1e9 / BURST_RATE_HZ)
            offsets = offsets[offsets < period_ns]
            starts = (starts[:, None] + offsets[None, :]).ravel()
        t = np.round(starts).astype(np.int64)
        t = t[(t >= lo) & (t < hi)]
        times.append(t)
        levels.append(np.full(len(t), s.intensity_ma))
    if not times:
        return np.empty(0, np.int64), np.empty(0)
    return np.concatenate(times), np.concatenate(levels)


def _pulsing(settings: StimSettings) -> bool:
    return settings.output_on and settings.intensity_ma > 0


def _pulse_clock_start(history: Sequence[tuple[int, StimSettings]], t0_ns: int) -> int:
    """Where `pulse_times` starts reading one channel's history for pulses from `t0_ns` on.

    Entries that ended before `t0_ns` make no pulses there, but the pulse clock's phase comes
    from the entry where the output came on or the frequency or mode last changed: start at that
    one. A simulated sensor asks for every block, and rescanning a session-long history each
    time grew without bound.
    """
    i = bisect.bisect_right(history, t0_ns, key=lambda change: change[0]) - 1
    while i > 0:
        previous, current = history[i - 1][1], history[i][1]
        if not (_pulsing(previous) and _pulsing(current)):
            return i  # the output came on here, or is off: the clock starts afresh
        if (previous.frequency_hz, previous.mode) != (current.frequency_hz, current.mode):
            return i
        i -= 1
    return 0


def add_artefacts(
    signal_uv: np.ndarray,
    first_sample_ns: float,
    sample_period_ns: float,
    pulses_ns: np.ndarray,
    intensities_ma: np.ndarray,
) -> None:
    """Add each pulse's artefact, in place, to a block of samples × channels.

    Sample j of the block was taken at `first_sample_ns + j * sample_period_ns` (true host time).
    A pulse at fractional sample position p puts (1 - frac) of the spike on sample floor(p) and
    frac on the next, so the spike's centroid is exactly the pulse time.
    """
    n = signal_uv.shape[0]
    for t, ma in zip(pulses_ns, intensities_ma, strict=True):
        position = (t - first_sample_ns) / sample_period_ns
        for delay, fraction in ((0, 1.0), (RECOVERY_DELAY_SAMPLES, RECOVERY_FRACTION)):
            i = int(np.floor(position)) + delay
            frac = position - np.floor(position)
            amplitude = fraction * artefact_amplitude_uv(ma)
            if 0 <= i < n:
                signal_uv[i] += amplitude * (1 - frac)
            if 0 <= i + 1 < n:
                signal_uv[i + 1] += amplitude * frac


def add_block_artefacts(
    signal_uv: np.ndarray,
    history: Sequence[tuple[int, StimSettings]],
    channel: int,
    first_sample_ns: float,
    sample_period_ns: float,
) -> None:
    """Add, in place, every artefact that reaches into a block of a stream made block by block.

    That includes pulses just before the block: the second part of a split spike and the
    recovery swing `RECOVERY_DELAY_SAMPLES` later land here, so blocks add up to the whole.
    """
    reach_ns = (RECOVERY_DELAY_SAMPLES + 1) * sample_period_ns
    end_ns = first_sample_ns + signal_uv.shape[0] * sample_period_ns
    pulses, levels = pulse_times(history, channel, int(first_sample_ns - reach_ns), int(end_ns))
    add_artefacts(signal_uv, first_sample_ns, sample_period_ns, pulses, levels)


def detect_artefacts(
    values: np.ndarray, times_ns: np.ndarray, threshold_uv: float = 500.0
) -> np.ndarray:
    """Artefact times (ns) in a recorded EMG block: the centroid of each spike.

    The channels are averaged (the artefact is common to all; the EMG is not), spikes are runs of
    samples above `threshold_uv`, widened by one sample each side to take in the split part, and
    each spike's time is its amplitude-weighted mean sample time.
    """
    x = values.mean(axis=1) if values.ndim == 2 else values
    above = np.flatnonzero(x > threshold_uv)
    if not len(above):
        return np.empty(0, np.int64)
    runs = np.split(above, np.flatnonzero(np.diff(above) > 1) + 1)
    out = []
    for run in runs:
        lo, hi = max(run[0] - 1, 0), min(run[-1] + 2, len(x))
        w = np.clip(x[lo:hi], 0, None)
        if w.sum() <= 0:
            continue
        out.append(float(np.dot(w, times_ns[lo:hi].astype(np.float64)) / w.sum()))
    return np.round(np.array(out)).astype(np.int64)


def match_errors(detected_ns: np.ndarray, truth_ns: np.ndarray, window_ns: int) -> np.ndarray:
    """For each true pulse with a detection within `window_ns`, detected − true (ns)."""
    if not len(detected_ns) or not len(truth_ns):
        return np.empty(0, np.int64)
    detected_ns = np.sort(detected_ns)
    idx = np.searchsorted(detected_ns, truth_ns)
    last = len(detected_ns) - 1
    left = detected_ns[np.clip(idx - 1, 0, last)]
    right = detected_ns[np.clip(idx, 0, last)]
    nearest = np.where(np.abs(left - truth_ns) <= np.abs(right - truth_ns), left, right)
    err: np.ndarray = nearest - truth_ns
    return np.asarray(err[np.abs(err) <= window_ns], np.int64)


def artefact_sync_errors(
    truth: Sequence[tuple[int, StimSettings]],
    times: np.ndarray,
    values: np.ndarray,
    anchor: int,
    channel: int = 1,
) -> np.ndarray:
    """Detected − true artefact times (ns) in a recorded EMG stream (`times`, `values` as the
    file gives them), one per matched pulse.

    `truth` is the simulated stimulator's settings history (monotonic ns); the recording's
    `anchor` (its monotonic ns at t = 0) puts it on the session clock. Pulses closer than 5 ms
    to another are left out (their spikes can merge), as are pulses with no detection within
    half that.
    """
    if not len(times):
        return np.empty(0, np.int64)
    pulses, _ = pulse_times(truth, channel, int(times[0]) + anchor, int(times[-1]) + anchor)
    pulses = pulses - anchor
    window_ns = round(ARTEFACT_WINDOW_MS * 1e6)
    isolated = np.ones(len(pulses), bool)
    if len(pulses) > 1:
        close = np.diff(pulses) < 2 * window_ns
        isolated[1:] &= ~close
        isolated[:-1] &= ~close
    detected = detect_artefacts(np.asarray(values, np.float64), times)
    return match_errors(detected, pulses[isolated], window_ns=window_ns)


def sync_verdict(summary: dict[str, float]) -> str:
    """PASS or FAIL of an `error_summary_ms` against `SYNC_GOAL_P95_MS` (FAIL with no data)."""
    return "PASS" if summary.get("n") and summary["p95"] <= SYNC_GOAL_P95_MS else "FAIL"


def error_summary_ms(errors_ns: np.ndarray) -> dict[str, float]:
    """n, the signed median, and p50, p95, p99 and max of |error|, in ms."""
    if not len(errors_ns):
        return {"n": 0}
    a = np.abs(errors_ns) / 1e6
    return {
        "n": float(len(a)),
        "median": float(np.median(errors_ns) / 1e6),
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
    }
