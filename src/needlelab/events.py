"""Typed session events: one pydantic model per event kind, JSON in the store.

The names here are the project's vocabulary; the store, the exports, the GUI and the report all
use them. What each field means, in words and units, is in `needlelab.record.dictionary` (the
data dictionary every CSV export ships).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class EventBase(BaseModel):
    """Fields every event has: its id, its session time and where it came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int = -1  # assigned by the hub; unique and increasing within a session
    t_ns: int = -1  # session time; the hub stamps it when the emitter leaves it unset
    source: str = ""  # device name, "clinician", "session", ...

    def payload(self) -> dict[str, Any]:
        """The kind-specific fields, as stored in the events table's JSON column."""
        return self.model_dump(mode="json", exclude={"id", "t_ns", "source", "kind"})


class StimSettings(BaseModel):
    """A full snapshot of one stimulator channel's settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: int = Field(1, ge=1, le=16)
    frequency_hz: float = Field(ge=0, le=10_000)
    pulse_width_us: float = Field(ge=0, le=10_000)
    intensity_ma: float = Field(ge=0, le=200)
    waveform: str = "biphasic"
    mode: str = "continuous"
    output_on: bool = False


class StimSettingsEvent(EventBase):
    """`stim.settings`: the full settings snapshot after any change."""

    kind: Literal["stim.settings"] = "stim.settings"
    settings: StimSettings
    origin: Literal["driver", "manual"] = "driver"


class DeviceStateEvent(EventBase):
    """`device.state`: a device entered a lifecycle state."""

    kind: Literal["device.state"] = "device.state"
    # failed: the driver raised an exception it did not expect (the reason says which); it
    # reconnects as after a link loss.
    state: Literal["connecting", "streaming", "stalled", "reconnecting", "failed", "closed"]
    reason: str = ""


class GapEvent(EventBase):
    """`gap`: a stream delivered nothing between `start_ns` and `end_ns` (its time without
    data), and the samples that cost it: `samples_lost` counted from a device counter
    (`inferred` false), inferred by the driver from the arrival pattern (`inferred` true), or
    None where nobody can know (a stream without a counter across an outage, irregular
    streams). Never a count guessed from the gap's length."""

    kind: Literal["gap"] = "gap"
    stream: str
    start_ns: int
    end_ns: int
    samples_lost: int | None = None
    inferred: bool = False  # samples_lost was inferred from arrivals, not counted by a counter
    reason: str = ""
    # Of a loss inferred from the arrival pattern (no counter saw it): how sure, 0..1 (the
    # arrivals that followed could be the link's own jitter with probability 1 - confidence).
    confidence: float | None = Field(None, ge=0, le=1)


class MarkerEvent(EventBase):
    """`marker`: a free note from the clinician."""

    kind: Literal["marker"] = "marker"
    text: str = Field(max_length=2000)


class PhaseEvent(EventBase):
    """`phase`: start or end of a protocol phase."""

    kind: Literal["phase"] = "phase"
    name: str
    boundary: Literal["start", "end"]


class RecordingEvent(EventBase):
    """`recording`: the recording was started, paused, resumed or stopped."""

    kind: Literal["recording"] = "recording"
    action: Literal["start", "pause", "resume", "stop"]
    reason: str = ""


SiteSide = Literal["L", "R", "midline"]
"""The side of a needle site."""

AnswerSide = Literal["L", "R", "both", "unsure"]
"""The side a patient reports."""


class NeedleSiteEvent(EventBase):
    """`needle.site`: the site being needled from now on, set by the clinician."""

    kind: Literal["needle.site"] = "needle.site"
    region: str
    level: str
    side: SiteSide
    muscle: str = ""
    estim_on: bool = False


class PromptEvent(EventBase):
    """`prompt`: the clinician asked the localization question; its id is the prompt id."""

    kind: Literal["prompt"] = "prompt"
    site_id: int | None = None  # the `needle.site` event in force


class ResponseEvent(EventBase):
    """`response`: the patient's localization answer, scored against the site in force.

    `level_error` is reported minus true level in segments of the region's level list (positive:
    reported too caudal); None where either is unknown. `latency_ms` runs from the prompt.
    """

    kind: Literal["response"] = "response"
    level: str | None = None  # None: the patient could not say
    side: AnswerSide | None = None
    descriptors: tuple[str, ...] = ()
    text: str = Field("", max_length=2000)
    prompt_id: int | None = None
    latency_ms: float | None = None
    site_id: int | None = None
    level_error: int | None = None
    side_correct: bool | None = None


class CorrectionEvent(EventBase):
    """`correction`: a former entry (by id) is withdrawn, or replaced by the entry `replacement`.
    The original stays in the store; readers take the correction into account."""

    kind: Literal["correction"] = "correction"
    replaces: int
    replacement: int | None = None  # None: withdrawn (undone)
    reason: str = ""


class ProtocolEvent(EventBase):
    """`protocol`: the protocol template the session follows, in full, so that scoring and the
    report need nothing but the session file."""

    kind: Literal["protocol"] = "protocol"
    name: str
    template: dict[str, Any]


class TpdTrialEvent(EventBase):
    """`tpd.trial`: one two-point discrimination trial and where its staircase stands."""

    kind: Literal["tpd.trial"] = "tpd.trial"
    staircase: str  # e.g. "pre L3 R vertical": one adaptive track
    site: str
    orientation: Literal["vertical", "horizontal"]
    when: Literal["pre", "post"]
    distance_mm: float = Field(ge=0, le=500)
    distance_source: Literal["caliper", "manual"] = "manual"
    points: Literal[1, 2]  # 1: a catch trial
    answer: Literal["one", "two", "unsure"]
    correct: bool
    step_mm: float = 0.0  # the staircase step this trial was placed with
    reversal: bool = False  # this trial's answer reversed the staircase's direction
    trial: int = Field(ge=1)  # number within the staircase


class LrjTrialEvent(EventBase):
    """`lrj.trial`: one left/right judgement; the reaction time runs from the stimulus frame."""

    kind: Literal["lrj.trial"] = "lrj.trial"
    block: str  # e.g. "pre"
    stimulus: str  # e.g. "hand-left-palm-rot90"
    body_part: str
    true_side: Literal["L", "R"]
    answer: Literal["L", "R"] | None  # None: no answer before the timeout
    correct: bool
    rt_ms: float | None
    shown_t_ns: int  # session time the stimulus frame was shown
    trial: int = Field(ge=1)


class NrsEvent(EventBase):
    """`rating.nrs`: pain on the 0-10 numeric rating scale."""

    kind: Literal["rating.nrs"] = "rating.nrs"
    value: int = Field(ge=0, le=10)
    when: str = ""  # the protocol moment, e.g. "pre", "post"


class RomEvent(EventBase):
    """`rating.rom`: range of motion of one movement, in degrees."""

    kind: Literal["rating.rom"] = "rating.rom"
    movement: str
    degrees: float = Field(ge=0, le=360)
    when: str = ""


class DeviceInfoEvent(EventBase):
    """`device.info`: facts a device or its profile gave on connect (identity, firmware,
    address, battery, the profile's content hash and the exact bytes the driver may write)."""

    kind: Literal["device.info"] = "device.info"
    info: dict[str, Any]


class DataQualityEvent(EventBase):
    """`device.quality`: a device's running data-quality counts (cumulative since the start)."""

    kind: Literal["device.quality"] = "device.quality"
    malformed: int = Field(0, ge=0)  # messages or bytes that could not be decoded
    duplicates: int = Field(0, ge=0)  # messages seen twice (a repeated counter)
    resyncs: int = Field(0, ge=0)  # times the decoder had to find the framing again


class WarningEvent(EventBase):
    """`warning`: something the operator should know while recording goes on (a slow disk, LSL
    ports open beyond this machine, ...); `code` is stable, `message` says what to do."""

    kind: Literal["warning"] = "warning"
    code: str = Field(pattern=r"^[a-z][a-z0-9_.]*$")
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ClockPublishedEvent(EventBase):
    """`clock.published`: the clock model an LSL outlet stamped a stretch of a regular stream
    with. Samples `x_from`..`x_to` went out at `offset_ns + period_ns * (x - x0)`, or, where
    that would not pass the stamp before them (`floor_ns`, of sample `floor_x`), at that stamp
    advanced by 0.9 of the period a sample until they meet the line (`needlelab.clock.
    published_times`): strictly increasing. Readers give those samples these times, so the file
    and what LSL recorders got agree."""

    kind: Literal["clock.published"] = "clock.published"
    stream: str
    x_from: int
    x_to: int
    x0: int
    offset_ns: float
    period_ns: float = Field(gt=0)
    floor_ns: int
    floor_x: int


Event = Annotated[
    StimSettingsEvent
    | DeviceStateEvent
    | GapEvent
    | MarkerEvent
    | PhaseEvent
    | RecordingEvent
    | NeedleSiteEvent
    | PromptEvent
    | ResponseEvent
    | CorrectionEvent
    | ProtocolEvent
    | TpdTrialEvent
    | LrjTrialEvent
    | NrsEvent
    | RomEvent
    | DeviceInfoEvent
    | DataQualityEvent
    | WarningEvent
    | ClockPublishedEvent,
    Field(discriminator="kind"),
]
"""Any session event, discriminated on `kind`."""

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def event_from_row(
    event_id: int, t_ns: int, kind: str, source: str, payload: dict[str, Any]
) -> Event:
    """Rebuild a typed event from its stored columns."""
    return EVENT_ADAPTER.validate_python(
        {"id": event_id, "t_ns": t_ns, "kind": kind, "source": source, **payload}
    )
