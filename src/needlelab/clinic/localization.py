"""The needling and localization log: the site in force, prompts, answers, scores and corrections.

The clinician sets the needle site (region, level, side, muscle, e-stim), presses a key when
asking the patient which level and side they feel, and enters the answer in a few keys. Every
step is a session event (`needle.site`, `prompt`, `response`, `correction`); nothing is kept
here that the events do not hold, so the scores can be recomputed from the session file alone
(`effective_responses`, `summarize`).

Scoring: the level error is the reported level's position minus the site's in the region's
level list (cranial to caudal), in segments; the side is correct when it is the site's side, or
"both" for a midline site. An answer with no prompt before it has no latency.

Entries are taken only while they can be recorded: the session opens the log when its file is
written and closes it before the file is (`close`); a closed log refuses every entry with
`EntryRefused`, so nothing is ever shown as entered that the file does not hold.

`AnswerKeys` is the keyboard grammar, kept free of Qt so that it is the same in tests, the
monitor and any other front end. `LevelKeys` says how each level of a region is keyed: by its
own number (in the lumbar region 3 is L3), neighbouring levels after their letter (T 1 2 is
T12, S 1 is S1).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from needlelab.config import LocalizationConfig
from needlelab.events import (
    AnswerSide,
    CorrectionEvent,
    Event,
    MarkerEvent,
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


class EntryRefused(RuntimeError):
    """An entry was refused because nothing would record it (before Start, after Stop, after a
    failed write); the message says why, in words for the clinician."""


@dataclass(frozen=True)
class SiteFields:
    """The fields of a needle site: what the site panel shows, and a site entry records."""

    region: str
    level: str
    side: SiteSide
    muscle: str
    estim_on: bool


class Localization:
    """One session's localization log, writing events to the hub.

    Safe to call from one thread at a time (the GUI's); a lock keeps the state consistent if a
    script drives it too, and orders every entry before or after `close`: an entry either was
    emitted before the log closed (so before the recording's last commit) or is refused.
    """

    def __init__(self, hub: Hub, config: LocalizationConfig, closed: str | None = None) -> None:
        self.hub = hub
        self.config = config
        self.region = config.region
        self.site: NeedleSiteEvent | None = None
        self.pending_prompt: PromptEvent | None = None
        self.responses: list[ResponseEvent] = []  # standing responses, oldest first
        self.notes: list[MarkerEvent] = []  # the clinician's notes, oldest first
        self._closed = closed
        self._lock = threading.Lock()

    # -- open and closed -------------------------------------------------------------------------
    @property
    def closed(self) -> str | None:
        """Why entries are refused now, or None while they are taken (and recorded)."""
        return self._closed

    def close(self, reason: str) -> None:
        """Refuse every entry from now on (`EntryRefused(reason)`). Returns once an entry under
        way on another thread has been emitted, so whatever was taken precedes what follows."""
        with self._lock:
            self._closed = reason

    def open(self) -> None:
        """Take entries again (the recording has started)."""
        with self._lock:
            self._closed = None

    def _check_open(self) -> None:
        if self._closed is not None:
            raise EntryRefused(self._closed)

    # -- the site --------------------------------------------------------------------------------
    @property
    def levels(self) -> list[str]:
        """The levels of the region in use."""
        return self.config.regions[self.region]

    def site_fields(self) -> SiteFields:
        """The site in force; before the first, the one a site entry starts from (the region's
        first level, right, the first configured muscle, e-stim off). The site panel shows
        this, and `set_site` fills what it is not given from it."""
        site = self.site
        if site is not None:
            return SiteFields(site.region, site.level, site.side, site.muscle, site.estim_on)
        muscle = self.config.muscles[0] if self.config.muscles else ""
        return SiteFields(self.region, self.levels[0], "R", muscle, False)

    def set_site(
        self,
        level: str | None = None,
        side: SiteSide | None = None,
        muscle: str | None = None,
        estim_on: bool | None = None,
        region: str | None = None,
    ) -> NeedleSiteEvent:
        """Change the site in force (unspecified fields stay as `site_fields` shows them; a new
        region without a level starts at its first): a `needle.site`."""
        with self._lock:
            self._check_open()
            now = self.site_fields()
            if region is not None and region not in self.config.regions:
                raise ValueError(f"unknown region {region!r}")
            region = region if region is not None else self.region
            levels = self.config.regions[region]
            if level is None:
                level = now.level if region == now.region else levels[0]
            if level not in levels:
                raise ValueError(f"level {level!r} is not in region {region!r}")
            event = NeedleSiteEvent(
                region=region,
                level=level,
                side=side if side is not None else now.side,
                muscle=muscle if muscle is not None else now.muscle,
                estim_on=estim_on if estim_on is not None else now.estim_on,
                source="clinician",
            )
            stamped = self.hub.emit(event)
            assert isinstance(stamped, NeedleSiteEvent)
            self.region = region
            self.site = stamped
            return stamped

    # -- prompts, answers, notes -----------------------------------------------------------------
    def prompt(self) -> PromptEvent:
        """The question is being asked now: a `prompt`; the next answer's latency runs from it."""
        with self._lock:
            self._check_open()
            site_id = self.site.id if self.site else None
            stamped = self.hub.emit(PromptEvent(site_id=site_id, source="clinician"))
            assert isinstance(stamped, PromptEvent)
            self.pending_prompt = stamped
            return stamped

    def _response(
        self, level: str | None, side: AnswerSide | None, descriptors: Iterable[str], text: str
    ) -> ResponseEvent:
        now = self.hub.clock.now_ns()
        prompt = self.pending_prompt
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
        self.pending_prompt = None
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
            self._check_open()
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
            self._check_open()
            if not self.responses:
                raise LookupError("there is no answer to correct")
            original = self.responses[-1]
            site = self.site if self.site and self.site.id == original.site_id else None
            site = site or self._site_by_id(original.site_id)
            levels = self.config.regions.get(site.region, self.levels) if site else self.levels
            error, right = score(levels, site, level, side)
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
            self.responses[-1] = replacement
            return replacement, correction

    def undo(self) -> CorrectionEvent:
        """Withdraw the last standing answer: a `correction` with no replacement."""
        with self._lock:
            self._check_open()
            if not self.responses:
                raise LookupError("there is no answer to undo")
            original = self.responses[-1]
            event = self.hub.emit(
                CorrectionEvent(replaces=original.id, reason="undone", source="clinician")
            )
            assert isinstance(event, CorrectionEvent)
            self.responses.pop()
            return event

    def note(self, text: str) -> MarkerEvent:
        """A free note of the clinician's (not an answer, never scored): a `marker`."""
        text = text.strip()
        if not text:
            raise ValueError("the note is empty")
        with self._lock:
            self._check_open()
            stamped = self.hub.emit(MarkerEvent(text=text, source="clinician"))
            assert isinstance(stamped, MarkerEvent)
            self.notes.append(stamped)
            return stamped

    def accuracy(self) -> Accuracy:
        """Running accuracy of the standing answers."""
        with self._lock:
            return summarize(self.responses)

    def restore(self, events: Iterable[object]) -> None:
        """Take the state that `events` leave (the file's, read back when a write failed): the
        last site, the standing answers, the notes and a prompt not yet answered."""
        events = list(events)
        with self._lock:
            sites = [e for e in events if isinstance(e, NeedleSiteEvent)]
            self.site = sites[-1] if sites else None
            if self.site is not None:
                self.region = self.site.region
            self.responses = effective_responses(
                e for e in events if isinstance(e, ResponseEvent | CorrectionEvent)
            )
            self.notes = [e for e in events if isinstance(e, MarkerEvent)]
            prompts = [e for e in events if isinstance(e, PromptEvent)]
            answered = {e.prompt_id for e in events if isinstance(e, ResponseEvent)}
            last = prompts[-1] if prompts else None
            self.pending_prompt = last if last is not None and last.id not in answered else None

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
    """An answer being keyed in, not yet committed (nothing of it is recorded)."""

    level: str | None = None
    side: AnswerSide | None = None
    descriptors: set[str] = field(default_factory=set)
    text: str = ""

    def empty(self) -> bool:
        """Whether nothing has been entered."""
        return self.level is None and self.side is None and not self.descriptors and not self.text


POSITION_KEYS = "1234567890"  # a region keyed by position: its 1st..10th level
ANSWER_SIDE_KEYS: dict[str, AnswerSide] = {"L": "L", "R": "R", "B": "both", "U": "unsure"}
SITE_SIDE_KEYS: dict[str, SiteSide] = {"L": "L", "R": "R", "M": "midline"}
NOTE_KEY = "N"  # the monitor's note field
RESERVED_LETTERS = frozenset({*ANSWER_SIDE_KEYS, *SITE_SIDE_KEYS, "E", NOTE_KEY})
"""Letters the grammar uses already: never the prefix of a level."""
_NUMBERED = re.compile(r"([A-Za-z])([0-9]{1,2})")


class LevelKeys:
    """How the levels of one region are keyed.

    A region whose levels are each a letter and a number (T10 … S2) is keyed by number: the
    levels of its main letter (the commonest: L in T10–S2) by their number alone (3 is L3), the
    others by their letter and number (T 1 2 is T12, S 1 is S1). The letter of a neighbouring
    level cannot be one the grammar already uses (L R B U M E N); a region that cannot be keyed
    so is keyed by position instead (1 … 9, 0: its 1st … 10th level). The level buttons show
    each level's keys either way.
    """

    def __init__(self, levels: Sequence[str]) -> None:
        self.levels = list(levels)
        by_number = self._by_number()
        self.by_number = by_number is not None
        self.sequences: dict[str, str] = by_number or {
            level: POSITION_KEYS[i] for i, level in enumerate(self.levels[: len(POSITION_KEYS)])
        }
        self._level_of = {keys: level for level, keys in self.sequences.items()}

    def _by_number(self) -> dict[str, str] | None:
        parsed = [_NUMBERED.fullmatch(level) for level in self.levels]
        if not self.levels or not all(parsed):
            return None
        letters = [m.group(1).upper() for m in parsed if m is not None]
        counts = {letter: letters.count(letter) for letter in letters}
        for main in sorted(counts, key=lambda c: (-counts[c], letters.index(c))):
            if set(counts) - {main} & RESERVED_LETTERS:
                continue
            keys = {
                level: ("" if letter == main else letter) + str(int(m.group(2)))
                for level, letter, m in zip(self.levels, letters, parsed, strict=True)
                if m is not None
            }
            if len(set(keys.values())) == len(keys):
                return keys
        return None

    def keys(self, level: str) -> str:
        """The keys of a level, as typed ("3", "T12")."""
        return self.sequences[level]

    def level(self, typed: str) -> str | None:
        """The level these keys name, or None."""
        return self._level_of.get(typed)

    def continues(self, typed: str) -> bool:
        """Whether some level's keys begin with `typed`."""
        return any(keys.startswith(typed) for keys in self._level_of)

    def longer(self, typed: str) -> bool:
        """Whether some level's keys begin with `typed` and go on (T1 could become T12)."""
        return any(keys.startswith(typed) and keys != typed for keys in self._level_of)


class AnswerKeys:
    """The localization panel's keyboard grammar, on key names as Qt writes them.

    - Space: prompt (the question is asked now).
    - A level's keys (`LevelKeys`: 3 is L3, T 1 2 is T12): the reported level; L, R, B, U: the
      reported side (left, right, both, unsure); F1-F12: toggle a descriptor.
    - Return: commit the answer. Level, side, Return is a whole answer in three keys.
    - Ctrl+Return: commit it as the correction of the last answer; Ctrl+Z: withdraw the last
      answer; Escape: clear the draft.
    - Alt with a level's keys (Alt+3, Alt+T Alt+1 Alt+2), Alt+L/R/M, Alt+E: the needle site's
      level, side (M: midline), e-stim on/off; the rest of the site stays as shown.

    Keys that could still go on (T 1 …) wait for the next; a key that does not continue them
    ends them. `press` returns what happened, for the status line, or None if the key is not
    one of these. While the log is closed every key is refused with the reason.
    """

    def __init__(self, log: Localization) -> None:
        self.log = log
        self.draft = AnswerDraft()
        self.typed = ""  # answer level keys that name no level yet ("T1")
        self.site_typed = ""  # site level keys (with Alt) that name no level yet
        self._level_keys: LevelKeys | None = None

    @property
    def level_keys(self) -> LevelKeys:
        """How the levels of the region in use are keyed."""
        levels = self.log.levels
        if self._level_keys is None or self._level_keys.levels != levels:
            self._level_keys = LevelKeys(levels)
        return self._level_keys

    def clear(self) -> None:
        """Forget the draft and any level keys under way."""
        self.draft = AnswerDraft()
        self.typed = self.site_typed = ""

    def press(self, key: str) -> str | None:
        """Handle one key (e.g. "3", "T", "L", "Return", "Ctrl+Z", "Alt+E", "F2")."""
        if not self._is_grammar_key(key):
            return None
        if self.log.closed is not None:
            self.clear()
            return f"{self.log.closed}: nothing entered"
        try:
            return self._press(key)
        except EntryRefused as exc:  # closed on another thread meanwhile
            self.clear()
            return f"{exc}: nothing entered"

    def _is_grammar_key(self, key: str) -> bool:
        if key.startswith("Alt+"):
            name = key.removeprefix("Alt+")
            return name in SITE_SIDE_KEYS or name == "E" or self._is_level_key(name)
        if key.startswith("F") and key[1:].isdigit():
            return 1 <= int(key[1:]) <= len(self.log.config.descriptors)
        return (
            key in ("Space", "Return", "Enter", "Ctrl+Return", "Ctrl+Enter", "Ctrl+Z", "Escape")
            or key in ANSWER_SIDE_KEYS
            or self._is_level_key(key)
        )

    def _is_level_key(self, key: str) -> bool:
        return len(key) == 1 and (key.isdigit() or self.level_keys.continues(key))

    def _press(self, key: str) -> str:
        log = self.log
        if key.startswith("Alt+"):
            return self._site_key(key.removeprefix("Alt+"))
        notes = [n for n in (self._end_site_keys(),) if n]
        if self._is_level_key(key):
            return self._with(notes, self._level_key(key))
        if key == "Space":
            prompt = log.prompt()
            return self._with(notes, f"prompt #{prompt.id}")
        if key == "Escape":
            self.clear()
            return self._with(notes, "draft cleared")
        if key == "Ctrl+Z":
            try:
                undone = log.undo()
            except LookupError as exc:
                return self._with(notes, str(exc))
            return self._with(notes, f"answer #{undone.replaces} withdrawn")
        if key in ANSWER_SIDE_KEYS:
            notes.append(self._end_level_keys())
            self.draft.side = ANSWER_SIDE_KEYS[key]
            return self._with(notes, f"side {self.draft.side}")
        if key.startswith("F"):
            word = log.config.descriptors[int(key[1:]) - 1]
            self.draft.descriptors ^= {word}
            return self._with(notes, f"{word} {'on' if word in self.draft.descriptors else 'off'}")
        # Return, Enter, Ctrl+Return, Ctrl+Enter
        if self.typed:
            level = self.level_keys.level(self.typed)
            if level is None:
                return self._with(notes, f"{self._unfinished(self.typed)}: nothing committed")
            self.draft.level, self.typed = level, ""
        return self._with(notes, self._commit(correction=key.startswith("Ctrl+")))

    @staticmethod
    def _with(notes: list[str], message: str) -> str:
        return "; ".join([*(n for n in notes if n), message])

    def _unfinished(self, typed: str) -> str:
        return f"{typed}… is not a level of {self.log.region}: finish it or press Escape"

    def _level_key(self, key: str) -> str:
        """A key of the answer's level."""
        keys, note = self.level_keys, ""
        typed = self.typed + key
        if not keys.continues(typed):
            note = self._end_level_keys()
            typed = key
            if not keys.continues(typed):
                return self._with([note], f"no level {key} in {self.log.region}")
        level = keys.level(typed)
        if level is not None and not keys.longer(typed):
            self.draft.level, self.typed = level, ""
            return self._with([note], f"level {level}")
        self.typed = typed
        return self._with([note], f"level {typed}…")

    def _end_level_keys(self) -> str:
        """A key that does not continue the level keys under way ends them: the level they
        name is taken; keys that name none are dropped, and said."""
        typed, self.typed = self.typed, ""
        if not typed:
            return ""
        level = self.level_keys.level(typed)
        if level is None:
            return f"{typed}… dropped (not a level of {self.log.region})"
        self.draft.level = level
        return f"level {level}"

    def _end_site_keys(self) -> str:
        typed, self.site_typed = self.site_typed, ""
        if not typed:
            return ""
        level = self.level_keys.level(typed)
        if level is None:
            return f"site {typed}… dropped (not a level of {self.log.region})"
        return self._site_message(self.log.set_site(level=level))

    @staticmethod
    def _site_message(site: NeedleSiteEvent) -> str:
        muscle = f" {site.muscle}" if site.muscle else ""
        return f"site {site.level} {site.side}{muscle}{' e-stim' if site.estim_on else ''}"

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

    def _site_key(self, key: str) -> str:
        log, keys = self.log, self.level_keys
        notes = [self._end_level_keys()] if self.typed else []
        if self._is_level_key(key):
            typed = self.site_typed + key
            if not keys.continues(typed):
                notes.append(self._end_site_keys())
                typed = key
                if not keys.continues(typed):
                    return self._with(notes, f"no level {key} in {log.region}")
            level = keys.level(typed)
            if level is not None and not keys.longer(typed):
                self.site_typed = ""
                return self._with(notes, self._site_message(log.set_site(level=level)))
            self.site_typed = typed
            return self._with(notes, f"site level {typed}…")
        notes.append(self._end_site_keys())
        if key in SITE_SIDE_KEYS:
            site = log.set_site(side=SITE_SIDE_KEYS[key])
        else:  # E
            site = log.set_site(estim_on=not log.site_fields().estim_on)
        return self._with(notes, self._site_message(site))
