"""`needlelab export --deidentify`: no free text, patient id or real date survives in any format,
and the exports still load in pyxdf, edfio, MNE and pandas with the same timing.

The session is written by the real `SessionWriter` with a sentinel (`zqx`) in every free-text
field a session can hold; every byte of every export (and what the readers decode from it) is
scanned for the sentinels, the original patient id and the original date. The same scan over the
plain export finds them, so the scan can fail.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import sqlite3
import stat
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import edfio
import mne
import numpy as np
import pandas as pd
import pytest
import pyxdf
from pydantic import BaseModel

from needlelab.clinic.protocol import load_protocol
from needlelab.clock import SessionClock
from needlelab.config import parse_config
from needlelab.events import (
    CorrectionEvent,
    DataQualityEvent,
    DeviceInfoEvent,
    DeviceStateEvent,
    GapEvent,
    LrjTrialEvent,
    MarkerEvent,
    NeedleSiteEvent,
    NrsEvent,
    PhaseEvent,
    PromptEvent,
    ProtocolEvent,
    RecordingEvent,
    ResponseEvent,
    RomEvent,
    StimSettings,
    StimSettingsEvent,
    TpdTrialEvent,
    WarningEvent,
)
from needlelab.hub import Hub
from needlelab.record import SessionMeta, SessionWriter, export, load, session_file_name
from needlelab.record.deidentify import REMOVED, DeidentifyKey, deidentify
from needlelab.record.reader import event_row
from needlelab.streams import Chunk, StreamKind, StreamSpec

PATIENT = "ZQX042"
OTHER_PATIENT = "ZQX043"
SENTINEL = b"zqx"  # in every free-text field below, matched case-insensitively
ADDRESSES = (b"C0:FF:EE:12:34:56", b"C0:FF:EE:65:43:21")  # unit identifiers without "zqx"
START = dt.datetime(2026, 11, 23, 14, 5, 6, 250_000, tzinfo=dt.UTC)
SECOND_START = START + dt.timedelta(days=37, hours=2)
RATE = 2000.0
SECONDS = 3


def date_forms(when: dt.datetime) -> list[bytes]:
    """How a date can be written: ISO, compact, EDF header (dd.mm.yy), EDF+ (dd-MMM-yyyy)."""
    forms = ["%Y-%m-%d", "%Y%m%d", "%Y_%m_%d", "%d.%m.%y", "%d.%m.%Y"]
    out = [when.strftime(f).encode() for f in forms]
    out.append(when.strftime("%d-%b-%Y").upper().encode())
    return out


def config_dict(patient: str) -> dict[str, Any]:
    """A session config with a sentinel in each of its free-text and unit-identifying fields."""
    return {
        "session": {
            "patient_id": patient,
            "out_dir": "/home/zqxuser/recordings",
            "operator": "Dr Zqx Operator",
            "notes": "zqx notes: seen with her daughter, phone 555 0199",
            "protocol": "low-back-l3",
        },
        "devices": [
            {"kind": "stim_serial", "name": "stim", "profile": "needlelab-stim-ascii",
             "port": "/dev/serial/by-id/usb-FTDI_ZQX123-if00"},
            {"kind": "emg_ble", "name": "emg", "profile": "needlelab-emg-ref",
             "address": ADDRESSES[0].decode(), "advertised_name": "Zqx sensor",
             "muscle": "L3 multifidus R zqx", "backend": "bumble",
             "bumble_transport": "unix:/home/zqxuser/bt.sock"},
            {"kind": "emg_ble", "name": "emg2", "profile": "needlelab-emg-ref",
             "address": ADDRESSES[1].decode(), "muscle": "L4 multifidus L"},
            {"kind": "lsl_inlet", "name": "amp", "stream_name": "ZqxAmp",
             "source_id": "ZQX-SERIAL-77"},
        ],
    }  # fmt: skip


def write_session(folder: Path, patient: str, start: dt.datetime) -> Path:
    """A finished session file, written by the real writer, with sentinels everywhere."""
    config = parse_config(config_dict(patient))  # a config needlelab itself accepts
    hub = Hub(SessionClock())
    wall_ns = int(start.timestamp()) * 10**9 + start.microsecond * 1000  # exact, no float
    meta = SessionMeta(
        session_id="zqx-session-id-0001",
        patient_id=patient,
        anchor_monotonic_ns=123_456_789_000,
        anchor_wall_ns=wall_ns,
        config_json=config.model_dump_json(),
        software_version="test",
    )
    writer = SessionWriter(folder / session_file_name(patient, wall_ns), hub, meta)
    writer.start()
    emg = StreamSpec("emg.emg", "EMG", ("EMG L3 multifidus R zqx 1", "EMG L3 multifidus R zqx 2"),
                     ("uV", "uV"), StreamKind.REGULAR, RATE, device="emg")  # fmt: skip
    emg2 = StreamSpec("emg2.emg", "EMG", ("EMG L4 multifidus L 1", "EMG L4 multifidus L 2"),
                      ("uV", "uV"), StreamKind.REGULAR, RATE, device="emg2")  # fmt: skip
    stim = StreamSpec("stim.ch1", "Stim", ("frequency_hz", "intensity_ma"), ("Hz", "mA"),
                      StreamKind.IRREGULAR, device="stim")  # fmt: skip
    amp = StreamSpec("amp.lsl", "EEG", ("Fp1", "Zqx left ear"), ("uV", "uV"),
                     StreamKind.IRREGULAR, dtype="float64", device="amp")  # fmt: skip
    for spec in (emg, emg2, stim, amp):
        hub.add_stream(spec)
    rng = np.random.default_rng(7)
    block = 100
    for i in range(int(SECONDS * RATE / block)):
        arrival = round((i + 1) * block / RATE * 1e9) + 3_000_000 + int(rng.integers(0, 2e6))
        for spec in (emg, emg2):
            values = rng.normal(0, 50, (block, 2)).astype(np.float32)
            hub.push(Chunk(spec.name, values, arrival, i * block, device_counter=i))
    t = np.array([200_000_000, 1_500_000_000], np.int64)
    hub.push(Chunk(stim.name, np.array([[2, 4.5], [2, 6.0]], np.float32), int(t[-1]), 0, t))
    hub.push(Chunk(amp.name, np.array([[1.0, 2.0]]), 900_000_000, 0, t[:1] + 700_000_000))
    template = load_protocol("low-back-l3").model_dump(mode="json")
    template["protocol"]["description"] = "zqx description of this patient's case"
    template["phases"].append({"name": "note phase", "kind": "note", "text": "ask zqx about it"})
    settings = StimSettings(frequency_hz=2, pulse_width_us=250, intensity_ma=6, output_on=True,
                            waveform="zqx wave", mode="continuous")  # fmt: skip
    # fmt: off
    events = [
        ProtocolEvent(name="low-back-l3", template=template, source="session"),
        PhaseEvent(name="baseline pain", boundary="start", source="clinician"),
        PhaseEvent(name="zqx typed phase", boundary="start", source="clinician"),
        NrsEvent(value=6, when="pre", source="patient"),
        RomEvent(movement="flexion", degrees=40, when="pre", source="clinician"),
        TpdTrialEvent(staircase="pre L3 R vertical", site="L3 R", orientation="vertical",
                      when="pre", distance_mm=40, points=2, answer="two", correct=True,
                      trial=1, source="clinician"),
        LrjTrialEvent(block="pre", stimulus="hand-left-palm-rot90", body_part="hand",
                      true_side="L", answer="L", correct=True, rt_ms=812.0,
                      shown_t_ns=400_000_000, trial=1, source="patient"),
        NeedleSiteEvent(region="lumbar", level="L3", side="R", muscle="multifidus",
                        estim_on=True, source="clinician"),
        NeedleSiteEvent(region="lumbar", level="L3", side="R", muscle="zqx typed muscle",
                        source="clinician"),
        PromptEvent(source="clinician"),
        ResponseEvent(level="L4", side="R", descriptors=("dull", "zqx descriptor"),
                      text="zqx response: it feels like when Anna pushed me", source="patient"),
        CorrectionEvent(replaces=1, reason="zqx correction reason", source="clinician"),
        MarkerEvent(text="zqx marker: patient gave her full name", source="clinician"),
        RecordingEvent(action="pause", reason="zqx pause reason", source="clinician"),
        DeviceStateEvent(state="reconnecting", source="stim",
                         reason="cannot open /dev/serial/by-id/usb-FTDI_ZQX123-if00"),
        GapEvent(stream="emg.emg", start_ns=2_000_000_000, end_ns=2_100_000_000,
                 reason="zqx link lost", source="emg"),
        StimSettingsEvent(settings=settings, source="stim"),
        DeviceInfoEvent(info={"identity": "NEEDLELAB,STIM-2,SNZQX0042,1.0",
                              "serial": "SNZQX0042", "address": ADDRESSES[0].decode(),
                              "firmware": "1.0.3", "profile_sha256": "ab" * 32,
                              "allowed_writes": ["STAT? CH1"], "dtr": False, "battery": 87,
                              "profile": "/home/zqxuser/stim.toml"}, source="emg"),
        DataQualityEvent(malformed=3, source="stim"),
        WarningEvent(code="disk.slow", message="zqx: /home/zqxuser is slow",
                     details={"path": "/home/zqxuser/rec", "backlog_s": 2.5}, source="session"),
    ]
    # fmt: on
    for k, event in enumerate(events):
        hub.emit(event.model_copy(update={"t_ns": 100_000_000 + k * 100_000_000}))
    writer.stop()
    assert writer.error is None and writer.dropped == 0
    # A kind from a newer needlelab (the reader keeps it as an UnknownEvent), with free text.
    with sqlite3.connect(writer.path) as conn:
        conn.execute(
            "INSERT INTO events (t_ns, kind, source, payload) VALUES (?, ?, ?, ?)",
            (2_500_000_000, "future.note", "clinician",
             json.dumps({"comment": "zqx from the future", "count": 2})),
        )  # fmt: skip
    conn.close()
    return writer.path


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("deid") / "recordings"
    return {
        "first": write_session(folder, PATIENT, START),
        "second": write_session(folder, PATIENT, SECOND_START),
        "other": write_session(folder, OTHER_PATIENT, START),
    }


# -- the scan ------------------------------------------------------------------------------------
def forbidden(patient: str, start: dt.datetime) -> list[bytes]:
    """What must not be in a de-identified export of that session, lower-cased."""
    secs = int(start.timestamp())
    words = [SENTINEL, patient.encode(), *ADDRESSES, *date_forms(start)]
    return [w.lower() for w in words] + [struct.pack(">i", secs), struct.pack("<i", secs)]


def hits(root: Path, words: list[bytes], decoded: list[str] = ()) -> list[str]:  # type: ignore[assignment]
    """Every forbidden word found in a file or folder name, a file's bytes, or decoded text."""
    found = []
    paths = [root, *sorted(root.rglob("*"))] if root.is_dir() else [root]
    assert paths and all(p.exists() for p in paths)
    for p in paths:
        for w in words:
            if w.lower() in p.name.encode().lower():
                found.append(f"{p.name}: name holds {w!r}")
        if p.is_file():
            data = p.read_bytes()
            low = data.lower()
            for w in words:
                if w in data or (w.isascii() and w.lower() in low):
                    found.append(f"{p.name}: bytes hold {w!r}")
    for text in decoded:
        for w in words:
            if w.isascii() and w.decode(errors="ignore").lower() in text.lower():
                found.append(f"decoded text holds {w!r}")
    return found


def key_entry(key: Path, patient: str) -> dict[str, Any]:
    """The key file's entry for a patient, read as plain JSON."""
    entry: dict[str, Any] = json.loads(key.read_text())["patients"][patient]
    return entry


def xdf_text(path: Path) -> list[str]:
    streams, header = pyxdf.load_xdf(str(path), dejitter_timestamps=False)
    texts = [json.dumps(header, default=str)]
    for s in streams:
        texts.append(json.dumps(s["info"], default=str))
        if s["info"]["channel_format"][0] == "string":
            texts += [str(v[0]) for v in s["time_series"]]
    return texts


def edf_text(path: Path) -> list[str]:
    edf = (edfio.read_bdf if path.suffix == ".bdf" else edfio.read_edf)(path)
    p, r = edf.patient, edf.recording
    return [p.code, p.name, *p.additional, r.hospital_administration_code,
            r.investigator_technician_code, r.equipment_code, *r.additional,
            *(s.label + " " + s.transducer_type for s in edf.signals),
            *(a.text for a in edf.annotations)]  # fmt: skip


def fif_text(path: Path) -> list[str]:
    raw = mne.io.read_raw_fif(path, verbose=False)
    return [str(raw.info), *raw.ch_names, *raw.annotations.description]


def csv_text(folder: Path) -> list[str]:
    return [pd.read_csv(p, dtype=str).to_csv() for p in sorted(folder.glob("*.csv"))]


# -- exports -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(sessions: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Plain and de-identified exports of the first session in every format."""
    out = tmp_path_factory.mktemp("exports")
    key = out / "keys" / "key.json"
    plain, deid = out / "plain", out / "deid"
    result: dict[str, Any] = {"key": key, "plain": {}, "deid": {}}
    source = sessions["first"]
    for fmt, name in (("xdf", "s.xdf"), ("edf", "s.edf"), ("bdf", "s.bdf"), ("csv", "csv"),
                      ("fif", "s_raw.fif")):  # fmt: skip
        result["plain"][fmt] = export(source, fmt, plain / name)
        result["deid"][fmt] = export(source, fmt, deid / name, deidentify=key)
    result["plain"]["bids"] = export(source, "edf", None, (plain / "bids", "P1", "1"))
    result["deid"]["bids"] = export(source, "edf", None, (deid / "bids", "", "1"), deidentify=key)
    result["plain"]["bids_root"], result["deid"]["bids_root"] = plain / "bids", deid / "bids"
    return result


def decoded(fmt: str, path: Path) -> list[str]:
    return {"xdf": xdf_text, "edf": edf_text, "bdf": edf_text, "fif": fif_text,
            "csv": csv_text}[fmt](path)  # fmt: skip


@pytest.mark.parametrize("fmt", ["xdf", "edf", "bdf", "csv", "fif", "bids"])
def test_no_free_text_patient_id_or_date_survives(exported: dict[str, Any], fmt: str) -> None:
    words = forbidden(PATIENT, START)
    if fmt == "bids":
        plain, deid = exported["plain"]["bids_root"], exported["deid"]["bids_root"]
        plain_text = decoded("edf", exported["plain"]["bids"])
        deid_text = decoded("edf", exported["deid"]["bids"])
    else:
        plain, deid = exported["plain"][fmt], exported["deid"][fmt]
        plain_text, deid_text = decoded(fmt, plain), decoded(fmt, deid)
    # The scan finds the sentinels where they are: the plain export holds them.
    assert any("zqx" in h for h in hits(plain, words, plain_text))
    assert hits(deid, words, deid_text) == []
    # and it is the same kind of file, with the text replaced rather than the events lost
    assert any(REMOVED in t for t in deid_text) or fmt == "bids"


def test_the_key_file(exported: dict[str, Any]) -> None:
    key: Path = exported["key"]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    entry = key_entry(key, PATIENT)
    assert set(entry) == {"id", "shift_days"} and len(entry["id"]) == 8 and entry["id"].isalnum()
    assert entry["id"] != PATIENT and isinstance(entry["shift_days"], int)
    assert 1990 <= (START + dt.timedelta(days=entry["shift_days"])).year <= 1999


def test_xdf_timing_and_values_are_those_of_the_plain_export(exported: dict[str, Any]) -> None:
    plain, _ = pyxdf.load_xdf(str(exported["plain"]["xdf"]), dejitter_timestamps=False)
    deid, _ = pyxdf.load_xdf(str(exported["deid"]["xdf"]), dejitter_timestamps=False)
    by_name = {s["info"]["name"][0]: s for s in deid}
    assert len(plain) == len(deid) == 5
    for p in plain:
        d = by_name[p["info"]["name"][0]]
        assert np.array_equal(p["time_stamps"], d["time_stamps"])
        if p["info"]["channel_format"][0] != "string":
            assert np.array_equal(p["time_series"], d["time_series"])
    markers = [json.loads(v[0]) for v in by_name["needlelab events"]["time_series"]]
    kept = {m["kind"]: m for m in markers}
    assert kept["response"]["level"] == "L4" and kept["response"]["side"] == "R"
    assert kept["response"]["descriptors"] == ["dull", REMOVED]
    assert kept["response"]["text"] == REMOVED and kept["marker"]["text"] == REMOVED
    assert kept["tpd.trial"]["site"] == "L3 R" and kept["rating.rom"]["movement"] == "flexion"
    assert kept["lrj.trial"]["stimulus"] == "hand-left-palm-rot90"
    assert kept["stim.settings"]["settings"]["waveform"] == REMOVED  # "zqx wave": not one token
    sites = [m for m in markers if m["kind"] == "needle.site"]
    assert [s["muscle"] for s in sites] == ["multifidus", REMOVED]
    phases = [m["name"] for m in markers if m["kind"] == "phase"]
    assert phases == ["baseline pain", REMOVED]
    info = kept["device.info"]
    assert set(info["info"]) == {"firmware", "profile_sha256", "allowed_writes", "dtr",
                                 "battery", "profile"}  # fmt: skip
    assert info["info"]["profile"] == REMOVED  # a path
    assert kept["future.note"] == {"kind": "future.note", "source": "clinician",
                                   "id": kept["future.note"]["id"], "comment": REMOVED,
                                   "count": 2}  # fmt: skip
    # Channel labels: the clinic's words are kept, a label with other text is numbered.
    labels = {s["info"]["name"][0]: [c["label"][0] for c in
              s["info"]["desc"][0]["channels"][0]["channel"]] for s in deid
              if s["info"]["type"][0] != "Markers"}  # fmt: skip
    assert labels["emg.emg"] == ["EMG 1", "EMG 2"]
    assert labels["emg2.emg"] == ["EMG L4 multifidus L 1", "EMG L4 multifidus L 2"]
    assert labels["amp.lsl"] == ["Fp1", "ch2"]  # "Zqx left ear": neither one word nor the clinic's


@pytest.mark.parametrize("fmt", ["edf", "bdf"])
def test_edf_dates_shift_by_the_key_and_timing_is_unchanged(
    exported: dict[str, Any], fmt: str
) -> None:
    shift = dt.timedelta(days=key_entry(exported["key"], PATIENT)["shift_days"])
    plain_path, deid_path = exported["plain"][fmt], exported["deid"][fmt]
    # The header's start date and time, read at their offsets in the EDF specification.
    plain_head, deid_head = plain_path.read_bytes()[:256], deid_path.read_bytes()[:256]
    assert plain_head[168:176] == START.strftime("%d.%m.%y").encode()
    assert deid_head[168:176] == (START + shift).strftime("%d.%m.%y").encode()
    assert deid_head[176:184] == plain_head[176:184] == START.strftime("%H.%M.%S").encode()
    pseudonym = key_entry(exported["key"], PATIENT)["id"]
    assert deid_head[8:88].decode().split()[0] == pseudonym
    read = edfio.read_bdf if fmt == "bdf" else edfio.read_edf
    plain, deid = read(plain_path), read(deid_path)
    assert deid.startdate == plain.startdate + shift and deid.starttime == plain.starttime
    assert [s.sampling_frequency for s in deid.signals] == [s.sampling_frequency
                                                            for s in plain.signals]  # fmt: skip
    for p, d in zip(plain.signals, deid.signals, strict=True):
        assert np.array_equal(p.data, d.data)
    assert [a.onset for a in deid.annotations] == [a.onset for a in plain.annotations]
    reader = mne.io.read_raw_bdf if fmt == "bdf" else mne.io.read_raw_edf
    raw_plain = reader(plain_path, preload=True, infer_types=True, verbose=False)
    raw_deid = reader(deid_path, preload=True, infer_types=True, verbose=False)
    assert raw_deid.info["meas_date"] - raw_plain.info["meas_date"] == shift
    assert np.array_equal(raw_deid.get_data(), raw_plain.get_data())
    assert np.array_equal(raw_deid.annotations.onset, raw_plain.annotations.onset)


def test_fif_date_shift_timing_and_no_machine_id(exported: dict[str, Any]) -> None:
    shift = dt.timedelta(days=key_entry(exported["key"], PATIENT)["shift_days"])
    plain = mne.io.read_raw_fif(exported["plain"]["fif"], preload=True, verbose=False)
    deid = mne.io.read_raw_fif(exported["deid"]["fif"], preload=True, verbose=False)
    assert plain.info["meas_date"] == START  # microseconds included
    assert deid.info["meas_date"] == START + shift
    assert np.array_equal(plain.get_data(), deid.get_data())
    assert np.array_equal(plain.annotations.onset, deid.annotations.onset)
    assert plain.ch_names[:2] == ["EMG L3 multifidus R zqx 1", "EMG L3 multifidus R zqx 2"]
    assert deid.ch_names[:2] == ["EMG 1", "EMG 2"]
    # MNE writes the computer's network address into every FIFF id: zero in the export.
    assert not np.any(deid.info["file_id"]["machid"]) and not np.any(deid.info["meas_id"]["machid"])
    machid = np.asarray(plain.info["file_id"]["machid"], ">i4").tobytes()
    if any(machid):
        assert machid in exported["plain"]["fif"].read_bytes()
        assert machid not in exported["deid"]["fif"].read_bytes()


def test_csv_tables_load_in_pandas_with_the_same_times(exported: dict[str, Any]) -> None:
    plain, deid = exported["plain"]["csv"], exported["deid"]["csv"]
    names = sorted(p.name for p in plain.glob("*.csv"))
    assert names == sorted(p.name for p in deid.glob("*.csv"))
    for name in names:
        p, d = pd.read_csv(plain / name), pd.read_csv(deid / name)
        assert p.shape == d.shape, name
        for column in ("t_ns", "t_s"):
            if column in p:
                assert p[column].equals(d[column]), name
    emg_p, emg_d = (
        pd.read_csv(plain / "signal_emg_emg.csv"),
        pd.read_csv(deid / "signal_emg_emg.csv"),
    )
    assert list(emg_d.columns) == ["t_s", "EMG 1", "EMG 2"]
    assert np.array_equal(emg_p.to_numpy(), emg_d.to_numpy())
    markers = pd.read_csv(deid / "events_marker.csv")
    assert markers["text"].tolist() == [REMOVED]


def test_bids_subject_is_the_pseudonym(exported: dict[str, Any]) -> None:
    pseudonym = key_entry(exported["key"], PATIENT)["id"]
    data: Path = exported["deid"]["bids"]
    assert data.parent == exported["deid"]["bids_root"] / f"sub-{pseudonym}" / "ses-1" / "emg"
    plain_events = pd.read_csv(next(exported["plain"]["bids"].parent.glob("*_events.tsv")),
                               sep="\t")  # fmt: skip
    deid_events = pd.read_csv(next(data.parent.glob("*_events.tsv")), sep="\t")
    assert plain_events["onset"].equals(deid_events["onset"])


def test_one_patient_one_pseudonym_and_one_shift_across_sessions(
    sessions: dict[str, Path], exported: dict[str, Any], tmp_path: Path
) -> None:
    key: Path = exported["key"]
    before = key_entry(key, PATIENT)
    first = edfio.read_edf(exported["deid"]["edf"])
    second = edfio.read_edf(export(sessions["second"], "edf", tmp_path / "b.edf", deidentify=key))
    assert key_entry(key, PATIENT) == before
    assert second.patient.code == first.patient.code == before["id"]

    def start(e: edfio.Edf) -> dt.datetime:
        return dt.datetime.combine(e.startdate, e.starttime)

    # The interval between the sessions is kept to the second (EDF's header resolution).
    assert start(second) - start(first) == dt.timedelta(days=37, hours=2)
    other = edfio.read_edf(export(sessions["other"], "edf", tmp_path / "c.edf", deidentify=key))
    entry = key_entry(key, OTHER_PATIENT)
    assert other.patient.code == entry["id"] != before["id"]
    assert hits(tmp_path / "c.edf", forbidden(OTHER_PATIENT, START)) == []


def test_default_names_are_the_pseudonym_and_the_shifted_date(
    sessions: dict[str, Path], exported: dict[str, Any], tmp_path: Path
) -> None:
    copy = tmp_path / sessions["first"].name
    copy.write_bytes(sessions["first"].read_bytes())
    path = export(copy, "xdf", None, deidentify=exported["key"])
    entry = key_entry(exported["key"], PATIENT)
    stamp = (START + dt.timedelta(days=entry["shift_days"])).strftime("%Y%m%dT%H%M%SZ")
    assert path == tmp_path / f"{entry['id']}_{stamp}.xdf"


# -- the command line ----------------------------------------------------------------------------
def needlelab(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "needlelab.cli", *map(str, args)],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def one_line_refusal(result: subprocess.CompletedProcess[str], words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert words in line, line


def test_cli_refuses_a_key_inside_the_export_folder(
    sessions: dict[str, Path], tmp_path: Path
) -> None:
    source = sessions["first"]
    cases = [
        ("xdf", ["--out", tmp_path / "a" / "s.xdf"], tmp_path / "a" / "key.json"),
        ("csv", ["--out", tmp_path / "b"], tmp_path / "b" / "keys" / "key.json"),
        ("edf", ["--bids", tmp_path / "c", "--session", "1"], tmp_path / "c" / "sub" / "k.json"),
    ]
    for fmt, out, key in cases:
        result = needlelab("export", source, "--to", fmt, *out, "--deidentify", "--key", key)
        one_line_refusal(result, "inside the export folder")
        assert not key.exists()
    assert sorted(tmp_path.iterdir()) == []  # nothing written at all


def test_cli_refusals_are_one_line(sessions: dict[str, Path], tmp_path: Path) -> None:
    source, key = sessions["first"], tmp_path / "keys" / "key.json"
    result = needlelab("export", source, "--to", "xdf", "--out", tmp_path / f"{PATIENT}.xdf",
                       "--deidentify", "--key", key)  # fmt: skip
    one_line_refusal(result, "holds the patient id or the session date")
    result = needlelab("export", source, "--to", "xdf", "--out", tmp_path / "x_20261123.xdf",
                       "--deidentify", "--key", key)  # fmt: skip
    one_line_refusal(result, "holds the patient id or the session date")
    result = needlelab("export", source, "--to", "xdf", "--key", key)
    one_line_refusal(result, "--deidentify")
    assert not key.exists()
    key.parent.mkdir()
    key.write_text("{}")
    key.chmod(0o644)
    result = needlelab("export", source, "--to", "xdf", "--out", tmp_path / "o" / "x.xdf",
                       "--deidentify", "--key", key)  # fmt: skip
    one_line_refusal(result, "chmod 600")
    key.chmod(0o600)
    result = needlelab("export", source, "--to", "xdf", "--out", tmp_path / "o" / "x.xdf",
                       "--deidentify", "--key", key)  # fmt: skip
    one_line_refusal(result, "not a needlelab de-identification key")
    assert not (tmp_path / "o").exists()


def test_cli_default_key_and_bids_subject(sessions: dict[str, Path], tmp_path: Path) -> None:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    result = needlelab("export", sessions["first"], "--to", "edf", "--bids", tmp_path / "bids",
                       "--session", "1", "--deidentify", env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    key = tmp_path / "data" / "needlelab" / "deidentify-key.json"
    assert f"key: {key}" in result.stdout
    pseudonym = key_entry(key, PATIENT)["id"]
    (data,) = (tmp_path / "bids").rglob("*_emg.edf")
    assert data.name == f"sub-{pseudonym}_ses-1_task-needling_emg.edf"
    assert hits(tmp_path / "bids", forbidden(PATIENT, START)) == []


# -- the view every exporter writes ----------------------------------------------------------------
def test_the_deidentified_view_holds_nothing_identifying(
    sessions: dict[str, Path], tmp_path: Path
) -> None:
    """What a future exporter could take from the view (meta, the config, streams, events)."""
    original = load(sessions["first"])
    view = deidentify(original, DeidentifyKey(tmp_path / "key.json"))
    everything = json.dumps(
        [view.meta, view.config, [dataclasses.asdict(s.spec) for s in view.streams.values()],
         [s.clock_model for s in view.streams.values()],
         [event_row(e) for e in view.events]], default=str,
    ).encode()  # fmt: skip
    original_text = json.dumps([original.meta, original.config], default=str).encode().lower()
    assert SENTINEL in original_text and PATIENT.lower().encode() in original_text
    for word in forbidden(PATIENT, START)[:-2]:  # the packed seconds are for binary files
        assert word not in everything.lower(), word
    assert view.meta["patient_id"] == view.config["session"]["patient_id"] == view.patient_id
    assert view.meta["session_id"] != original.meta["session_id"]
    assert view.meta["anchor_monotonic_ns"] == 0
    parse_config(view.config)  # still a config needlelab accepts, with placeholders
    assert view.start - original.start == dt.timedelta(
        days=key_entry(tmp_path / "key.json", PATIENT)["shift_days"]
    )
    # Relative timing untouched: the same arrays, the same event times.
    for name, stream in original.streams.items():
        assert view.streams[name].t_ns is stream.t_ns and view.streams[name].values is stream.values
    assert [(e.id, e.t_ns, e.kind) for e in view.events] == [
        (e.id, e.t_ns, e.kind) for e in original.events
    ]
    # The same session exported twice gets the same session id; the original is unchanged.
    again = deidentify(load(sessions["first"]), DeidentifyKey(tmp_path / "key.json"))
    assert again.meta["session_id"] == view.meta["session_id"]
    assert original.patient_id == PATIENT


def test_every_rule_names_a_field_that_exists() -> None:
    """A renamed field would silently fall back to 'replace': the table must follow renames."""
    from needlelab import config, events
    from needlelab.clinic import protocol
    from needlelab.record import deidentify as module

    models = {name: obj for m in (config, events, protocol) for name, obj in vars(m).items()
              if isinstance(obj, type) and issubclass(obj, BaseModel)}  # fmt: skip
    for model, field in module._RULES:
        assert field in models[model].model_fields, (model, field)
