"""BIDS exports judged by the BIDS validator (`bids-validator-deno`, the official one, bundled
with its runtime: it runs offline) and read by `mne_bids.read_raw_bids`, against the session
files read with open_session.

One dataset holds an EDF session and a BDF session of one subject and a de-identified session
of another, as a clinic would build it export by export.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyedflib
import pytest
from mne_bids import BIDSPath, read_raw_bids

from needlelab.config import parse_config
from needlelab.events import MarkerEvent, NrsEvent, ProtocolEvent, ResponseEvent
from needlelab.record import export, open_session
from needlelab.streams import StreamKind, StreamSpec
from tests.integration import export_sessions as sessions

# Warnings the validator may give: recommended facts no session file holds (authors, licence,
# institution, electrode maker, serial number, instructions, HED) and the short README.
ALLOWED_WARNINGS = {"SIDECAR_KEY_RECOMMENDED", "JSON_KEY_RECOMMENDED", "TOO_FEW_AUTHORS",
                    "NO_AUTHORS", "README_FILE_SMALL"}  # fmt: skip
UNKNOWABLE_KEYS = {"StimulusPresentation", "DeviceSerialNumber", "ElectrodeManufacturer",
                   "ElectrodeManufacturersModelName", "Instructions", "InstitutionName",
                   "InstitutionAddress", "InstitutionalDepartmentName", "HEDVersion", "License",
                   "SourceDatasets"}  # fmt: skip
MUSCLES = {"emg": "L3 multifidus R", "emg2": "L3 multifidus L"}
REFERENCE = "bipolar, 20 mm inter-electrode distance"


def validator() -> Path:
    path = Path(sys.executable).parent / "bids-validator-deno"
    assert path.exists(), "pip install -e '.[dev]': the dev extra brings bids-validator-deno"
    return path


def validate(root: Path) -> list[dict[str, Any]]:
    done = subprocess.run([str(validator()), str(root), "--format", "json"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    report = json.loads(done.stdout)
    issues: list[dict[str, Any]] = report["issues"]["issues"]
    return issues


def config_json(patient: str) -> str:
    config = parse_config({
        "session": {"patient_id": patient, "power_line_hz": 50},
        "devices": [
            {"kind": "emg_ble", "name": name, "profile": "needlelab-emg-ref", "muscle": muscle,
             "address": f"C0:FF:EE:00:00:0{k}", "reference": REFERENCE,
             "hardware_filters": {"highpass_hz": 20, "lowpass_hz": 450}}
            for k, (name, muscle) in enumerate(MUSCLES.items())
        ],
    })  # fmt: skip
    return config.model_dump_json()


def write(folder: Path, patient: str, wall_ns: int) -> Path:
    from needlelab.clinic.protocol import load_protocol

    template = load_protocol("low-back-l3").model_dump(mode="json")
    events = [
        ProtocolEvent(t_ns=1_000_000, name="low-back-l3", template=template, source="session"),
        # recorded out of time order: events.tsv must be sorted
        MarkerEvent(t_ns=900_000_000, text="second\ttabbed\nline", source="clinician"),
        MarkerEvent(t_ns=400_000_000, text="first", source="clinician"),
        NrsEvent(t_ns=1_200_000_000, value=4, when="pre", source="patient"),
        ResponseEvent(t_ns=1_300_000_000, level="L4", side="R", descriptors=("dull",),
                      text="it spreads", source="patient"),
    ]  # fmt: skip
    stim = StreamSpec("stim.ch1", "Stim", ("frequency_hz", "intensity_ma"), ("Hz", "mA"),
                      StreamKind.IRREGULAR, device="stim")  # fmt: skip
    plan = sessions.Plan(
        patient=patient, wall_ns=wall_ns, config_json=config_json(patient), events=events,
        regular=[sessions.Regular(sessions.emg_spec(f"{n}.emg", [f"EMG {m} {k}" for k in (1, 2)]),
                                  2.0, sessions.noise(2, seed=k), drift_ppm=80 * (k + 1))
                 for k, (n, m) in enumerate(MUSCLES.items())],
        irregular=[sessions.Irregular(stim, np.array([50_000_000, 700_000_000], np.int64),
                                      np.array([[2, 4.5], [2, 6.0]], np.float32))],
    )  # fmt: skip
    return sessions.write(folder, plan)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("bids")
    recordings = tmp / "recordings"
    recordings.mkdir()
    first = write(recordings, "BIDS01", 1_795_443_906_661_234_567)
    second = write(recordings, "BIDS01", 1_795_530_306_123_456_789)
    other = write(recordings, "BIDS02", 1_795_443_906_000_000_001)
    root = tmp / "dataset"
    out = {
        "root": root,
        "edf": (first, export(first, "edf", None, (root, "BIDS01", "1"))),
        "bdf": (second, export(second, "bdf", None, (root, "BIDS01", "2"))),
        "deid": (other, export(other, "edf", None, (root, "", "1"),
                               deidentify=tmp / "key" / "key.json")),
    }  # fmt: skip
    return out


def test_the_validator_finds_no_error(dataset: dict[str, Any]) -> None:
    issues = validate(dataset["root"])
    errors = [i for i in issues if i["severity"] == "error"]
    assert errors == []
    codes = {i["code"] for i in issues}
    assert codes <= ALLOWED_WARNINGS, codes - ALLOWED_WARNINGS
    missing = {i.get("subCode") for i in issues if i["code"].endswith("_KEY_RECOMMENDED")}
    assert missing <= UNKNOWABLE_KEYS, missing - UNKNOWABLE_KEYS


def test_the_validator_can_fail(dataset: dict[str, Any], tmp_path: Path) -> None:
    """An export without a sidecar key BIDS requires is an error (the test above can fail)."""
    source, _ = dataset["edf"]
    root = tmp_path / "broken"
    export(source, "edf", None, (root, "BIDS01", "1"))
    sidecar = next(root.rglob("*_emg.json"))
    content = json.loads(sidecar.read_text())
    del content["EMGReference"]
    sidecar.write_text(json.dumps(content))
    issues = validate(root)
    assert any(i["severity"] == "error" and i.get("subCode") == "EMGReference" for i in issues)


def _tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


@pytest.mark.parametrize("which", ["edf", "bdf", "deid"])
def test_mne_bids_reads_every_recording(dataset: dict[str, Any], which: str) -> None:
    source, data = dataset[which]
    folder = data.parent
    subject = data.name.split("_")[0].removeprefix("sub-")
    session = data.name.split("_")[1].removeprefix("ses-")
    path = BIDSPath(subject=subject, session=session, task="needling", datatype="emg",
                    suffix="emg", extension=data.suffix, root=dataset["root"])  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a channel mismatch or an unread column is a warning
        raw = read_raw_bids(path, verbose=False)
    reader = pyedflib.EdfReader(str(data))
    try:
        labels = list(reader.getSignalLabels())
        first = reader.readSignal(0)
    finally:
        reader.close()
    channels = _tsv(next(folder.glob("*_channels.tsv")))
    assert [c["name"] for c in channels] == labels == raw.ch_names  # identical everywhere
    assert set(raw.get_channel_types()) == {"emg"}
    assert np.allclose(raw.get_data(picks=[0])[0] * 1e6, first, atol=1e-3)
    muscles = [c["target_muscle"] for c in channels]
    if which == "deid":
        assert set(muscles) <= {"n/a", *MUSCLES.values()}
    else:
        assert muscles == [MUSCLES["emg"]] * 2 + [MUSCLES["emg2"]] * 2
    sidecar = json.loads(next(folder.glob("*_emg.json")).read_text())
    assert sidecar["EMGChannelCount"] == 4 and sidecar["SamplingFrequency"] == 2000
    assert "Resampling to a uniform grid" in sidecar["SoftwareFilters"]
    # Filled from the config (they were n/a whatever it said).
    assert sidecar["PowerLineFrequency"] == 50 and sidecar["EMGReference"] == REFERENCE
    assert sidecar["HardwareFilters"] == {
        "HighpassFilter": {"CutoffFrequency": 20, "Unit": "Hz"},
        "LowpassFilter": {"CutoffFrequency": 450, "Unit": "Hz"},
    }
    events = _tsv(next(folder.glob("*_events.tsv")))
    onsets = [float(e["onset"]) for e in events]
    assert onsets == sorted(onsets) and len(raw.annotations) == len(events)
    with open_session(source) as s:
        truth = s.events()
    recorded = {json.loads(e["value"])["id"]: json.loads(e["value"]) for e in events
                if e["value"].startswith("{")}  # fmt: skip
    assert sorted(recorded) == sorted(e.id for e in truth)
    if which != "deid":  # the whole record of every event, as the session file holds it
        for e in truth:
            assert recorded[e.id] == {"kind": e.kind, "source": e.source, "id": e.id,
                                      **e.payload()}  # fmt: skip


def test_participants_and_scans(dataset: dict[str, Any]) -> None:
    root: Path = dataset["root"]
    deid_subject = dataset["deid"][1].name.split("_")[0]
    ids = [r["participant_id"] for r in _tsv(root / "participants.tsv")]
    assert ids == sorted(["sub-BIDS01", deid_subject])
    description = json.loads((root / "dataset_description.json").read_text())
    assert description["DatasetType"] == "raw" and description["BIDSVersion"].startswith("1.11")
    scans = _tsv(root / "sub-BIDS01" / "ses-1" / "sub-BIDS01_ses-1_scans.tsv")
    assert scans == [{"filename": f"emg/{dataset['edf'][1].name}",
                      "acq_time": "2026-11-23T14:25:06.661234"}]  # fmt: skip
