"""The needling and localization log: the site in force, prompts, answers, scores and corrections.

The clinician sets the needle site (region, level, side, muscle, e-stim), presses a key when
asking the patient which level and side they feel, and enters the answer in a few keys. Every
step is a session event (`needle.site`, `prompt`, `response`, `correction`); nothing is kept
here that the events do not hold, so the scores can be recomputed from the session file alone
(`effective_responses`, `summarize`).

Scoring: the level error is the reported level's position minus the site's in the region's
level list (cranial to caudal), in segments; the side is correct when it is the site's side, or
"both" for a midline site. An answer with no prompt before it has no latency.

`AnswerKeys` is the keyboard grammar, kept free of Qt so that it is the same in tests, the
monitor and any other front end.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from needlelab.config import LocalizationConfig
from needlelab.events import (
    AnswerSide,
    CorrectionEvent,
    Event,
    NeedleSiteEvent,
    PromptEvent,
    ResponseEvent,
    SiteSide,
)
from needlelab.hub import Hub


def score(
    levels: Sequence[str], site: NeedleSiteEvent | None, level: str | None, side: str | None
) -> tuple[int | None, bool | None]:
    """(level error in segments, side correct) of an answer against `site`."""
    if site is None:
        return None, None
    error = None
    if level is not None and level in levels and site.level in levels:
        error = levels.index(level) - levels.index(site.level)
    correct = None
    if side is not None and side != "unsure":
        correct = side == site.side or (side == "both" and site.side == "midline")
    elif side == "unsure":
        correct = False
    return error, correct


def effective_responses(events: Iterable[Event]) -> list[ResponseEvent]:
    """The responses that stand: every `response` not withdrawn or replaced by a `correction`."""
    responses: list[ResponseEvent] = []
    replaced: set[int] = set()
    for event in events:
        if isinstance(event, ResponseEvent):
            responses.append(event)
        elif isinstance(event, CorrectionEvent):
            replaced.add(event.replaces)
    return [r for r in responses if r.id not in replaced]


@dataclass(frozen=True)
class Accuracy:
    """Localization accuracy over a set of responses (None where nothing could be scored)."""

    n: int
    level_exact_pct: float | None
    mean_abs_level_error: float | None
    side_correct_pct: float | None
    median_latency_ms: float | None


def summarize(responses: Sequence[ResponseEvent]) -> Accuracy:
    """Accuracy of the standing responses."""
    errors = [abs(r.level_error) for r in responses if r.level_error is not None]
    sides = [r.side_correct for r in responses if r.side_correct is not None]
    latencies = sorted(r.latency_ms for r in responses if r.latency_ms is not None)

    def pct(hits: int, n: int) -> float | None:
        return 100.0 * hits / n if n else None

    median = None
    if latencies:
        mid = len(latencies) // 2
        median = latencies[mid] if len(latencies) % 2 else (latencies[mid - 1] + latencies[mid]) / 2
    return Accuracy(
        n=len(responses),
        level_exact_pct=pct(sum(e == 0 for e in errors), len(errors)),
        mean_abs_level_error=sum(errors) / len(errors) if errors else None,
        side_correct_pct=pct(sum(sides), len(sides)),
        median_latency_ms=median,
    )


def format_accuracy(acc: Accuracy) -> str:
    """One line for people: counts, level and side accuracy, latency."""
    if not acc.n:
        return "no answers yet"

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{v:.0f} %"

    err = "–" if acc.mean_abs_level_error is None else f"{acc.mean_abs_level_error:.2f}"
    lat = "–" if acc.median_latency_ms is None else f"{acc.median_latency_ms / 1000:.1f} s"
    return (
        f"{acc.n} answers · level exact {pct(acc.level_exact_pct)} · mean |error| {err} "
        f"segments · side {pct(acc.side_correct_pct)} · median latency {lat}"
    )


class Localization:
    """One session's localization log, writing events to the hub.

    Safe to call from one thread at a time (the GUI's); a lock keeps the state consistent if a
    script drives it too.
    """

    def __init__(self, hub: Hub, config: LocalizationConfig) -> None:
        self.hub = hub
        self.config = config
        self.region = config.region
        self.site: NeedleSiteEvent | None = None
        self.pending_prompt: PromptEvent | None = None
        self.responses: list[ResponseEvent] = []  # standing responses, oldest first
        self._lock = threading.Lock()

    @property
    def levels(self) -> list[str]:
        """The levels of the region in use."""
        return self.config.regions[self.region]

    def set_site(
        self,
        level: str | None = None,
        side: SiteSide | None = None,
        muscle: str | None = None,
        estim_on: bool | None = None,
        region: str | None = None,
    ) -> NeedleSiteEvent:
        """Change the site in force (unspecified fields stay as they were): a `needle.site`."""
        with self._lock:
            if region is not None:
                if region not in self.config.regions:
                    raise ValueError(f"unknown region {region!r}")
                self.region = region
            old = self.site
            level = level if level is not None else (old.level if old else self.levels[0])
            if level not in self.levels:
                raise ValueError(f"level {level!r} is not in region {self.region!r}")
            event = NeedleSiteEvent(
                region=self.region,
                level=level,
                side=side if side is not None else (old.side if old else "R"),
                muscle=muscle if muscle is not None else (old.muscle if old else ""),
                estim_on=estim_on if estim_on is not None else (old.estim_on if old else False),
                source="clinician",
            )
            stamped = self.hub.emit(event)
            assert isinstance(stamped, NeedleSiteEvent)
            self.site = stamped
            return stamped

    def prompt(self) -> PromptEvent:
        """The question is being asked now: a `prompt`; the next answer's latency runs from it."""
        with self._lock:
            site_id = self.site.id if self.site else None
            stamped = self.hub.emit(PromptEvent(site_id=site_id, source="clinician"))
            assert isinstance(stamped, PromptEvent)
            self.pending_prompt = stamped
            return stamped

    def _response(
        self, level: str | None, side: AnswerSide | None, descriptors: Iterable[str], text: str
    ) -> ResponseEvent:
        now = self.hub.clock.now_ns()
        prompt, self.pending_prompt = self.pending_prompt, None
        error, correct = score(self.levels, self.site, level, side)
        event = ResponseEvent(
            t_ns=now,
            level=level,
            side=side,
            descriptors=self._ordered(descriptors),
            text=text,
            prompt_id=prompt.id if prompt else None,
            latency_ms=(now - prompt.t_ns) / 1e6 if prompt else None,
            site_id=self.site.id if self.site else None,
            level_error=error,
            side_correct=correct,
            source="clinician",
        )
        stamped = self.hub.emit(event)
        assert isinstance(stamped, ResponseEvent)
        return stamped

    def answer(
        self,
        level: str | None,
        side: AnswerSide | None,
        descriptors: Iterable[str] = (),
        text: str = "",
    ) -> ResponseEvent:
        """The patient's answer to the pending prompt, scored against the site: a `response`."""
        with self._lock:
            response = self._response(level, side, descriptors, text)
            self.responses.append(response)
            return response

    def correct(
        self,
        level: str | None,
        side: AnswerSide | None,
        descriptors: Iterable[str] = (),
        text: str = "",
    ) -> tuple[ResponseEvent, CorrectionEvent]:
        """Replace the last standing answer: a new `response` and a `correction` naming both.

        The replacement keeps the original's prompt and latency; it is scored against the site
        that was in force when the original was given."""
        with self._lock:
            if not self.responses:
                raise LookupError("there is no answer to correct")
            original = self.responses.pop()
            site = self.site if self.site and self.site.id == original.site_id else None
            site = site or self._site_by_id(original.site_id)
            error, right = score(self.levels, site, level, side)
            replacement = self.hub.emit(
                original.model_copy(
                    update={
                        "id": -1,
                        "t_ns": -1,
                        "level": level,
                        "side": side,
                        "descriptors": self._ordered(descriptors),
                        "text": text,
                        "level_error": error,
                        "side_correct": right,
                    }
                )
            )
            assert isinstance(replacement, ResponseEvent)
            correction = self.hub.emit(
                CorrectionEvent(
                    replaces=original.id,
                    replacement=replacement.id,
                    reason="corrected",
                    source="clinician",
                )
            )
            assert isinstance(correction, CorrectionEvent)
            self.responses.append(replacement)
            return replacement, correction

    def undo(self) -> CorrectionEvent:
        """Withdraw the last standing answer: a `correction` with no replacement."""
        with self._lock:
            if not self.responses:
                raise LookupError("there is no answer to undo")
            original = self.responses.pop()
            event = self.hub.emit(
                CorrectionEvent(replaces=original.id, reason="undone", source="clinician")
            )
            assert isinstance(event, CorrectionEvent)
            return event

    def accuracy(self) -> Accuracy:
        """Running accuracy of the standing answers."""
        with self._lock:
            return summarize(self.responses)

    def _ordered(self, descriptors: Iterable[str]) -> tuple[str, ...]:
        """The chosen descriptors in the configured order; unknown ones are refused."""
        chosen = set(descriptors)
        unknown = chosen - set(self.config.descriptors)
        if unknown:
            raise ValueError(f"unknown descriptors {sorted(unknown)}")
        return tuple(d for d in self.config.descriptors if d in chosen)

    def _site_by_id(self, site_id: int | None) -> NeedleSiteEvent | None:
        for event in self.hub.recent_events():
            if isinstance(event, NeedleSiteEvent) and event.id == site_id:
                return event
        return None


@dataclass
class AnswerDraft:
    """An answer being keyed in, not yet committed."""

    level: str | None = None
    side: AnswerSide | None = None
    descriptors: set[str] = field(default_factory=set)
    text: str = ""

    def empty(self) -> bool:
        """Whether nothing has been entered."""
        return self.level is None and self.side is None and not self.descriptors and not self.text


LEVEL_KEYS = "1234567890"  # the region's 1st..10th level
ANSWER_SIDE_KEYS: dict[str, AnswerSide] = {"L": "L", "R": "R", "B": "both", "U": "unsure"}
SITE_SIDE_KEYS: dict[str, SiteSide] = {"L": "L", "R": "R", "M": "midline"}


class AnswerKeys:
    """The localization panel's keyboard grammar, on key names as Qt writes them.

    - Space: prompt (the question is asked now).
    - 1-9, 0: the reported level, the region's 1st to 10th; L, R, B, U: the reported side (left,
      right, both, unsure); F1-F12: toggle a descriptor.
    - Return: commit the answer. Level, side, Return is a whole answer in three keys.
    - Ctrl+Return: commit it as the correction of the last answer; Ctrl+Z: withdraw the last
      answer; Escape: clear the draft.
    - Alt+1-0, Alt+L/R/M, Alt+E: the needle site's level, side (M: midline), e-stim on/off.

    `press` returns what happened, for the status line, or None if the key is not one of these.
    """

    def __init__(self, log: Localization) -> None:
        self.log = log
        self.draft = AnswerDraft()

    def press(self, key: str) -> str | None:
        """Handle one key (e.g. "3", "L", "Return", "Ctrl+Z", "Alt+E", "F2")."""
        log = self.log
        if key.startswith("Alt+"):
            return self._site_key(key.removeprefix("Alt+"))
        if key == "Space":
            prompt = log.prompt()
            return f"prompt #{prompt.id}"
        if key in LEVEL_KEYS and len(key) == 1:
            index = LEVEL_KEYS.index(key)
            if index >= len(log.levels):
                return f"no level {key} in {log.region}"
            self.draft.level = log.levels[index]
            return f"level {self.draft.level}"
        if key in ANSWER_SIDE_KEYS:
            self.draft.side = ANSWER_SIDE_KEYS[key]
            return f"side {self.draft.side}"
        if key.startswith("F") and key[1:].isdigit():
            index = int(key[1:]) - 1
            if not 0 <= index < len(log.config.descriptors):
                return None
            word = log.config.descriptors[index]
            self.draft.descriptors ^= {word}
            return f"{word} {'on' if word in self.draft.descriptors else 'off'}"
        if key in ("Return", "Enter", "Ctrl+Return", "Ctrl+Enter"):
            return self._commit(correction=key.startswith("Ctrl+"))
        if key == "Ctrl+Z":
            try:
                undone = log.undo()
            except LookupError as exc:
                return str(exc)
            return f"answer #{undone.replaces} withdrawn"
        if key == "Escape":
            self.draft = AnswerDraft()
            return "draft cleared"
        return None

    def _commit(self, correction: bool) -> str:
        draft = self.draft
        if draft.empty():
            return "nothing entered"
        args = (draft.level, draft.side, draft.descriptors, draft.text)
        if correction:
            try:
                response, fix = self.log.correct(*args)
            except LookupError as exc:
                return str(exc)
            message = f"answer #{fix.replaces} corrected by #{response.id}"
        else:
            response = self.log.answer(*args)
            message = f"answer #{response.id}"
        self.draft = AnswerDraft()
        if response.level_error is not None:
            message += f": level error {response.level_error:+d}"
        if response.side_correct is not None:
            message += f", side {'right' if response.side_correct else 'wrong'}"
        return message

    def _site_key(self, key: str) -> str | None:
        log = self.log
        if key in LEVEL_KEYS and len(key) == 1:
            index = LEVEL_KEYS.index(key)
            if index >= len(log.levels):
                return f"no level {key} in {log.region}"
            site = log.set_site(level=log.levels[index])
        elif key in SITE_SIDE_KEYS:
            site = log.set_site(side=SITE_SIDE_KEYS[key])
        elif key == "E":
            site = log.set_site(estim_on=not (log.site.estim_on if log.site else False))
        else:
            return None
        return f"site {site.level} {site.side}{' e-stim' if site.estim_on else ''}"
