"""Sample-time accuracy: needlelab's stream clock against pyxdf's dejitter and raw arrival times.

Load: a simulated BLE EMG stream, reference profile by default (2 kHz, 10 samples a frame, each
frame with a 16-bit sequence counter and a 32-bit device µs clock). The device crystal is off
by --drift-ppm and its counter and clock start at arbitrary values; frames leave at the first
BLE connection event (--interval-ms) after their last sample is taken, each connection event's
burst is delayed by a one-sided latency drawn uniformly from 0..--jitter-ms, delivery stays in
order, and a fraction --loss of frames is lost. Ground truth is the true host time of every
sample (the line t0 + g * period the device really sampled on). Under the jitter is a constant
transport floor (--floor-ms, 5 ms by default, never 0: with no floor a lower-envelope fit gets
absolute time for free while any least-squares fit carries the mean latency as bias). So every
figure is given twice: absolute error (bias included) and the residual, the p95 of the error
with each stream's own median signed error taken out; the bias (median signed error) apart.

On identical arrivals, three ways of timing the received samples:

- needlelab: `needlelab.record.reader.sample_times` on the raw blocks a recording stores (first
  sample index from the unwrapped counter, as `EmgBleSensor` assigns it; host arrival time). This
  is the `StreamClock` fit (slope from every arrival, offset on their floor), segmented at gaps.
- pyxdf: `pyxdf.pyxdf._jitter_removal`, called as `load_xdf(..., dejitter_timestamps=True)`
  calls it, on per-sample LSL-style time stamps (see `lsl_stamps`): a least-squares line of time
  stamp against sample *position*, segmented at breaks.
- pyxdf + counter: the same dejitter given counter positions (a filler sample at every lost
  position, `with_counter_positions`), as a bridge reading the counter does.
- online RLS: a liblsl-style recursive least-squares line of arrival against counter position
  (forgetting half-time 90 s, liblsl's default), each frame stamped as it comes (`rls_times`).
- raw: the same LSL-style stamps as they are (the rule of needlelab's live provisional times).

The peers are independent of the code under test: their stamps and positions come from this
script's own code (`lsl_stamps`, `peer_positions`), never from a needlelab function. The counter
positions are the wrapping u16 counter unwrapped here; the Myo's are numbered here by its
characteristics' turns (each notification is the next one of its characteristic's turn: exact
for fewer than four lost in a row), as a bridge that knows which characteristic notified would
number them; a stream with no count at all has only its order of arrival.

Then the Myo (200 Hz, 2 samples a notification, no counter, no device clock). Its four data
characteristics take turns, and `EmgBleSensor` numbers the notifications with that turn and the
arrival pattern (`needlelab.devices.frame_index.FrameIndexer`, used here as the driver uses it),
so a loss of fewer than four in a row is seen exactly. pyxdf and raw stamps get the sample
position, as an LSL bridge without that numbering would give it. Last, a stream with no count at
all (one characteristic, like the MyoWare shield), where a single lost notification is invisible
to every method.

Then the issue's case (needlelab issue 13): the Myo-like stream paused 8 times for 40-90 ms (the
peripheral, the radio or a busy host stalls; what was due in a pause arrives after it, in a rush,
nothing lost), on a quiet link (2 ms jitter, the Myo's 7.5 ms connection interval:
--myo-interval-ms), alone and with 2 % real loss. needlelab's numbering (FrameIndexer, fed in
batches as the driver feeds it) must take no pause for a loss (false gaps: places where it
numbered more frames missing than were) and miss no loss, and the times must stay within
p95 <= 2 ms, max <= 10 ms of the truth. pyxdf's dejitter gets the same arrivals.

Every figure is pooled over --streams independent streams (seeds --seed, --seed + 1, ...): the
frames' phase against the connection events, which sets the floor a host-side fit can find,
differs from stream to stream and single streams scatter widely. The device µs clock is
simulated but changes nothing: it ticks on the same crystal as the samples, so it cannot tell
drift against the host, and `sample_times` does not use it.

Goal (issue 16): in every scenario needlelab's residual p95 <= the best peer's (rows P3,
P3.2-P3.5); with the floor calibrated (the profile's latency_ns; each peer's stamps less the
same floor) absolute p95 <= 1 ms (P3b). The issue-13 scenarios (6-9) run with the floor
calibrated, their absolute goals unchanged. The same streams are then run in
connection-event bursts (--interval-ms), which real links have and which set a floor of their
own, and the Myo and count-less scenarios run in bursts too.

    python benchmarks/sync.py [--seconds 60] [--streams 10] [--seed 1] [--jitter-ms 30]
                              [--drift-ppm 100] [--loss 0.02] [--interval-ms 15]
                              [--myo-interval-ms 7.5]
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pyxdf.pyxdf import StreamData, _jitter_removal  # type: ignore[import-untyped]

from _results import Row, write_json
from needlelab.clock import StreamClock
from needlelab.devices.emg_codecs import unwrap
from needlelab.devices.frame_index import FrameIndexer
from needlelab.record.reader import Block, sample_times
from needlelab.streams import StreamKind, StreamSpec

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Scenario:
    """What the device sends."""

    name: str
    rate_hz: float
    per_frame: int  # samples per notification
    counter: bool  # frames carry a 16-bit sequence counter and a 32-bit µs device clock
    turns: int = 1  # data characteristics taking turns (the Myo's 4); 1: none
    pauses: int = 0  # times the stream stalls for PAUSE_MS, then sends what it buffered
    quiet: bool = False  # on the quiet link (QUIET_JITTER_MS), not --jitter-ms


REFERENCE = Scenario("reference EMG (2 kHz, 10/frame, counter + device clock)", 2000.0, 10, True)
MYO = Scenario(
    "Myo (200 Hz, 2/notification, 4 characteristics in turn, no counter)", 200.0, 2, False, 4
)
UNCOUNTED = Scenario(
    "no count at all (200 Hz, 2/notification, one characteristic)", 200.0, 2, False
)
MYO_PAUSED = Scenario("Myo paused 8 x 40-90 ms (sent late)", 200.0, 2, False, 4, 8, True)
MYO_QUIET = Scenario("Myo, not paused", 200.0, 2, False, 4, 0, True)
UNCOUNTED_PAUSED = Scenario(
    "no count at all, paused 8 x 40-90 ms (sent late)", 200.0, 2, False, 1, 8, True
)
PAUSE_MS = (40.0, 90.0)
DRAIN_NS = 300_000  # after a pause, the buffered notifications come 0.3 ms apart
QUIET_JITTER_MS = 2.0  # the link of the run: right to 0.24 ms p95 without pauses


@dataclass(frozen=True)
class Arrivals:
    """The received frames as a driver sees them, and the truth about their samples."""

    scenario: Scenario
    first_index: I64  # per received frame: the index the driver gives its first sample
    t_host_ns: I64  # per received frame: host arrival time (session ns)
    device_counter: I64 | None  # per received frame, unwrapped (None without a counter)
    device_t_us: I64 | None  # per received frame, unwrapped device clock
    true_ns: F64  # per received sample: the host time it was really taken at
    frames_sent: int
    true_frame: I64  # per received frame: the frame number the device gave it
    peer_first_index: I64  # per received frame: its first sample's position for the peers


def simulate(
    sc: Scenario,
    seconds: float,
    seed: int,
    jitter_ms: float,
    drift_ppm: float,
    loss: float,
    interval_ms: float,
    floor_ms: float = 0.0,
) -> Arrivals:
    """One stream's arrivals: connection-interval bursts, a latency floor (the transport's
    constant part) plus one-sided jitter, loss, in order."""
    rng = np.random.default_rng(seed)
    spf = sc.per_frame
    n_frames = int(seconds * sc.rate_hz / spf)
    # Positive drift = the crystal runs fast: more samples per host second, a shorter period.
    period_ns = 1e9 / sc.rate_hz / (1 + drift_ppm * 1e-6)
    t0_ns = rng.uniform(0.5e9, 2.0e9)  # host time of the device's sample 0
    j = np.arange(n_frames, dtype=np.int64)
    ready_ns = t0_ns + (j * spf + spf - 1) * period_ns  # a frame is ready with its last sample
    # BLE sends at connection events: the first one at or after the frame is ready. All frames
    # of one event share one burst delay (host stack, scheduling), drawn once per event.
    # The wait for the next event is what limits every host-side fit: it depends on the frames'
    # phase against the events, which slides at the drift rate (0.1 ms/s at 100 ppm). With the
    # interval a multiple of the frame period (15 ms = 3 x 5 ms) the lowest wait is a sawtooth
    # that repeats only every frame period / drift: 50 s for 5 ms frames at 100 ppm.
    # --interval-ms 0 turns events off: every frame then gets its own delay.
    ci_ns = interval_ms * 1e6
    if ci_ns > 0:
        phase_ns = rng.uniform(0, ci_ns)
        event = np.ceil((ready_ns - phase_ns) / ci_ns).astype(np.int64)
        sent_ns = phase_ns + event * ci_ns
    else:
        event, sent_ns = j, ready_ns
    _, which = np.unique(event, return_inverse=True)
    burst_delay_ns = rng.uniform(0, jitter_ms * 1e6, int(which.max()) + 1)[which]
    arrival_ns = sent_ns + floor_ms * 1e6 + burst_delay_ns
    keep = rng.random(n_frames) >= loss
    keep[0] = True  # the stream starts with a received frame (no effect on the figures)
    j, arrival_ns = j[keep], arrival_ns[keep]
    arrival_ns = np.maximum.accumulate(arrival_ns)  # a link delivers in order
    # A pause: nothing arrives in it; what was due comes after it, DRAIN_NS apart.
    starts = np.sort(rng.uniform(5e9, seconds * 1e9 - 5e9, sc.pauses))
    for start, length in zip(starts, rng.uniform(*PAUSE_MS, sc.pauses) * 1e6, strict=True):
        held = np.flatnonzero((arrival_ns >= t0_ns + start) & (arrival_ns < t0_ns + start + length))
        arrival_ns[held] = t0_ns + start + length + np.arange(len(held)) * DRAIN_NS
        arrival_ns = np.maximum.accumulate(arrival_ns)
    t_host = np.round(arrival_ns).astype(np.int64)

    counter = device_t = raw_counter = None
    turn = j % sc.turns if sc.turns > 1 else None  # which characteristic notified
    if sc.counter:
        # The driver's view: wrapping u16 counter and u32 µs clock from arbitrary starts,
        # unwrapped exactly as EmgBleSensor does; the first received frame is index 0.
        c0, d0 = int(rng.integers(0, 1 << 16)), int(rng.integers(0, 1 << 32))
        raw_counter = (c0 + j) % (1 << 16)
        counter = unwrap(raw_counter, 16, None)
        raw_t_us = (d0 + np.round(j * spf * 1e6 / sc.rate_hz).astype(np.int64)) % (1 << 32)
        device_t = unwrap(raw_t_us, 32, None)
        first_index = (counter - counter[0]) * spf
    else:
        # No counter: the driver numbers notifications by the characteristics' turns, if any,
        # and the arrival pattern. Without turns a short loss is invisible, and every later
        # sample is numbered too early.
        indexer = FrameIndexer(spf * 1e9 / sc.rate_hz, sc.turns, turns=sc.turns > 1)
        first_index = number_as_the_driver_does(indexer, turn, t_host) * spf
    global_sample = (j[:, None] * spf + np.arange(spf)[None, :]).ravel()
    return Arrivals(
        sc,
        first_index,
        t_host,
        counter,
        device_t,
        np.asarray(t0_ns + global_sample * period_ns, dtype=np.float64),
        n_frames,
        j,
        peer_positions(raw_counter, turn, sc.turns, len(j)) * spf,
    )


def peer_positions(raw_counter: I64 | None, turn: I64 | None, turns: int, n: int) -> I64:
    """Each received frame's number for the peers, from what a bridge sees, by this script's
    own code: the wrapping u16 counter unwrapped (every step forward, as a link delivers in
    order); without one, the characteristic that notified (each notification is the next of its
    turn); without either, the order of arrival. The first received frame is 0."""
    if raw_counter is not None:
        steps = np.diff(raw_counter) % (1 << 16)
    elif turn is not None:
        steps = (np.diff(turn) - 1) % turns + 1
    else:
        steps = np.ones(n - 1, dtype=np.int64)
    return np.concatenate(([0], np.cumsum(steps))).astype(np.int64)


def number_as_the_driver_does(indexer: FrameIndexer, turn: I64 | None, t_host: I64) -> I64:
    """Frame numbers as `EmgBleSensor` gets them: batches of a few notifications pushed as they
    arrive (frames under suspicion come back later), the rest flushed at the end."""
    parts = []
    for k in range(0, len(t_host), 5):
        parts.append(
            indexer.push(None if turn is None else turn[k : k + 5], t_host[k : k + 5]).frame
        )
    parts.append(indexer.flush().frame)
    return np.concatenate(parts)


def gap_errors(a: Arrivals) -> tuple[int, int]:
    """(false gaps, missed losses): places where the numbering jumped by more frames than the
    device's did (a loss that was not), or by fewer (a loss not seen)."""
    numbered = np.diff(a.first_index // a.scenario.per_frame)
    true = np.diff(a.true_frame)
    return int(np.count_nonzero(numbered > true)), int(np.count_nonzero(numbered < true))


def _spec(sc: Scenario, latency_ns: int = 0) -> StreamSpec:
    return StreamSpec(
        "emg.emg", "EMG", ("ch1",), ("uV",), StreamKind.REGULAR, sc.rate_hz,
        latency_ns=latency_ns,
    )  # fmt: skip


def needlelab_times(a: Arrivals, latency_ns: int = 0) -> tuple[I64, dict[str, float]]:
    """Sample times as a reader of the recording computes them, and the clock model's summary."""
    spf = a.scenario.per_frame
    values = np.zeros((spf, 1), np.float32)  # sample_times never looks at values
    blocks = [
        Block(
            first_index=int(a.first_index[k]),
            n=spf,
            t_host_ns=int(a.t_host_ns[k]),
            device_counter=None if a.device_counter is None else int(a.device_counter[k]),
            device_t_us=None if a.device_t_us is None else int(a.device_t_us[k]),
            t_ns=None,
            values=values,
        )
        for k in range(len(a.t_host_ns))
    ]
    times = sample_times(_spec(a.scenario, latency_ns), blocks)
    # The same fit again, only for its drift/uncertainty figures (the writer stores these).
    clock = StreamClock(a.scenario.rate_hz)
    for k in range(len(a.t_host_ns)):
        clock.add(int(a.first_index[k]) + spf - 1, int(a.t_host_ns[k]))
    clock.fit()
    return times, clock.summary()


def lsl_stamps(a: Arrivals) -> F64:
    """Per-sample stamps (ns) as an LSL outlet gives them, one `push_chunk` per notification.

    liblsl's push_chunk with one time stamp (the arrival, `local_clock()` when the callback runs)
    takes it as the time of the chunk's *last* sample and back-dates the earlier ones at the
    nominal rate (the rest go out as DEDUCED_TIMESTAMP, which load_xdf fills in as previous +
    1/srate). That is what a BLE→LSL bridge without its own clock model records (the same rule
    as needlelab's provisional live times, computed here, not by needlelab).
    """
    spf = a.scenario.per_frame
    back = (np.arange(spf) - (spf - 1)) * (1e9 / a.scenario.rate_hz)
    stamps: F64 = (a.t_host_ns.astype(np.float64)[:, None] + back[None, :]).ravel()
    return stamps


def pyxdf_times(a: Arrivals, stamps_ns: F64) -> F64:
    """pyxdf's dejittered times (ns) of LSL-style stamps, via load_xdf's own code path."""
    header: dict[str, Any] = {
        "info": {
            "channel_count": ["1"],
            "nominal_srate": [repr(a.scenario.rate_hz)],
            "channel_format": ["float32"],
        }
    }
    stream = StreamData(header)
    stream.time_stamps = stamps_ns.astype(np.float64) / 1e9  # LSL time stamps are seconds
    # load_xdf's defaults: jitter_break_threshold_seconds=1, jitter_break_threshold_samples=500.
    out = _jitter_removal({1: stream}, 1, 500, stream_headers={1: header})
    result: F64 = np.asarray(out[1].time_stamps, dtype=np.float64) * 1e9
    return result


def with_counter_positions(a: Arrivals, stamps_ns: F64) -> tuple[F64, I64]:
    """The stamps as an LSL bridge that reads the counter would record them: a filler
    sample at every lost position (its stamp deduced as the previous + 1/srate, as load_xdf fills
    DEDUCED_TIMESTAMP), so a sample's position in the stream is its counter position. Returns
    (every position's stamp in s, where the received samples are)."""
    spf = a.scenario.per_frame
    index = (a.peer_first_index[:, None] + np.arange(spf)[None, :]).ravel()
    index = index - index[0]
    full = np.full(int(index[-1]) + 1, np.nan)
    full[index] = stamps_ns.astype(np.float64) / 1e9
    known = np.flatnonzero(~np.isnan(full))
    last = known[np.searchsorted(known, np.arange(len(full)), side="right") - 1]
    full = full[last] + (np.arange(len(full)) - last) / a.scenario.rate_hz
    return full, index


def pyxdf_counter_times(a: Arrivals, stamps_ns: F64) -> F64:
    """pyxdf's dejitter given the counter's positions (`with_counter_positions`)."""
    full, index = with_counter_positions(a, stamps_ns)
    header: dict[str, Any] = {
        "info": {
            "channel_count": ["1"],
            "nominal_srate": [repr(a.scenario.rate_hz)],
            "channel_format": ["float32"],
        }
    }
    stream = StreamData(header)
    stream.time_stamps = full
    out = _jitter_removal({1: stream}, 1, 500, stream_headers={1: header})
    result: F64 = np.asarray(out[1].time_stamps, dtype=np.float64)[index] * 1e9
    return result


RLS_HALFTIME_S = 90.0  # liblsl's default smoothing half-time (lsl_api.cfg: SmoothingHalftime)


def rls_times(a: Arrivals) -> F64:
    """An online recursive-least-squares line of arrival against counter position, liblsl-style
    (its postprocessor's `proc_dejitter`: forgetting factor 2^(-1 / (srate x half-time)), here
    per frame, so per frame's worth of samples). Each sample gets the line as fitted when its
    frame came: what a live inlet stamps, no look-ahead."""
    spf = a.scenario.per_frame
    x_last = (a.peer_first_index - a.peer_first_index[0] + spf - 1).astype(np.float64)
    y = (a.t_host_ns - a.t_host_ns[0]).astype(np.float64) / 1e9
    lam = 2.0 ** (-spf / (a.scenario.rate_hz * RLS_HALFTIME_S))
    w = np.array([y[0], 1.0 / a.scenario.rate_hz])  # intercept (s), slope (s/sample)
    p = np.diag([1e-2, 1e-8])  # prior covariance: 0.1 s, 1e-4 s/sample
    period = 1.0 / a.scenario.rate_hz
    times = np.empty((len(y), spf))
    offsets = np.arange(spf) - (spf - 1)
    for k in range(len(y)):
        u = np.array([1.0, x_last[k]])
        pu = p @ u
        gain = pu / (lam + u @ pu)
        w = w + gain * (y[k] - u @ w)
        p = (p - np.outer(gain, pu)) / lam
        slope = w[1] if w[1] > 0 else period
        times[k] = w[0] + slope * (x_last[k] + offsets)
    result: F64 = times.ravel() * 1e9 + float(a.t_host_ns[0])
    return result


@dataclass(frozen=True)
class Errors:
    """Absolute sample-time error figures in ms, the median signed error (bias), and the
    residual: the p95 of the error with each stream's own median signed error taken out (what a
    calibrated latency floor leaves; a constant offset per stream is bias, not jitter)."""

    p50: float
    p95: float
    p99: float
    max: float
    bias: float
    residual_p95: float = math.nan

    @classmethod
    def of(cls, signed_ms: F64, per_stream: list[F64] | None = None) -> Errors:
        err = np.abs(signed_ms)
        p50, p95, p99 = np.percentile(err, [50, 95, 99])
        residual = math.nan
        if per_stream:
            centred = np.concatenate([s - np.median(s) for s in per_stream])
            residual = float(np.percentile(np.abs(centred), 95))
        return cls(
            float(p50), float(p95), float(p99), float(err.max()), float(np.median(signed_ms)),
            residual,
        )  # fmt: skip


OURS, PEER, RAW = (
    "needlelab StreamClock (reader)",
    "pyxdf dejitter (LSL stamps)",
    "raw arrival (LSL stamps)",
)
PEER_COUNTER = "pyxdf dejitter, counter positions"
PEER_RLS = "online RLS, counter (liblsl-style)"
PEERS = (PEER, PEER_COUNTER, PEER_RLS)  # the best of these is the goal's peer


@dataclass(frozen=True)
class Result:
    """One scenario over several independent streams: pooled errors and per-stream figures."""

    errors: dict[str, Errors]
    ours_p95_per_stream: list[float]
    drift_ppm_per_stream: list[float]
    received: int
    sent: int
    fit_s: float
    false_gaps: int = 0
    missed_losses: int = 0
    uncertainty_ms_per_stream: list[float] | None = None


def run(
    sc: Scenario,
    args: argparse.Namespace,
    loss: float,
    interval_ms: float,
    calibrated: bool = False,
) -> Result:
    """Errors per method, pooled over `args.streams` streams (seeds seed, seed+1, ...).

    Each stream has its own device start, connection-event phase and jitter draws. The phase of
    the device's frames against the connection events decides how close to the true times any
    host-side fit can get (see `simulate`), so one stream is a lottery; a pool is a figure.
    `calibrated`: the latency floor is known (needlelab: the profile's latency_ns; every peer:
    its stamps less the floor, as liblsl's push with a time stamp less a known delay).
    """
    floor_ns = round(args.floor_ms * 1e6) if calibrated else 0
    signed: dict[str, list[F64]] = {OURS: [], PEER: [], PEER_COUNTER: [], PEER_RLS: [], RAW: []}
    p95s, drifts, received, sent, fit_s = [], [], 0, 0, 0.0
    false_gaps = missed = 0
    uncertainties = []
    jitter_ms = QUIET_JITTER_MS if sc.quiet else args.jitter_ms
    for r in range(args.streams):
        a = simulate(
            sc, args.seconds, args.seed + r, jitter_ms, args.drift_ppm, loss, interval_ms,
            args.floor_ms,
        )  # fmt: skip
        wrong = gap_errors(a)
        false_gaps, missed = false_gaps + wrong[0], missed + wrong[1]
        start = time.perf_counter()
        ours, summary = needlelab_times(a, floor_ns)
        fit_s += time.perf_counter() - start
        stamps = lsl_stamps(a) - floor_ns
        for name, estimate in (
            (OURS, ours), (PEER, pyxdf_times(a, stamps)),
            (PEER_COUNTER, pyxdf_counter_times(a, stamps)), (PEER_RLS, rls_times(a) - floor_ns),
            (RAW, stamps),
        ):  # fmt: skip
            signed[name].append((estimate.astype(np.float64) - a.true_ns) / 1e6)
        p95s.append(float(np.percentile(np.abs(signed[OURS][-1]), 95)))
        drifts.append(summary["drift_ppm"])
        uncertainties.append(summary["uncertainty_ns"] / 1e6)
        received += len(a.t_host_ns)
        sent += a.frames_sent
    errors = {name: Errors.of(np.concatenate(parts), parts) for name, parts in signed.items()}
    return Result(errors, p95s, drifts, received, sent, fit_s, false_gaps, missed, uncertainties)


def print_table(title: str, res: Result) -> None:
    print(title)
    print(
        f"  {'method':<34} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'bias ms':>8} {'resid p95':>9} {'resid / needlelab':>17}"
    )
    base = res.errors[OURS].residual_p95
    for name, e in res.errors.items():
        ratio = e.residual_p95 / base if base > 0 else math.inf
        print(
            f"  {name:<34} {e.p50:>8.3f} {e.p95:>8.3f} {e.p99:>8.3f} {e.max:>8.3f} "
            f"{e.bias:>8.3f} {e.residual_p95:>9.3f} {ratio:>16.2f}x"
        )
    print(
        f"  frames received {res.received} of {res.sent}; needlelab per stream: p95 "
        f"{min(res.ours_p95_per_stream):.3f}..{max(res.ours_p95_per_stream):.3f} ms, fitted "
        f"drift {min(res.drift_ppm_per_stream):+.1f}..{max(res.drift_ppm_per_stream):+.1f} ppm"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds per stream")
    parser.add_argument("--streams", type=int, default=10, help="independent streams pooled")
    parser.add_argument("--seed", type=int, default=1, help="seed of the first stream")
    parser.add_argument("--jitter-ms", type=float, default=30.0, help="one-sided burst latency")
    parser.add_argument("--drift-ppm", type=float, default=100.0, help="device crystal error")
    parser.add_argument("--loss", type=float, default=0.02, help="fraction of frames lost")
    parser.add_argument(
        "--interval-ms",
        type=float,
        default=15.0,
        help="BLE connection interval of the burst scenarios (0: none)",
    )
    parser.add_argument(
        "--myo-interval-ms",
        type=float,
        default=7.5,
        help="connection interval of the issue's Myo scenarios (6-9)",
    )
    parser.add_argument(
        "--floor-ms", type=float, default=5.0,
        help="constant transport latency under the jitter (uncalibrated: every method's bias)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    ci = args.interval_ms
    print(
        f"sync: {args.streams} streams x {args.seconds:g} s, latency uniform "
        f"0..{args.jitter_ms:g} ms, drift {args.drift_ppm:+g} ppm, {args.loss:.1%} frames lost, "
        f"seeds {args.seed}..{args.seed + args.streams - 1}"
    )
    print("absolute sample-time error vs the true host time of every received sample, pooled")
    print()
    rows: list[Row] = []

    def goal_row(rid: str, label: str, res: Result) -> None:
        """The issue's goal for a scenario: needlelab's residual <= the best peer's."""
        ours = res.errors[OURS]
        best = min(PEERS, key=lambda name: res.errors[name].residual_p95)
        theirs = res.errors[best]
        ok = ours.residual_p95 <= theirs.residual_p95
        print(
            f"  goal residual p95 <= best peer's ({best}: {theirs.residual_p95:.3f} ms): "
            f"{'met' if ok else 'NOT met'} (needlelab {ours.residual_p95:.3f} ms; bias "
            f"{ours.bias:+.3f} vs {theirs.bias:+.3f} ms on a {args.floor_ms:g} ms floor)"
        )
        rows.append(Row(
            rid, f"sync residual p95 (per-stream offset out), {label}", ours.residual_p95, "ms",
            "<= best peer's", ok, f"best of pyxdf, pyxdf+counter, online RLS: {best}",
            theirs.residual_p95,
            theirs.residual_p95 / ours.residual_p95 if ours.residual_p95 else None, "lower",
        ))  # fmt: skip

    res = run(REFERENCE, args, args.loss, 0.0)
    print_table(f"1. {REFERENCE.name}; latency per frame, no connection events", res)
    ours = res.errors[OURS]
    print(
        f"  needlelab absolute p95 {ours.p95:.3f} ms, bias {ours.bias:+.3f} ms on an uncalibrated "
        f"{args.floor_ms:g} ms floor; fits took {res.fit_s / args.streams:.2f} s per stream"
    )
    goal_row("P3", f"ref 2 kHz, jitter 0-{args.jitter_ms:g} ms, {args.drift_ppm:g} ppm, "
             f"{args.loss:.0%} loss", res)  # fmt: skip
    rows.append(Row(
        "P3a", f"sync bias (median signed error), same, uncalibrated {args.floor_ms:g} ms floor",
        ours.bias, "ms", "reported apart", None, "pyxdf+counter (mean latency in its line)",
        res.errors[PEER_COUNTER].bias, None, "lower",
    ))  # fmt: skip
    cal = run(REFERENCE, args, args.loss, 0.0, calibrated=True)
    ours_cal, peer_cal = cal.errors[OURS], cal.errors[PEER_COUNTER]
    print(
        f"  the same with the {args.floor_ms:g} ms floor calibrated: needlelab absolute p95 "
        f"{ours_cal.p95:.3f} ms (bias {ours_cal.bias:+.3f}), pyxdf+counter {peer_cal.p95:.3f} ms "
        f"(bias {peer_cal.bias:+.3f}); goal <= 1 ms: {'met' if ours_cal.p95 <= 1 else 'NOT met'}"
    )
    rows.append(Row(
        "P3b", "sync absolute error p95, same, latency floor calibrated", ours_cal.p95, "ms",
        "<= 1 ms", ours_cal.p95 <= 1.0, "pyxdf+counter, floor calibrated alike", peer_cal.p95,
        peer_cal.p95 / ours_cal.p95 if ours_cal.p95 else None, "lower",
    ))  # fmt: skip
    print()
    bursts = f"in {ci:g} ms connection-event bursts"
    for number, (sc, loss) in enumerate(
        ((REFERENCE, args.loss), (MYO, args.loss), (MYO, 0.0), (UNCOUNTED, args.loss)), start=2
    ):
        res = run(sc, args, loss, ci)
        print_table(f"{number}. {sc.name}, {bursts}, {loss:.1%} lost", res)
        short = sc.name.split(" (")[0]
        goal_row(f"P3.{number}", f"{short}, {ci:g} ms bursts, {loss:.0%} loss", res)
        print()
    myo_ci = args.myo_interval_ms
    print(
        f"The issue's case: {args.streams} streams x {args.seconds:g} s, {QUIET_JITTER_MS:g} ms "
        f"jitter, {myo_ci:g} ms connection events (the Myo's), paused streams 8 times for "
        "40-90 ms"
    )
    print()
    for number, (sc, loss) in enumerate(
        (
            (MYO_PAUSED, 0.0),
            (MYO_QUIET, args.loss),
            (MYO_PAUSED, args.loss),
            (UNCOUNTED_PAUSED, 0.0),
        ),
        start=6,
    ):
        res = run(sc, args, loss, myo_ci, calibrated=True)
        print_table(f"{number}. {sc.name}, {loss:.1%} lost, {args.floor_ms:g} ms floor calibrated",
                    res)  # fmt: skip
        ours = res.errors[OURS]
        ok = res.false_gaps == 0 and ours.p95 <= 2.0 and ours.max <= 10.0
        print(
            f"  false gaps {res.false_gaps}, losses missed {res.missed_losses}; stored "
            f"uncertainty {min(res.uncertainty_ms_per_stream or [0]):.3f}.."
            f"{max(res.uncertainty_ms_per_stream or [0]):.3f} ms; goal 0 false gaps, needlelab "
            f"p95 <= 2 ms, max <= 10 ms: {'met' if ok else 'NOT met'}"
        )
        print()
    print(
        f"With bursts, frames wait for the next connection event; where {ci:g} ms is a multiple "
        "of the frame period that wait's floor is a sawtooth that slides at the drift rate "
        "(see `simulate`), a floor no host-side fit gets under within one tooth."
    )
    print(
        "bias = median signed error (positive: stamped late). With no count at all a lost "
        "notification is invisible to every method: later samples are numbered too early."
    )
    write_json(args.json, rows, seconds=args.seconds, streams=args.streams,
               floor_ms=args.floor_ms)  # fmt: skip


if __name__ == "__main__":
    main()
