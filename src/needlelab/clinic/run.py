"""Walking a session through its protocol: phases, TPD tracks, ratings and LRJ trials as events.

`ProtocolRun` is what the monitor's phase panel and the demo's simulated patient both drive. It
records the template itself first (a `protocol` event, so the file alone says how it was
scored), then one `phase` start/end pair per phase, and every measurement as its own event:
`tpd.trial`, `lrj.trial`, `rating.nrs`, `rating.rom`. The needling phase sets the needle site
(with e-stim as the template says) through the session's localization log.

A TPD trial takes its distance from a caliper when one was pressed for it: `trial_press()` is
the last button press of any caliper stream since the trial was put up (the previous answer, or
the phase's start), so a press is never taken for two trials.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np

from needlelab.clinic.localization import Localization
from needlelab.clinic.protocol import Phase, Protocol
from needlelab.clinic.tpd import Answer, Orientation, Staircase, TpdTrial
from needlelab.events import (
    LrjTrialEvent,
    NrsEvent,
    PhaseEvent,
    ProtocolEvent,
    RomEvent,
    TpdTrialEvent,
)
from needlelab.hub import Hub

Side = Literal["L", "R"]


@dataclass
class TpdTrack:
    """One staircase of a TPD phase: which site, orientation and moment it measures."""

    name: str
    site: str
    orientation: Orientation
    when: Literal["pre", "post"]
    staircase: Staircase


class ProtocolRun:
    """The protocol's progress in one session. Calls come from one thread at a time."""

    def __init__(self, hub: Hub, localization: Localization, protocol: Protocol) -> None:
        self.hub = hub
        self.localization = localization
        self.protocol = protocol
        self.index = -1  # the current phase; -1 before the first
        self.tracks: list[TpdTrack] = []
        self._lock = threading.Lock()
        self._lrj_trials: dict[str, int] = {}
        self._trial_since_ns = 0  # when the pending TPD trial was put up (session clock)
        hub.emit(
            ProtocolEvent(
                name=protocol.protocol.name,
                template=protocol.model_dump(mode="json"),
                source="session",
            )
        )

    @property
    def phase(self) -> Phase | None:
        """The phase in progress, or None before the first and after the last."""
        return (
            self.protocol.phases[self.index]
            if 0 <= self.index < len(self.protocol.phases)
            else None
        )

    @property
    def next_phase(self) -> Phase | None:
        """The phase after the current one."""
        k = self.index + 1
        return self.protocol.phases[k] if k < len(self.protocol.phases) else None

    @property
    def finished(self) -> bool:
        """Whether every phase has been done."""
        return self.index >= len(self.protocol.phases)

    def advance(self) -> Phase | None:
        """End the current phase and start the next (`phase` events); the new phase or None."""
        with self._lock:
            hub = self.hub
            if self.phase is not None:
                hub.emit(PhaseEvent(name=self.phase.name, boundary="end", source="clinician"))
                if self.phase.kind == "needling":
                    self.localization.set_site(estim_on=False)
            self.index += 1
            phase = self.phase
            self.tracks = []
            if phase is None:
                return None
            started = hub.emit(PhaseEvent(name=phase.name, boundary="start", source="clinician"))
            self._trial_since_ns = started.t_ns
            if phase.kind == "tpd":
                self.tracks = self._tracks(phase)
            elif phase.kind == "needling" and phase.site is not None:
                site = self.protocol.site(phase.site)
                self.localization.set_site(
                    region=site.region,
                    level=site.level,
                    side=site.side,
                    muscle=site.muscle,
                    estim_on=phase.estim,
                )
            return phase

    def _tracks(self, phase: Phase) -> list[TpdTrack]:
        assert phase.when in ("pre", "post")  # the template says so (Phase validates it)
        tracks = []
        for s, site in enumerate(phase.sites):
            for o, orientation in enumerate(self.protocol.tpd.orientations):
                name = f"{phase.when} {site} {orientation}".strip()
                seed = hash((self.index, s, o)) & 0xFFFF  # catch-trial placement per track
                tracks.append(
                    TpdTrack(
                        name, site, orientation, phase.when,
                        Staircase(self.protocol.tpd, name, seed=seed),
                    )
                )  # fmt: skip
        return tracks

    # -- measurements -----------------------------------------------------------------------------
    def trial_press(self) -> float | None:
        """The distance (mm) of the last caliper button press since the pending TPD trial was
        put up, or None if no caliper was pressed for it."""
        return caliper_press(self.hub, self._trial_since_ns)

    def current_track(self) -> TpdTrack | None:
        """The first TPD track of this phase that is not done."""
        return next((t for t in self.tracks if not t.staircase.done), None)

    def tpd_answer(
        self, track: TpdTrack, answer: Answer, distance_mm: float | None = None
    ) -> TpdTrialEvent:
        """Record the answer to the track's pending trial. `distance_mm` is the caliper's reading
        when there is one (the distance actually applied); otherwise the staircase's distance."""
        trial: TpdTrial
        trial, correct, reversal = track.staircase.answer(answer)
        event = self.hub.emit(
            TpdTrialEvent(
                staircase=track.name,
                site=track.site,
                orientation=track.orientation,
                when=track.when,
                distance_mm=trial.distance_mm if distance_mm is None else distance_mm,
                distance_source="manual" if distance_mm is None else "caliper",
                points=trial.points,
                answer=answer,
                correct=correct,
                step_mm=trial.step_mm,
                reversal=reversal,
                trial=trial.number,
                source="clinician",
            )
        )
        assert isinstance(event, TpdTrialEvent)
        self._trial_since_ns = event.t_ns
        return event

    def nrs(self, value: int) -> NrsEvent:
        """Pain now, 0-10."""
        when = self.phase.when if self.phase else ""
        event = self.hub.emit(NrsEvent(value=value, when=when, source="clinician"))
        assert isinstance(event, NrsEvent)
        return event

    def rom(self, movement: str, degrees: float) -> RomEvent:
        """Range of motion of one movement."""
        when = self.phase.when if self.phase else ""
        event = self.hub.emit(
            RomEvent(movement=movement, degrees=degrees, when=when, source="clinician")
        )
        assert isinstance(event, RomEvent)
        return event

    def lrj_trial(
        self,
        stimulus: str,
        body_part: str,
        true_side: Side,
        answer: Side | None,
        shown_t_ns: int,
        answered_t_ns: int | None,
    ) -> LrjTrialEvent:
        """One left/right judgement: RT from the stimulus frame to the answer (None: timed out)."""
        block = self.phase.when if self.phase else ""
        number = self._lrj_trials[block] = self._lrj_trials.get(block, 0) + 1
        rt = None if answered_t_ns is None else (answered_t_ns - shown_t_ns) / 1e6
        event = self.hub.emit(
            LrjTrialEvent(
                t_ns=answered_t_ns if answered_t_ns is not None else -1,
                block=block,
                stimulus=stimulus,
                body_part=body_part,
                true_side=true_side,
                answer=answer,
                correct=answer == true_side,
                rt_ms=rt,
                shown_t_ns=shown_t_ns,
                trial=number,
                source="patient",
            )
        )
        assert isinstance(event, LrjTrialEvent)
        return event


def caliper_press(hub: Hub, since_ns: int) -> float | None:
    """The distance (mm) of the latest button press of any caliper stream in the hub's live
    buffers at or after `since_ns` (session clock), or None."""
    best: tuple[int, float] | None = None
    for spec in list(hub.streams.values()):
        if spec.type != "Caliper":
            continue
        t_ns, raw = hub.ring(spec.name).latest()
        values = raw.astype(np.float64)
        pressed = np.flatnonzero((values[:, 1] > 0.5) & (t_ns >= since_ns))
        if len(pressed):
            k = int(pressed[-1])
            if best is None or int(t_ns[k]) > best[0]:
                best = (int(t_ns[k]), float(values[k, 0]))
    return None if best is None else best[1]
