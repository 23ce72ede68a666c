"""EMG-BIDS export: an EDF+/BDF+ recording with the sidecars BIDS 1.11 asks for.

`to_bids` writes `root/sub-<s>/ses-<n>/emg/sub-<s>_ses-<n>_task-needling_emg.{edf,bdf}` with its
`_emg.json`, `_channels.tsv`, `_events.tsv` (+ `.json`), the session's `_scans.tsv`, and at the
root `dataset_description.json`, `participants.tsv` (+ `.json`) and a `README` (kept if they are
there: several sessions and subjects go in one dataset). What the session file does not know
is said so rather than guessed: the config names each sensor's muscle (`target_muscle`, and
the placement description), how its electrodes are referenced (`EMGReference`), its hardware
filters (`HardwareFilters`) and the mains frequency (`PowerLineFrequency`); what the config
does not say is `n/a`. What needlelab did to the signal (the grid) is `SoftwareFilters`.

Everything here is read from the session it is given, so a de-identified view
(`needlelab.record.deidentify`) gives a de-identified dataset.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from needlelab.private import private_dir, write_private
from needlelab.record.export import (
    ExportError,
    LoadedSession,
    Timeline,
    edf_labels,
    grid_statement,
    regular_streams,
    write_edf,
)

BIDS_VERSION = "1.11.1"
TASK = "needling"
CHANNEL_TYPES = {"EMG", "EEG", "ECG", "EOG", "MISC", "TRIG", "GSR", "RESP", "TEMP", "PPG"}


def to_bids(session: LoadedSession, fmt: str, root: Path, subject: str, number: str) -> Path:
    """Write the session as one EMG-BIDS recording of `sub-<subject>/ses-<number>`."""
    if fmt not in ("edf", "bdf"):
        raise ExportError("the BIDS layout takes EDF or BDF (BIDS EMG); use --to edf or bdf")
    for part, value in (("subject", subject), ("session", number)):
        if not value.isalnum():
            raise ExportError(f"BIDS {part} must be letters and digits only (got {value!r})")
    regular = regular_streams(session)
    if not regular:
        raise ExportError("BIDS EMG needs a regular stream (EMG); this session has none: "
                          "export EDF for its annotations")  # fmt: skip
    ses_folder = root / f"sub-{subject}" / f"ses-{number}"
    folder = ses_folder / "emg"
    private_dir(folder)
    stem = f"sub-{subject}_ses-{number}_task-{TASK}"
    data = folder / f"{stem}_emg.{fmt}"
    line, notes = write_edf(session, data, bdf=fmt == "bdf")
    _dataset_files(root)
    _participant(root, subject)
    muscles = _muscles(session)
    emg = [s for s in regular if s.spec.type == "EMG"]
    main = emg[0] if emg else regular[0]
    sidecar: dict[str, Any] = {
        "TaskName": TASK,
        "TaskDescription": "An instrumented dry-needling or electrical-stimulation session: "
        "surface EMG with the stimulator's settings, caliper readings and the clinician's and "
        "patient's events (events.tsv, the whole record of each in its value column).",
        "SamplingFrequency": main.spec.nominal_rate_hz,
        "PowerLineFrequency": session.config.get("session", {}).get("power_line_hz") or "n/a",
        "RecordingType": "continuous",
        "RecordingDuration": line.seconds,
        "EMGChannelCount": sum(s.spec.channel_count for s in emg),
        "EMGPlacementScheme": "Other",
        "EMGPlacementSchemeDescription": _placement(emg, muscles),
        "EMGReference": _references(session),
        "SoftwareFilters": grid_statement([s.spec.nominal_rate_hz for s in regular]),
        "HardwareFilters": _hardware_filters(session),
        "Manufacturer": _manufacturer(session),
        "ManufacturersModelName": _models(session),
        "SoftwareVersions": f"needlelab {session.meta.get('software_version', '')}".strip(),
    }
    write_private(folder / f"{stem}_emg.json", json.dumps(sidecar, indent=2) + "\n")
    rows = [["name", "type", "units", "sampling_frequency", "target_muscle", "group",
             "placement_description", "status"]]  # fmt: skip
    for stream, names in zip(regular, edf_labels([s.spec for s in regular]), strict=True):
        spec = stream.spec
        kind = spec.type.upper() if spec.type.upper() in CHANNEL_TYPES else "MISC"
        muscle = muscles.get(spec.device, "") if kind == "EMG" else ""
        for c, name in enumerate(names):
            where = f"over {muscle} (as named in the session config)" if muscle else "n/a"
            rows.append([name, kind, spec.units[c] or "n/a", f"{spec.nominal_rate_hz:g}",
                         muscle or "n/a", spec.device or spec.name, where, "good"])  # fmt: skip
    write_private(folder / f"{stem}_channels.tsv", _tsv(rows))
    events = [["onset", "duration", "trial_type", "value"]]
    for n in notes:  # in time order: the EDF's annotations, each whole
        onset = (n.t_ns - line.origin_ns) / 1e9
        events.append([f"{onset:.7f}", "0", n.kind or "n/a", n.text])
    write_private(folder / f"{stem}_events.tsv", _tsv(events))
    write_private(folder / f"{stem}_events.json", json.dumps(EVENTS_JSON, indent=2) + "\n")
    _scan(ses_folder, f"sub-{subject}_ses-{number}_scans.tsv", f"emg/{data.name}", line, session)
    return data


EVENTS_JSON = {
    "onset": {"Description": "Seconds after the first sample of the data file.", "Units": "s"},
    "trial_type": {
        "Description": "What it is: a needlelab event kind (marker, response, stim.settings, "
        "...), the name of an irregular stream whose sample it is (stimulator settings, caliper "
        "readings), or gap (a stream had no samples)."
    },
    "value": {
        "Description": "The whole record: an event's JSON (kind, source, id and its fields), "
        "an irregular stream's sample as 'stream: channel=value unit, ...', or the gap's extent."
    },
}


def _tsv(rows: list[list[str]]) -> str:
    """Rows as BIDS TSV: tabs, LF line ends; a tab or line break inside a cell is a space (the
    JSON in `value` escapes both, so only prose cells could hold one)."""
    buffer = io.StringIO(newline="")
    clean = [[c.replace("\t", " ").replace("\r", " ").replace("\n", " ") for c in r] for r in rows]
    csv.writer(buffer, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE,
               escapechar=None, quotechar=None).writerows(clean)  # fmt: skip
    return buffer.getvalue()


def _muscles(session: LoadedSession) -> dict[str, str]:
    """Each EMG device's muscle as the config names it (device name -> muscle)."""
    out = {}
    for device in session.config.get("devices", []) or []:
        if isinstance(device, dict) and device.get("muscle"):
            out[str(device.get("name", ""))] = str(device["muscle"])
    return out


def _placement(emg: list[Any], muscles: dict[str, str]) -> str:
    named = [f"{muscles[s.spec.device]} ({s.spec.device})" for s in emg if s.spec.device in muscles]
    where = "; ".join(named) if named else "not named in the session config"
    return (f"Surface EMG sensors placed over the muscles named in the session config: {where}. "
            "Electrode positions were not measured.")  # fmt: skip


def _emg_devices(session: LoadedSession) -> list[dict[str, Any]]:
    devices = session.config.get("devices", []) or []
    return [d for d in devices if isinstance(d, dict) and str(d.get("kind", "")).startswith("emg")]


def _manufacturer(session: LoadedSession) -> str:
    """Who made the sensors, as far as the config tells: simulated ones are needlelab's; the
    profile of a real one names its protocol, not its maker."""
    emg = _emg_devices(session)
    return (
        "needlelab (simulated sensors)" if emg and all(d.get("simulator") for d in emg) else "n/a"
    )


def _references(session: LoadedSession) -> str:
    """How each EMG sensor's electrodes are referenced (the config's `reference`), by device
    where the sensors differ."""
    emg = _emg_devices(session)
    said = {str(d.get("name", "")): str(d.get("reference") or "") for d in emg}
    kinds = set(said.values())
    if not emg or kinds == {""}:
        return "n/a"
    if len(kinds) == 1:
        return kinds.pop()
    return "; ".join(f"{name}: {ref or 'n/a'}" for name, ref in said.items())


FILTER_NAMES = {"highpass_hz": "HighpassFilter", "lowpass_hz": "LowpassFilter",
                "notch_hz": "NotchFilter"}  # fmt: skip


def _hardware_filters(session: LoadedSession) -> dict[str, Any] | str:
    """BIDS `HardwareFilters` from the EMG sensors' `hardware_filters` (an object of filters
    with their cut-off in Hz), or `n/a` when the config names none; sensors that differ are
    named by device."""
    per_device: dict[str, dict[str, Any]] = {}
    for d in _emg_devices(session):
        filters = d.get("hardware_filters") or {}
        per_device[str(d.get("name", ""))] = {
            FILTER_NAMES[k]: {"CutoffFrequency": v, "Unit": "Hz"}
            for k, v in filters.items()
            if k in FILTER_NAMES and v is not None
        }
    kinds = {json.dumps(f, sort_keys=True) for f in per_device.values()}
    if not per_device or kinds == {"{}"}:
        return "n/a"
    if len(kinds) == 1:
        return next(iter(per_device.values()))
    return {f"{name} {k}": v for name, f in per_device.items() for k, v in f.items()}


def _models(session: LoadedSession) -> str:
    """The sensors' device profiles (the config's `profile` of each EMG device)."""
    profiles = sorted({str(d["profile"]) for d in _emg_devices(session) if d.get("profile")})
    return f"needlelab profile {', '.join(profiles)}" if profiles else "n/a"


def _dataset_files(root: Path) -> None:
    description = root / "dataset_description.json"
    if not description.exists():
        body = {"Name": "needlelab sessions", "BIDSVersion": BIDS_VERSION, "DatasetType": "raw",
                "GeneratedBy": [{"Name": "needlelab",
                                 "Description": "needlelab export --bids"}]}  # fmt: skip
        write_private(description, json.dumps(body, indent=2) + "\n")
    readme = root / "README"
    if not readme.exists():
        write_private(readme, "Sessions recorded with needlelab and exported as EMG-BIDS.\n")
    sidecar = root / "participants.json"
    if not sidecar.exists():
        columns = {"participant_id": {"Description": "The patient's pseudonymous id."}}
        write_private(sidecar, json.dumps(columns, indent=2) + "\n")


def _participant(root: Path, subject: str) -> None:
    """Add the subject to participants.tsv (once)."""
    path = root / "participants.tsv"
    ids = ([line.split("\t")[0] for line in path.read_text().splitlines()[1:] if line]
           if path.exists() else [])  # fmt: skip
    if f"sub-{subject}" not in ids:
        ids.append(f"sub-{subject}")
    write_private(path, _tsv([["participant_id"], *([i] for i in sorted(ids))]))


def _scan(folder: Path, name: str, file: str, line: Timeline, session: LoadedSession) -> None:
    """The session's scans.tsv: each data file and when it started (UTC)."""
    import datetime as dt

    path = folder / name
    rows = {}
    if path.exists():
        for line_text in path.read_text().splitlines()[1:]:
            cells = line_text.split("\t")
            if len(cells) == 2:
                rows[cells[0]] = cells[1]
    start = dt.datetime.fromtimestamp(line.start_wall_ns // 1000 / 1e6, tz=dt.UTC)
    rows[file] = start.strftime("%Y-%m-%dT%H:%M:%S.%f")
    write_private(
        path, _tsv([["filename", "acq_time"], *([f, t] for f, t in sorted(rows.items()))])
    )
