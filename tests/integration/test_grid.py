"""The EDF/BDF grid keeps the signal and its timing, judged against the session file.

Sessions are written by the real `SessionWriter` from devices whose crystals drift (so the
grid falls between samples, at every fraction, and slips whole samples over the session);
the exports are read with pyedflib (EDFlib) and compared with the stored samples at their
clock-model times, read with open_session: band power by band up to 0.45 x the rate
(broadband noise, and EMG from the EMG simulator's signal model with stimulation artefacts),
and where a noise stream's samples sit in the export at the start, middle and end.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyedflib
import pytest
from scipy.signal import welch

from needlelab.config import EmgSimulatorConfig
from needlelab.events import StimSettings
from needlelab.profiles import load_emg_profile
from needlelab.record import export, open_session
from needlelab.sim.artefacts import add_block_artefacts
from needlelab.sim.emg_sensor import SimulatedEmgSensor
from tests.integration import export_sessions as sessions

RATE = 2000.0
BANDS_HZ = [(1, 20), (20, 50), (50, 100), (100, 250), (250, 450), (450, 700), (700, 900)]


def simulated_emg(seed: int = 3) -> sessions.Signal:
    """EMG as the simulated BLE sensor makes it (`SimulatedEmgSensor._signal`: band-limited
    noise with activation bursts), with its stimulation artefacts (2 Hz, 12 mA), quantised to
    the reference profile's 0.5 µV steps as its frames carry it."""
    profile = load_emg_profile("needlelab-emg-ref")
    sensor = SimulatedEmgSensor(profile, EmgSimulatorConfig(seed=seed), "grid-test", "emg")
    spf = profile.frame.samples_per_frame
    history = [(0, StimSettings(frequency_hz=2, pulse_width_us=250, intensity_ma=12,
                                output_on=True))]  # fmt: skip
    period_ns = 1e9 / RATE

    def make(first: int, n: int) -> npt.NDArray[np.float32]:
        sensor.frames_made = first // spf  # the burst schedule follows the sample index
        signal = sensor._signal(n)
        add_block_artefacts(signal, history, 1, first * period_ns, period_ns)
        return (np.round(signal / profile.frame.scale_uv) * profile.frame.scale_uv).astype(
            np.float32
        )

    return make


def stored(path: Path, name: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], int]:
    """Sample times (session ns), values, and the session's wall-clock anchor."""
    with open_session(path) as s:
        t_ns, values = s.stream(name)
        return t_ns, np.asarray(values, dtype=np.float64), int(s.meta["anchor_wall_ns"])


def edf_signals(path: Path) -> tuple[list[npt.NDArray[np.float64]], int]:
    """Every ordinary signal in physical units as EDFlib reads it, and the file's start (ns)."""
    reader = pyedflib.EdfReader(str(path))
    try:
        signals = [reader.readSignal(k) for k in range(reader.signals_in_file)]
        start = dt.datetime(reader.startdate_year, reader.startdate_month, reader.startdate_day,
                            reader.starttime_hour, reader.starttime_minute,
                            reader.starttime_second, tzinfo=dt.UTC)  # fmt: skip
        start_ns = int(start.timestamp()) * 10**9 + reader.starttime_subsecond * 100
    finally:
        reader.close()
    return signals, start_ns


def band_powers(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    f, p = welch(x, fs=RATE, nperseg=4096)
    return np.array([p[(f >= lo) & (f < hi)].sum() for lo, hi in BANDS_HZ])


@pytest.fixture(scope="module")
def spectral(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("grid")
    spec = sessions.emg_spec("emg.emg", ["EMG noise 1", "EMG sim 2"])
    noise = sessions.noise(1, seed=5, sigma=40)
    emg = simulated_emg()

    def both(first: int, n: int) -> npt.NDArray[np.float32]:
        return np.hstack([noise(first, n), emg(first, n)[:, :1]])

    # 350 ppm fast: the grid passes through every fraction of a sample, 7 whole samples slip
    plan = sessions.Plan(regular=[sessions.Regular(spec, 10.0, both, drift_ppm=350)])
    return sessions.write(folder, plan)


@pytest.mark.parametrize("fmt", ["edf", "bdf"])
@pytest.mark.parametrize(("channel", "what"), [(0, "broadband noise"), (1, "simulated EMG")])
def test_band_power_is_kept_to_045_of_the_rate(
    spectral: Path, tmp_path: Path, fmt: str, channel: int, what: str
) -> None:
    t_ns, values, wall = stored(spectral, "emg.emg")
    signals, start_ns = edf_signals(export(spectral, fmt, tmp_path / f"g.{fmt}"))
    exported = signals[channel]
    # The span the samples cover, in the export's own time (0: its first sample).
    first = int(np.ceil(((wall + t_ns[0]) - start_ns) * RATE / 1e9)) + 50
    last = int(np.floor(((wall + t_ns[-1]) - start_ns) * RATE / 1e9)) - 50
    ratio = band_powers(exported[first:last]) / band_powers(values[50:-50, channel])
    assert np.all((ratio >= 0.98) & (ratio <= 1.02)), (
        what,
        dict(zip(BANDS_HZ, ratio, strict=True)),
    )


def _lag_s(grid: npt.NDArray[np.float64], times_s: npt.NDArray[np.float64],
           values: npt.NDArray[np.float64]) -> float:  # fmt: skip
    """Where stored samples (at `times_s` on the export's time) sit in the exported `grid`:
    the lag of the cross-correlation peak of the samples placed at their nearest grid points,
    refined by a parabola; positive if the export has them later than the clock model."""
    placed = np.zeros(len(grid))
    at = np.rint(times_s * RATE).astype(np.int64)
    inside = (at >= 0) & (at < len(grid))
    placed[at[inside]] = values[inside]
    lags = np.arange(-20, 21)
    core = slice(20, len(grid) - 20)
    corr = np.array([np.dot(placed[core], np.roll(grid, -lag)[core]) for lag in lags])
    k = int(np.argmax(corr))
    assert 0 < k < len(lags) - 1, "no correlation peak within 10 ms"
    a, b, c = corr[k - 1 : k + 2]
    return float(lags[k] + 0.5 * (a - c) / (a - 2 * b + c)) / RATE


def test_sample_times_stay_within_1_ms_of_the_clock_model(tmp_path: Path) -> None:
    """Six minutes from a crystal 400 ppm fast (144 ms of drift by the end): at the start,
    middle and end, the stored samples sit where the clock model puts them, within 1 ms."""
    spec = sessions.emg_spec("emg.emg", ["EMG 1"])
    minutes = 6.0
    plan = sessions.Plan(regular=[sessions.Regular(spec, minutes * 60, sessions.noise(1, seed=8),
                                                   drift_ppm=400, block=200)])  # fmt: skip
    path = sessions.write(tmp_path, plan)
    t_ns, values, wall = stored(path, "emg.emg")
    (grid,), start_ns = edf_signals(export(path, "edf", tmp_path / "t.edf"))
    times_s = ((wall + t_ns) - start_ns) / 1e9  # clock-model times on the export's time
    # Placing the samples at the nominal rate would be 144 ms off by the end: the test sees it.
    assert times_s[-1] - times_s[0] - (len(times_s) - 1) / RATE < -0.1
    for at_s in (5.0, minutes * 30, minutes * 60 - 5):
        lo, hi = round((at_s - 1) * RATE), round((at_s + 1) * RATE)
        pick = (times_s >= (lo + 25) / RATE) & (times_s < (hi - 25) / RATE)
        lag = _lag_s(grid[lo:hi], times_s[pick] - lo / RATE, values[pick, 0])
        assert abs(lag) <= 1e-3, (at_s, lag)
