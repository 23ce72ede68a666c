"""Exports read back by the tools researchers use: pyxdf, edfio, MNE and the csv module."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import edfio
import mne
import numpy as np
import pyedflib
import pytest
import pyxdf

from needlelab.config import load_config
from needlelab.record import export, load, open_session
from needlelab.resources import configs_dir
from needlelab.session import Session
from needlelab.streams import StreamKind, StreamSpec
from needlelab.testing.plugin import wait_until
from tests.integration import export_sessions as sessions


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few seconds of the demo config (in-process simulators) with clinical events."""
    tmp = tmp_path_factory.mktemp("export")
    config = load_config(configs_dir() / "demo.toml")
    session = Session(config, tmp)
    session.start()
    try:
        wait_until(lambda: session.devices["caliper"].stats.samples >= 4, timeout_s=20)
        assert session.protocol_run is not None
        session.protocol_run.advance()
        session.protocol_run.nrs(6)
        session.localization.set_site(level="L3", side="R", estim_on=True)
        session.localization.prompt()
        session.localization.answer("L4", "R", ["dull"], 'tab\there, comma, "quote"')
        time.sleep(0.5)
    finally:
        session.stop()
    return session.path


def test_xdf_reads_back_in_pyxdf_with_every_sample_time_and_event(
    recorded: Path, tmp_path: Path
) -> None:
    session = load(recorded)
    path = export(recorded, "xdf", tmp_path / "s.xdf")
    streams, header = pyxdf.load_xdf(str(path), dejitter_timestamps=False)
    assert header["info"]["version"] == ["1.0"]
    by_name = {s["info"]["name"][0]: s for s in streams}
    assert set(by_name) == {*session.streams, "needlelab events"}
    for name, stream in session.streams.items():
        xdf = by_name[name]
        assert np.array_equal(xdf["time_series"], np.asarray(stream.values, dtype=np.float64))
        assert np.allclose(xdf["time_stamps"], stream.t_ns / 1e9, atol=1e-9, rtol=0)
        labels = [c["label"][0] for c in xdf["info"]["desc"][0]["channels"][0]["channel"]]
        assert labels == list(stream.spec.channels)
    emg = by_name["emg.emg"]["info"]
    assert float(emg["nominal_srate"][0]) == 2000.0
    assert "drift_ppm" in emg["desc"][0]["clock_model"][0]
    markers = by_name["needlelab events"]
    payloads = [json.loads(m[0]) for m in markers["time_series"]]
    assert [p["id"] for p in payloads] == [e.id for e in session.events]
    assert np.allclose(markers["time_stamps"], [e.t_ns / 1e9 for e in session.events])
    answer = next(p for p in payloads if p["kind"] == "response")
    assert answer["level"] == "L4" and answer["text"] == 'tab\there, comma, "quote"'


@pytest.mark.parametrize("fmt", ["edf", "bdf"])
def test_edf_and_bdf_read_back_in_edfio_and_mne(recorded: Path, tmp_path: Path, fmt: str) -> None:
    session = load(recorded)
    path = export(recorded, fmt, tmp_path / f"s.{fmt}")
    edf = (edfio.read_bdf if fmt == "bdf" else edfio.read_edf)(path)
    emg = [s for s in edf.signals if s.label.startswith("EMG")]
    full = list(session.streams["emg.emg"].spec.channels)  # "EMG L3 multifidus R 1"...
    assert [s.transducer_type for s in emg] == full
    labels = [s.label for s in emg]  # EDF allows 16 characters
    assert labels[0] == "EMG L3R multif 1" and len(set(labels)) == len(full)
    assert emg[0].sampling_frequency == 2000 and emg[0].physical_dimension == "uV"
    resolution = (emg[0].physical_range.max - emg[0].physical_range.min) / (
        emg[0].digital_range.max - emg[0].digital_range.min
    )
    # Samples are where they were, within one sample: the original samples, placed at their
    # clock-model times, match the EDF best with no shift (searched over +-10 samples, half the
    # 10 ms stimulation period, so neighbouring artefacts cannot stand in for each other).
    stream = session.streams["emg.emg"]
    placed = np.zeros(len(emg[0].data))
    at = np.round(stream.t_ns / 1e9 * 2000).astype(int)
    inside = (at >= 0) & (at < len(placed))
    placed[at[inside]] = stream.values[inside, 0]
    edf_data = np.asarray(emg[0].data)
    match = {lag: float(np.dot(placed[20:-20], np.roll(edf_data, lag)[20:-20]))
             for lag in range(-10, 11)}  # fmt: skip
    assert abs(max(match, key=lambda lag: match[lag])) <= 1
    read = mne.io.read_raw_bdf if fmt == "bdf" else mne.io.read_raw_edf
    raw = read(path, infer_types=True, preload=True, verbose=False)
    assert set(raw.get_channel_types()) == {"emg"}
    assert np.allclose(raw.get_data()[0] * 1e6, emg[0].data, atol=resolution)
    # Every event is an annotation, at its time (EDF+ keeps onsets to 100 µs).
    texts = list(raw.annotations.description)
    onsets = raw.annotations.onset
    for event in session.events:
        k = next(i for i, t in enumerate(texts) if f'"id": {event.id},' in t)
        assert abs(onsets[k] - event.t_ns / 1e9) < 1e-3
    # Irregular streams (stimulator, caliper) are annotations too, one per sample.
    caliper = session.streams["caliper.distance"]
    assert sum(t.startswith("caliper.distance:") for t in texts) == len(caliper.t_ns)
    assert any(t.startswith("gap: emg.emg") for t in texts)  # before its first sample


def test_csv_tables_and_their_dictionary(recorded: Path, tmp_path: Path) -> None:
    session = load(recorded)
    folder = export(recorded, "csv", tmp_path / "csv")
    with open(folder / "events_response.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["level"] == "L4" and row["text"] == 'tab\there, comma, "quote"'
    assert json.loads(row["descriptors"]) == ["dull"]
    with open(folder / "signal_emg_emg.csv", newline="") as f:
        rows = list(csv.reader(f))
    emg = session.streams["emg.emg"]
    assert rows[0] == ["t_s", *emg.spec.channels] and len(rows) - 1 == len(emg.t_ns)
    values = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    assert np.array_equal(values, np.asarray(emg.values, dtype=np.float64))
    times = np.array([float(r[0]) for r in rows[1:]])
    assert np.max(np.abs(times - emg.t_ns / 1e9)) < 1e-9 + 1e-12
    with open(folder / "data_dictionary.csv", newline="") as f:
        described = {(r["file"], r["column"]) for r in csv.DictReader(f)}
    for name in os.listdir(folder):
        if name != "data_dictionary.csv":
            with open(folder / name, newline="") as f:
                header = next(csv.reader(f))
            assert {(name, c) for c in header} <= described, name


def test_fif_and_to_mne(recorded: Path, tmp_path: Path) -> None:
    session = load(recorded)
    raw = session.to_mne()
    assert raw.info["sfreq"] == 2000 and set(raw.get_channel_types()) == {"emg"}
    path = export(recorded, "fif", tmp_path / "s_raw.fif")
    back = mne.io.read_raw_fif(path, preload=True, verbose=False)
    assert np.allclose(back.get_data(), raw.get_data(), atol=1e-12)
    assert len(back.annotations) == len(raw.annotations) > len(session.events)
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_bids_layout(recorded: Path, tmp_path: Path) -> None:
    """A real recording (the demo's simulators through the real drivers) as BIDS: the validator
    finds no error; channels.tsv names the sensor's muscle from the config."""
    from tests.integration.test_bids_validator import validate

    path = export(recorded, "edf", None, (tmp_path / "bids", "P01", "1"))
    folder = tmp_path / "bids" / "sub-P01" / "ses-1" / "emg"
    assert path == folder / "sub-P01_ses-1_task-needling_emg.edf"
    assert [i for i in validate(tmp_path / "bids") if i["severity"] == "error"] == []
    sidecar = json.loads((folder / "sub-P01_ses-1_task-needling_emg.json").read_text())
    assert sidecar["SamplingFrequency"] == 2000 and sidecar["EMGChannelCount"] == 8
    assert sidecar["Manufacturer"] == "needlelab (simulated sensors)"
    with (folder / "sub-P01_ses-1_task-needling_channels.tsv").open() as f:
        channels = list(csv.DictReader(f, delimiter="\t"))
    assert len(channels) == 8 and {c["target_muscle"] for c in channels} == {"L3 multifidus R"}
    events = (folder / "sub-P01_ses-1_task-needling_events.tsv").read_text().splitlines()
    assert events[0].split("\t") == ["onset", "duration", "trial_type", "value"]


def test_a_killed_recording_exports(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        (configs_dir() / "demo.toml").read_text().replace('protocol = "low-back-l3"', "")
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "needlelab.cli", "record", str(config), "--out", str(tmp_path),
         "--no-console"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        files: list[Path] = []
        while time.monotonic() < deadline and not files:
            files = list(tmp_path.glob("DEMO01_*.sqlite"))
            time.sleep(0.2)
        time.sleep(7)  # some EMG in the file (the simulators first probe their link for 3 s)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    (path,) = files
    streams, _header = pyxdf.load_xdf(str(export(path, "xdf", tmp_path / "k.xdf")))
    emg = next(s for s in streams if s["info"]["name"][0] == "emg.emg")
    assert len(emg["time_stamps"]) > 2000
    edf = edfio.read_edf(export(path, "edf", tmp_path / "k.edf"))
    assert edf.signals[0].sampling_frequency == 2000


def test_a_missing_extra_is_one_line_naming_it(recorded: Path, tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['mne'] = None; "
        "from needlelab.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "export", str(recorded), "--to", "fif", "--out",
         str(tmp_path / "x_raw.fif")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "pip install 'needlelab[export]'" in line


def test_a_deidentified_recording_keeps_its_timing(recorded: Path, tmp_path: Path) -> None:
    """A real recording, de-identified: the same samples at the same times in pyxdf and MNE,
    the response's free text and the patient id gone, the EDF start date moved by whole days."""
    key, out = tmp_path / "key" / "k.json", tmp_path / "out"
    plain_xdf, _ = pyxdf.load_xdf(str(export(recorded, "xdf", out / "p.xdf")),
                                  dejitter_timestamps=False)  # fmt: skip
    deid_path = export(recorded, "xdf", out / "d.xdf", deidentify=key)
    deid_xdf, _ = pyxdf.load_xdf(str(deid_path), dejitter_timestamps=False)
    deid = {s["info"]["name"][0]: s for s in deid_xdf}
    for stream in plain_xdf:
        other = deid[stream["info"]["name"][0]]
        assert np.array_equal(stream["time_stamps"], other["time_stamps"])
        if stream["info"]["type"][0] != "Markers":
            assert np.array_equal(stream["time_series"], other["time_series"])
    answer = next(json.loads(m[0]) for m in deid["needlelab events"]["time_series"]
                  if json.loads(m[0])["kind"] == "response")  # fmt: skip
    assert answer["level"] == "L4" and answer["descriptors"] == ["dull"]
    assert answer["text"] == "[removed]"
    plain_edf = mne.io.read_raw_edf(export(recorded, "edf", out / "p.edf"), verbose=False)
    deid_edf_path = export(recorded, "edf", out / "d.edf", deidentify=key)
    deid_edf = mne.io.read_raw_edf(deid_edf_path, verbose=False)
    shift = json.loads(key.read_text())["patients"]["DEMO01"]["shift_days"]
    assert deid_edf.info["meas_date"] - plain_edf.info["meas_date"] == dt.timedelta(days=shift)
    # the same annotations at the same onsets (a shorter de-identified text may take fewer parts)
    deid_notes = _joined(list(deid_edf.annotations.description), list(deid_edf.annotations.onset))
    plain_notes = _joined(list(plain_edf.annotations.description),
                          list(plain_edf.annotations.onset))  # fmt: skip
    assert [o for o, _ in deid_notes] == [o for o, _ in plain_notes]
    for path in (deid_path, deid_edf_path):
        data = path.read_bytes()
        assert b"DEMO01" not in data and b"tab\there" not in data


def test_events_are_exported_in_time_order(tmp_path: Path) -> None:
    """An event stamped earlier than one recorded before it (a key press stamped when it
    happened, another program's marker) comes first in the XDF markers and in events.tsv."""
    from needlelab.config import parse_config
    from needlelab.events import MarkerEvent
    from needlelab.streams import Chunk, StreamKind, StreamSpec

    config = parse_config({"session": {"patient_id": "ORD01", "out_dir": str(tmp_path)}})
    session = Session(config)
    session.start()
    try:
        # A regular stream too: the BIDS export is EDF, which needs a signal.
        spec = StreamSpec("emg.emg", "EMG", ("EMG 1",), ("uV",), StreamKind.REGULAR, 100.0)
        session.hub.add_stream(spec)
        for k in range(5):
            block = np.zeros((10, 1), dtype=np.float32)
            session.hub.push(Chunk("emg.emg", block, session.clock.now_ns(), k * 10))
            time.sleep(0.1)
        now = session.clock.now_ns() - 500_000_000
        stamped = [now + 300_000_000, now + 100_000_000, now + 200_000_000, now + 100_000_000]
        for k, t in enumerate(stamped):
            session.hub.emit(MarkerEvent(t_ns=t, text=f"note {k}", source="clinician"))
    finally:
        session.stop()
    want = sorted((t, f"note {k}") for k, t in enumerate(stamped))  # ties: recorded order
    streams, _ = pyxdf.load_xdf(str(export(session.path, "xdf", tmp_path / "o.xdf")))
    (markers,) = [s for s in streams if s["info"]["type"] == ["Markers"]]
    notes = [
        (round(t * 1e9), json.loads(v[0])["text"])
        for t, v in zip(markers["time_stamps"], markers["time_series"], strict=True)
        if json.loads(v[0]).get("kind") == "marker"
    ]
    assert [text for _, text in notes] == [text for _, text in want]
    assert all(abs(t - w) < 1_000 for (t, _), (w, _) in zip(notes, want, strict=True))
    assert np.all(np.diff(markers["time_stamps"]) >= 0)
    export(session.path, "edf", bids=(tmp_path / "bids", "ORD01", "1"))
    (tsv,) = (tmp_path / "bids").rglob("*_events.tsv")
    with tsv.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    onsets = [float(r["onset"]) for r in rows]
    assert onsets == sorted(onsets)
    assert [json.loads(r["value"])["text"] for r in rows if r["trial_type"] == "marker"] == [
        text for _, text in want
    ]


# -- EDF+/BDF+ annotations and start, judged by pyedflib (EDFlib), MNE and edfio -----------------
def _truth_notes(path: Path) -> tuple[list[dict[str, object]], dict[str, int]]:
    """What the session file holds, read with open_session: each event as the JSON object an
    annotation must carry, and each event's session time by id."""
    with open_session(path) as s:
        events = s.events()
    objects = [{"kind": e.kind, "source": e.source, "id": e.id, **e.payload()} for e in events]
    return objects, {str(e.id): e.t_ns for e in events}


def _joined(texts: list[str], onsets: list[float]) -> list[tuple[float, str]]:
    """Annotation texts with the `[part k/n of KEY] ` parts of one text joined in order."""
    whole: list[tuple[float, str]] = []
    parts: dict[str, list[tuple[int, str]]] = {}
    first: dict[str, float] = {}
    for onset, text in zip(onsets, texts, strict=True):
        m = re.fullmatch(r"\[part (\d+)/(\d+) of ([^\]]+)\] (.*)", text, re.DOTALL)
        if m is None:
            whole.append((onset, text))
            continue
        key = m.group(3)
        parts.setdefault(key, []).append((int(m.group(1)), m.group(4)))
        first.setdefault(key, onset)
        assert int(m.group(2)) >= len(parts[key])
        assert onset == first[key]  # all parts at one onset
    for key, pieces in parts.items():
        assert sorted(k for k, _ in pieces) == list(range(1, len(pieces) + 1)), key
        whole.append((first[key], "".join(p for _, p in sorted(pieces))))
    return sorted(whole)


LONG_TEXT = "dolor irradiado — «pierna» izquierda\nsegunda línea\tcon tabulador; " * 12


@pytest.fixture(scope="module")
def annotated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session with a sub-second start, EMG, a stimulator stream, and events whose JSON is
    far longer than 512 bytes (a protocol template, a long marker with non-ASCII text)."""
    from needlelab.clinic.protocol import load_protocol
    from needlelab.events import DeviceInfoEvent, MarkerEvent, NrsEvent, ProtocolEvent

    folder = tmp_path_factory.mktemp("annotated")
    template = load_protocol("low-back-l3").model_dump(mode="json")
    events = [
        ProtocolEvent(t_ns=2_000_000, name="low-back-l3", template=template, source="session"),
        MarkerEvent(t_ns=2_000_000, text="same time", source="clinician"),
        MarkerEvent(t_ns=2_000_000, text="same time", source="clinician"),  # twice: kept twice
        MarkerEvent(t_ns=1_234_567_891, text=LONG_TEXT, source="clinician"),
        NrsEvent(t_ns=2_500_000_000, value=6, when="pre", source="patient"),
        DeviceInfoEvent(t_ns=2_600_000_000, info={"allowed_writes": ["53" * 40] * 8},
                        source="stim"),
    ]  # fmt: skip
    stim = StreamSpec("stim.ch1", "Stim", ("frequency_hz", "intensity_ma"), ("Hz", "mA"),
                      StreamKind.IRREGULAR, device="stim")  # fmt: skip
    plan = sessions.Plan(
        regular=[sessions.Regular(sessions.emg_spec("emg.emg", ["EMG 1", "EMG 2"]), 3.2,
                                  sessions.noise(2), drift_ppm=120)],
        irregular=[sessions.Irregular(stim, np.array([100_000_000, 1_500_000_123], np.int64),
                                      np.array([[2, 4.5], [2, 0.1]], np.float32))],
        events=events,
    )  # fmt: skip
    return sessions.write(folder, plan)


def _pyedflib_notes(path: Path) -> tuple[list[float], list[str], int]:
    """Annotations (onsets s, texts) as EDFlib reads them, and its start in ns since the epoch."""
    reader = pyedflib.EdfReader(str(path))
    try:
        onsets, _durations, texts = reader.readAnnotations()
        # pyedflib 0.1.42's getStartdatetime() divides EDFlib's 100 ns units by 100 (a bug,
        # fixed upstream): its fields are read instead.
        start = dt.datetime(reader.startdate_year, reader.startdate_month, reader.startdate_day,
                            reader.starttime_hour, reader.starttime_minute,
                            reader.starttime_second, tzinfo=dt.UTC)  # fmt: skip
        start_ns = int(start.timestamp()) * 10**9 + reader.starttime_subsecond * 100
    finally:
        reader.close()
    return [float(o) for o in onsets], [str(t) for t in texts], start_ns


@pytest.mark.parametrize("fmt", ["edf", "bdf"])
def test_every_annotation_whole_and_at_its_time(annotated: Path, tmp_path: Path, fmt: str) -> None:
    """Every event's whole JSON, read back by three readers and compared with the events of
    the session file; long texts come as parts of at most 512 bytes (EDFlib drops the rest of a
    longer one); the start keeps its sub-second part (EDFlib, edfio) to 100 ns."""
    path = export(annotated, fmt, tmp_path / f"a.{fmt}")
    truth, times = _truth_notes(annotated)
    with open_session(annotated) as s:
        wall = s.meta["anchor_wall_ns"]
        stim_t, stim_v = s.stream("stim.ch1")
    onsets, texts, start_ns = _pyedflib_notes(path)
    assert all(len(t.encode()) <= 512 for t in texts)
    assert any(t.startswith("[part 1/") for t in texts)  # the long ones were split
    assert abs(start_ns - wall) <= 100  # the session starts with the file: 661234567 ns
    whole = _joined(texts, onsets)
    objects = [json.loads(t) for _, t in whole if t.startswith("{")]
    assert sorted(objects, key=lambda o: o["id"]) == truth  # every event, every field, once
    for onset, text in whole:
        if text.startswith("{"):
            event_t = times[str(json.loads(text)["id"])]
            assert abs(start_ns + round(onset * 1e9) - (wall + event_t)) <= 100
    stim = [(o, t) for o, t in whole if t.startswith("stim.ch1: ")]
    assert len(stim) == len(stim_v)
    for (_, text), row in zip(stim, stim_v, strict=True):  # each value exact in its float32
        m = re.fullmatch(r"stim\.ch1: frequency_hz=(\S+) Hz, intensity_ma=(\S+) mA", text)
        assert m is not None, text
        assert np.array_equal(np.array([float(m[1]), float(m[2])], np.float32), row)
    assert [abs(start_ns + round(o * 1e9) - (wall + t)) <= 100 for (o, _), t in
            zip(stim, stim_t, strict=True)] == [True, True]  # fmt: skip
    # edfio and MNE read the same annotations at the same onsets.
    edf = (edfio.read_bdf if fmt == "bdf" else edfio.read_edf)(path)
    edf_start = dt.datetime.combine(edf.startdate, edf.starttime, dt.UTC)
    assert edf_start.timestamp() * 1e9 == pytest.approx(wall, abs=1000)  # edfio keeps µs
    edfio_whole = _joined([a.text for a in edf.annotations], [a.onset for a in edf.annotations])
    assert [t for _, t in edfio_whole] == [t for _, t in whole]
    assert np.allclose([o for o, _ in edfio_whole], [o for o, _ in whole], atol=1e-7, rtol=0)
    read = mne.io.read_raw_bdf if fmt == "bdf" else mne.io.read_raw_edf
    raw = read(path, infer_types=True, verbose=False)
    mne_whole = _joined(list(raw.annotations.description), list(raw.annotations.onset))
    assert [t for _, t in mne_whole] == [t for _, t in whole]
    # (MNE keeps onsets to the microsecond)
    assert np.allclose([o for o, _ in mne_whole], [o for o, _ in whole], atol=1e-6, rtol=0)
    # MNE keeps whole seconds of the start (its documented limit); the rest is in the TALs.
    assert raw.info["meas_date"].timestamp() == wall // 10**9


def test_a_session_with_only_annotations_exports_to_edf(tmp_path: Path) -> None:
    """No regular stream: an annotation-only EDF+ (record duration 0), read by EDFlib, edfio and
    MNE's annotation reader, every event and stimulator sample in it; and by the CLI."""
    from needlelab.events import MarkerEvent

    stim = StreamSpec("stim.ch1", "Stim", ("frequency_hz", "intensity_ma"), ("Hz", "mA"),
                      StreamKind.IRREGULAR, device="stim")  # fmt: skip
    events = [MarkerEvent(t_ns=k * 10_000_000 + 1, text=f"note {k} " + "x" * (k * 7),
                          source="clinician") for k in range(150)]  # fmt: skip
    plan = sessions.Plan(
        irregular=[sessions.Irregular(stim, np.array([5, 6_000_000_000], np.int64),
                                      np.array([[2, 4.5], [3, 5.0]], np.float32))],
        events=events,
    )  # fmt: skip
    source = sessions.write(tmp_path, plan)
    truth, times = _truth_notes(source)
    path = export(source, "edf", tmp_path / "only.edf")
    head = path.read_bytes()[:256]
    assert head[244:252].strip() == b"0"  # record duration, at its offset in the EDF header
    assert head[252:256].strip() == b"1"  # one signal: the annotations
    onsets, texts, start_ns = _pyedflib_notes(path)
    whole = _joined(texts, onsets)
    assert sorted((json.loads(t) for _, t in whole if t.startswith("{")),
                  key=lambda o: o["id"]) == truth  # fmt: skip
    assert sum(t.startswith("stim.ch1: ") for _, t in whole) == 2
    for onset, text in whole:
        if text.startswith("{"):
            t = times[str(json.loads(text)["id"])]
            assert abs(start_ns + round(onset * 1e9) - (plan.wall_ns + t)) <= 100
    edf = edfio.read_edf(path)
    assert sorted(a.text for a in edf.annotations) == sorted(texts)
    notes = mne.read_annotations(path)
    assert sorted(notes.description) == sorted(texts)
    done = subprocess.run([sys.executable, "-m", "needlelab.cli", "export", str(source), "--to",
                           "bdf", "--out", str(tmp_path / "only.bdf")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert edfio.read_bdf(tmp_path / "only.bdf").annotations == edf.annotations


def test_xdf_header_times_are_on_the_stamps_clock(annotated: Path, tmp_path: Path) -> None:
    """pyxdf reads the file's start (UTC, to the µs) and each stream's created_at on the clock
    of its stamps (session seconds), not the recording machine's uptime."""
    path = export(annotated, "xdf", tmp_path / "h.xdf")
    streams, header = pyxdf.load_xdf(str(path), dejitter_timestamps=False)
    with open_session(annotated) as s:
        wall = s.meta["anchor_wall_ns"]
        firsts = {name: int(s.stream(name)[0].min()) for name in s.streams}
        first_event = min(e.t_ns for e in s.events())
    start = dt.datetime.fromisoformat(header["info"]["datetime"][0])
    assert start.tzinfo is not None and abs(start.timestamp() * 1e9 - wall) < 1000
    for stream in streams:
        name, created = stream["info"]["name"][0], float(stream["info"]["created_at"][0])
        first = firsts.get(name, first_event)
        assert created == pytest.approx(first / 1e9, abs=1e-9)
        assert created <= float(stream["time_stamps"][0]) + 1e-9


def test_labels_are_unique_within_16_characters_site_and_side_first(tmp_path: Path) -> None:
    """Two sensors on one level (left, right), two streams whose channels are named alike, and
    a long non-EMG name: EDFlib reads 16-character labels, all different, the site and side
    right after `EMG`; MNE types the EMG channels `emg` with infer_types=True (by default it
    types every EDF channel `eeg`, as its documentation says)."""
    rate = 500.0
    specs = [
        sessions.emg_spec("emg.emg", [f"EMG L3 multifidus R {k}" for k in (1, 2)], rate),
        sessions.emg_spec("emg2.emg", [f"EMG L3 multifidus L {k}" for k in (1, 2)], rate),
        sessions.emg_spec("left.emg", ["EMG 1", "EMG 2"], rate),
        sessions.emg_spec("right.emg", ["EMG 1", "EMG 2"], rate),
        StreamSpec("amp.lsl", "EEG", ("Fp1 frontopolar left", "Fp1 frontopolar left x"),
                   ("uV", "uV"), StreamKind.REGULAR, rate, device="amp"),
    ]  # fmt: skip
    plan = sessions.Plan(regular=[sessions.Regular(s, 1.0, sessions.noise(2)) for s in specs])
    path = export(sessions.write(tmp_path, plan), "edf", tmp_path / "l.edf")
    reader = pyedflib.EdfReader(str(path))
    try:
        labels = list(reader.getSignalLabels())
    finally:
        reader.close()
    assert len(labels) == 10 and len(set(labels)) == 10
    assert all(len(label) <= 16 for label in labels)
    assert labels[:4] == ["EMG L3R multif 1", "EMG L3R multif 2", "EMG L3L multif 1",
                          "EMG L3L multif 2"]  # fmt: skip
    assert labels[4:8] == ["EMG left 1", "EMG left 2", "EMG right 1", "EMG right 2"]
    assert labels[8] != labels[9] and labels[8].startswith("Fp1 frontopolar")
    raw = mne.io.read_raw_edf(path, infer_types=True, verbose=False)
    assert raw.get_channel_types() == ["emg"] * 8 + ["eeg"] * 2
    assert len(set(raw.ch_names)) == 10
    default = mne.io.read_raw_edf(path, verbose=False)
    assert default.ch_names == labels and set(default.get_channel_types()) == {"eeg"}


# -- streaming: exports read the file block by block ----------------------------------------------
def test_chunked_reading_gives_what_open_session_gives(tmp_path: Path) -> None:
    """`StreamSource` (what the exports read, a page of blocks at a time) against
    `SessionFile.stream`: the same values and times, bit for bit, through a lost stretch (two
    clock segments), blocks with their own times, an irregular stream, and damaged blocks."""
    import shutil
    import sqlite3

    from needlelab.record.chunked import StreamSource

    stim = StreamSpec("stim.ch1", "Stim", ("frequency_hz", "intensity_ma"), ("Hz", "mA"),
                      StreamKind.IRREGULAR, device="stim")  # fmt: skip
    plan = sessions.Plan(
        regular=[sessions.Regular(sessions.emg_spec("emg.emg", ["EMG 1", "EMG 2"]), 6.0,
                                  sessions.noise(2), drift_ppm=200, block=37,
                                  gaps=[(7000, 2000)])],  # across the grid's 4 s blocks
        irregular=[sessions.Irregular(stim, np.array([3, 70_000_000, 9_000_000_000], np.int64),
                                      np.array([[2, 4.5], [2, 0.1], [3, 7]], np.float32))],
    )  # fmt: skip
    path = sessions.write(tmp_path, plan)
    damaged = tmp_path / "damaged.sqlite"
    shutil.copyfile(path, damaged)
    with sqlite3.connect(damaged) as conn:  # two blocks cut short, one whose bytes are text
        ids = [r[0] for r in conn.execute("SELECT id FROM blocks WHERE n = 37 ORDER BY id")]
        conn.execute("UPDATE blocks SET data = substr(data, 1, 10) WHERE id IN (?, ?)",
                     (ids[10], ids[200]))  # fmt: skip
        conn.execute("UPDATE blocks SET data = 'not bytes' WHERE id = ?", (ids[250],))
    conn.close()
    for source in (path, damaged):
        with open_session(source) as s:
            want = {name: s.stream(name) for name in s.streams}
            segments = len(s.clock_models["emg.emg"]) and s.clock_models["emg.emg"]["segments"]
        assert segments >= 2  # the lost stretch split the clock model
        for name, (t_ns, values) in want.items():
            for samples in (1, 500, 100_000):
                got = list(StreamSource(source, name).chunks(samples))
                assert np.array_equal(np.concatenate([t for t, _ in got]), t_ns)
                assert np.array_equal(np.concatenate([v for _, v in got]), values)
                assert all(v.dtype == values.dtype for _, v in got)
            src = StreamSource(source, name)
            assert src.count == len(t_ns)
            assert (src.min_t_ns, src.max_t_ns) == (int(t_ns.min()), int(t_ns.max()))
    with open_session(path) as s, open_session(damaged) as d:
        whole, cut = len(s.stream("emg.emg")[0]), len(d.stream("emg.emg")[0])
        assert cut == whole - 3 * 37 and d.damaged_blocks == 3  # the three were skipped
        t_ns, _ = s.stream("emg.emg")
        wall = s.meta["anchor_wall_ns"]
    # The lost stretch is one gap annotation in the EDF, from after its last sample to its next.
    onsets, texts, start_ns = _pyedflib_notes(export(path, "edf", tmp_path / "g.edf"))
    gaps = [(o, t) for o, t in zip(onsets, texts, strict=True) if t.startswith("gap: emg.emg")]
    assert len(gaps) == 3  # before the first sample, the lost stretch, after the last
    jump = int(np.argmax(np.diff(t_ns)))
    onset, text = gaps[1]
    until = float(re.fullmatch(r"gap: emg\.emg has no samples until (\S+) s", text)[1])
    assert abs(start_ns + round(onset * 1e9) - (wall + t_ns[jump])) < 1e6
    assert abs(start_ns + round(until * 1e9) - (wall + t_ns[jump + 1])) < 1e6


def test_a_sample_stamped_before_the_session_start_is_inside_the_file(tmp_path: Path) -> None:
    """A device's own time can put a sample before session time 0: the file then starts with
    it, so MNE keeps its annotation (it drops, with a warning, any before the data) and EDFlib
    and MNE place it and the EMG at their times."""
    import warnings

    stim = StreamSpec("stim.ch1", "Stim", ("frequency_hz", "intensity_ma"), ("Hz", "mA"),
                      StreamKind.IRREGULAR, device="stim")  # fmt: skip
    plan = sessions.Plan(
        regular=[sessions.Regular(sessions.emg_spec("emg.emg", ["EMG 1"]), 1.0, sessions.noise(1))],
        irregular=[sessions.Irregular(stim, np.array([-300_000_000, 200_000_000], np.int64),
                                      np.array([[2, 4.5], [2, 5.0]], np.float32))],
    )  # fmt: skip
    path = export(sessions.write(tmp_path, plan), "edf", tmp_path / "early.edf")
    onsets, texts, start_ns = _pyedflib_notes(path)
    assert abs(start_ns - (plan.wall_ns - 300_000_000)) <= 100  # the file starts with it
    stim_onsets = [o for o, t in zip(onsets, texts, strict=True) if t.startswith("stim.ch1")]
    assert [
        abs(start_ns + round(o * 1e9) - (plan.wall_ns + t)) <= 100
        for o, t in zip(stim_onsets, (-300_000_000, 200_000_000), strict=True)
    ] == [True] * 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        raw = mne.io.read_raw_edf(path, infer_types=True, verbose=False)
    assert sum(d.startswith("stim.ch1") for d in raw.annotations.description) == 2
