"""What every field of every event kind means, in words and units: the data dictionary that ships
with every CSV export (`data_dictionary.csv`), so an exported table explains itself.

`describe(kind, field)` gives (description, unit) of one column. Every field of the event models
in `needlelab.events` has an entry (tests/unit/test_data_dictionary.py checks it); a field of a
kind this version does not know (a newer needlelab's file) is described from what is known of it.
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel

from needlelab.events import Event

COMMON: dict[str, tuple[str, str]] = {
    "id": ("event id, unique and increasing within the session", ""),
    "t_ns": ("session time of the event (0 = when recording started)", "ns"),
    "t_s": ("session time of the event (0 = when recording started)", "s"),
    "kind": ("event kind (the name of the table this row is in)", ""),
    "source": ("who recorded it: a device's name, clinician, patient or session", ""),
}

STIM_SETTINGS = (
    "the channel's full settings after the change, as JSON: channel (1-16), frequency_hz (Hz), "
    "pulse_width_us (µs), intensity_ma (mA), waveform (biphasic/monophasic), mode "
    "(continuous/burst), output_on (true while the output is on)"
)

FIELDS: dict[str, dict[str, tuple[str, str]]] = {
    "stim.settings": {
        "settings": (STIM_SETTINGS, ""),
        "origin": ("driver: read from the stimulator; manual: typed by the operator", ""),
    },
    "device.state": {
        "state": (
            "the device's lifecycle state from this time on: connecting, streaming, "
            "stalled (connected, silent), reconnecting, failed, closed",
            "",
        ),
        "reason": ("why it entered the state, in words (empty if nothing to say)", ""),
    },
    "gap": {
        "stream": ("the stream that delivered no data", ""),
        "start_ns": ("session time the stream's data stopped", "ns"),
        "end_ns": ("session time its data came back", "ns"),
        "samples_lost": (
            "samples the gap cost: counted by a device counter, or inferred "
            "(see inferred); empty where nobody can know",
            "samples",
        ),
        "inferred": ("true if samples_lost was inferred from arrival times, not counted", ""),
        "reason": ("why the stream stopped, in words", ""),
        "confidence": ("for an inferred loss, how sure it is (0-1)", ""),
    },
    "marker": {"text": ("a free note from the clinician", "")},
    "phase": {
        "name": ("the protocol phase, as the protocol template names it", ""),
        "boundary": ("start or end of the phase", ""),
    },
    "recording": {
        "action": ("the recording was started, paused, resumed or stopped", ""),
        "reason": ("why, in words (e.g. the operator, the end of the protocol)", ""),
    },
    "needle.site": {
        "region": ("spinal region of the needle site (e.g. lumbar)", ""),
        "level": ("vertebral level of the site (e.g. L3)", ""),
        "side": ("side of the site: L, R or midline", ""),
        "muscle": ("the muscle needled (e.g. multifidus)", ""),
        "estim_on": ("true while electrical stimulation is used at this site", ""),
    },
    "prompt": {
        "site_id": ("id of the needle.site event in force when the question was asked", ""),
    },
    "response": {
        "level": ("the level the patient reported; empty if they could not say", ""),
        "side": ("the side the patient reported: L, R, both or unsure", ""),
        "descriptors": ("words the patient used for the sensation, as a JSON list", ""),
        "text": ("the answer in the patient's own words, if typed", ""),
        "prompt_id": ("id of the prompt event the answer replies to", ""),
        "latency_ms": ("time from the prompt to the answer", "ms"),
        "site_id": ("id of the needle.site event the answer is scored against", ""),
        "level_error": (
            "reported minus true level, in segments (positive: reported too "
            "caudal); empty where either is unknown",
            "segments",
        ),
        "side_correct": ("true if the reported side is the site's side (both, for midline)", ""),
    },
    "correction": {
        "replaces": ("id of the entry withdrawn or replaced (the original stays in the file)", ""),
        "replacement": ("id of the entry that replaces it; empty: withdrawn", ""),
        "reason": ("why, in words", ""),
    },
    "protocol": {
        "name": ("the protocol template's name", ""),
        "template": (
            "the whole template the session follows, as JSON (phases, sites, TPD and "
            "LRJ settings), so the file alone says how it was scored",
            "",
        ),
    },
    "tpd.trial": {
        "staircase": (
            "the adaptive track, e.g. 'pre L3 R vertical' (moment, site, orientation)",
            "",
        ),
        "site": ("the skin site tested", ""),
        "orientation": ("the caliper's orientation: vertical or horizontal", ""),
        "when": ("pre (before treatment) or post (after)", ""),
        "distance_mm": ("distance between the caliper's points in this trial", "mm"),
        "distance_source": (
            "caliper: read from the caliper; manual: the staircase's distance, set by hand",
            "",
        ),
        "points": ("points applied: 2, or 1 for a catch trial", ""),
        "answer": ("what the patient felt: one, two or unsure", ""),
        "correct": ("true if the answer matches the points applied", ""),
        "step_mm": ("the staircase step this trial was placed with", "mm"),
        "reversal": ("true if this answer reversed the staircase's direction", ""),
        "trial": ("the trial's number within its staircase", ""),
    },
    "lrj.trial": {
        "block": ("the block: pre (before treatment) or post (after)", ""),
        "stimulus": ("the picture: <body part>-<side>-rot<degrees>", ""),
        "body_part": ("hand, foot or back", ""),
        "true_side": ("the side the picture showed: L or R", ""),
        "answer": ("the side the patient named; empty: no answer before the timeout", ""),
        "correct": ("true if the answer is the side shown", ""),
        "rt_ms": ("reaction time from the picture appearing to the answer", "ms"),
        "shown_t_ns": ("session time the picture was shown", "ns"),
        "trial": ("the trial's number within its block", ""),
    },
    "rating.nrs": {
        "value": ("pain on the numeric rating scale, 0 (none) to 10 (worst imaginable)", ""),
        "when": ("the protocol moment, e.g. pre or post", ""),
    },
    "rating.rom": {
        "movement": ("the movement measured, e.g. flexion", ""),
        "degrees": ("range of motion of the movement", "degrees"),
        "when": ("the protocol moment, e.g. pre or post", ""),
    },
    "device.info": {
        "info": (
            "facts the device or its profile gave on connect, as JSON: identity, firmware, "
            "address, battery, the profile's content hash, the bytes the driver may write",
            "",
        ),
    },
    "device.quality": {
        "malformed": ("messages the device's decoder could not read, since the start", ""),
        "duplicates": ("repeated messages (same counter) dropped, since the start", ""),
        "resyncs": ("times the decoder lost the framing and found it again, since the start", ""),
    },
    "warning": {
        "code": ("a stable name of the warning (e.g. disk.slow)", ""),
        "message": ("what happened and what to do, in words", ""),
        "details": ("the figures behind the warning, as JSON", ""),
    },
    "clock.published": {
        "stream": ("the regular stream an LSL outlet stamped", ""),
        "x_from": ("first sample index of the stretch", ""),
        "x_to": ("last sample index of the stretch", ""),
        "x0": ("sample index the clock model counts from", ""),
        "offset_ns": ("the model's time of sample x0", "ns"),
        "period_ns": ("the model's time between samples", "ns"),
        "floor_ns": (
            "the stamp before the stretch: stamps after a step back advance from it "
            "at 0.9 of the period until they meet the model's line",
            "ns",
        ),
        "floor_x": ("sample index of the stamp floor_ns", ""),
    },
}


def event_models() -> dict[str, type[BaseModel]]:
    """Every event model this version knows, by kind."""
    union: Any = get_args(Event)[0]
    return {cls.model_fields["kind"].default: cls for cls in get_args(union)}


def _kind_summary(kind: str) -> str:
    """The first sentence of an event kind's own docstring, or ''."""
    cls = event_models().get(kind)
    doc = cls.__doc__ if cls is not None else None
    return " ".join(doc.split(".")[0].split()) if doc else ""


def describe(kind: str, field: str) -> tuple[str, str]:
    """(description, unit) of column `field` of the `kind` events' table."""
    if field in COMMON:
        return COMMON[field]
    known = FIELDS.get(kind, {}).get(field)
    if known is not None:
        return known
    summary = _kind_summary(kind)
    return (f"field {field} of {kind} events" + (f" ({summary})" if summary else ""), "")
