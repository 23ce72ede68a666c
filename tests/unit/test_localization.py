"""The localization log and its keyboard grammar, on a real hub: events, scores, corrections."""

from __future__ import annotations

import time

import pytest

from needlelab.clinic.localization import (
    AnswerKeys,
    EntryRefused,
    LevelKeys,
    Localization,
    effective_responses,
    score,
    summarize,
)
from needlelab.clock import SessionClock
from needlelab.config import LUMBAR_LEVELS, LocalizationConfig
from needlelab.events import (
    CorrectionEvent,
    MarkerEvent,
    NeedleSiteEvent,
    PromptEvent,
    ResponseEvent,
)
from needlelab.hub import Hub


@pytest.fixture
def keys() -> AnswerKeys:
    return AnswerKeys(Localization(Hub(SessionClock()), LocalizationConfig()))


def press(keys: AnswerKeys, *names: str) -> list[str | None]:
    return [keys.press(name) for name in names]


def test_three_keys_make_a_scored_answer_with_its_latency(keys: AnswerKeys) -> None:
    press(keys, "Alt+3", "Alt+R", "Alt+E")  # site: L3 (its own number), right, e-stim on
    site = keys.log.site
    assert site is not None and (site.level, site.side, site.estim_on) == ("L3", "R", True)
    press(keys, "Space")
    time.sleep(0.05)
    message = press(keys, "4", "L", "Return")[-1]
    assert message == f"answer #{site.id + 2}: level error +1, side wrong"
    events = keys.log.hub.recent_events()
    assert [type(e) for e in events] == [NeedleSiteEvent] * 3 + [PromptEvent, ResponseEvent]
    response = events[-1]
    assert isinstance(response, ResponseEvent)
    assert (response.level, response.side, response.level_error, response.side_correct) == (
        "L4", "L", 1, False,
    )  # fmt: skip
    assert response.prompt_id == events[-2].id and response.site_id == site.id
    assert response.latency_ms is not None and 50 <= response.latency_ms < 1000
    assert (response.t_ns - events[-2].t_ns) / 1e6 == pytest.approx(response.latency_ms)


def test_descriptors_and_text_ride_along_in_configured_order(keys: AnswerKeys) -> None:
    press(keys, "Alt+3", "Space", "3", "R", "F6", "F1", "F3", "F3")  # electric, sharp, ache off
    keys.draft.text = "deep, like a bruise"
    press(keys, "Return")
    (response,) = keys.log.responses
    assert response.descriptors == ("sharp", "electric") and response.text == "deep, like a bruise"
    assert (response.level_error, response.side_correct) == (0, True)
    assert keys.draft.empty()


def test_undo_and_correct_leave_an_audit_trail(keys: AnswerKeys) -> None:
    press(keys, "Alt+3", "Alt+R")
    press(keys, "Space", "3", "R", "Return")  # right
    press(keys, "Space", "5", "L", "Return")  # wrong: L5, left
    press(keys, "S", "1", "R", "Ctrl+Return")  # correct the last one: S1 right, still a level off
    press(keys, "Space", "T", "1", "0", "B", "Return")
    assert press(keys, "Ctrl+Z")[0] is not None  # withdraw the T10 answer
    events = keys.log.hub.recent_events()
    responses = [e for e in events if isinstance(e, ResponseEvent)]
    corrections = [e for e in events if isinstance(e, CorrectionEvent)]
    assert len(responses) == 4 and len(corrections) == 2  # nothing is rewritten or removed
    fix, undo = corrections
    assert (fix.replaces, fix.replacement, fix.reason) == (responses[1].id, responses[2].id,
                                                           "corrected")  # fmt: skip
    assert (undo.replaces, undo.replacement, undo.reason) == (responses[3].id, None, "undone")
    # The correction keeps the prompt and latency of what it corrects, and is scored anew.
    assert responses[2].prompt_id == responses[1].prompt_id
    assert responses[2].latency_ms == responses[1].latency_ms
    assert (responses[2].level, responses[2].level_error, responses[2].side_correct) == (
        "S1", 3, True,
    )  # fmt: skip
    standing = effective_responses(events)
    assert [r.id for r in standing] == [responses[0].id, responses[2].id]
    assert standing == keys.log.responses
    accuracy = summarize(standing)
    assert (accuracy.n, accuracy.level_exact_pct, accuracy.mean_abs_level_error) == (2, 50.0, 1.5)
    assert accuracy.side_correct_pct == 100.0
    assert keys.log.accuracy() == accuracy


def test_scoring_rules() -> None:
    site = NeedleSiteEvent(region="lumbar", level="L3", side="midline")
    assert score(LUMBAR_LEVELS, site, "L1", "both") == (-2, True)
    assert score(LUMBAR_LEVELS, site, None, "L") == (None, False)
    assert score(LUMBAR_LEVELS, site, "S2", "unsure") == (4, False)
    assert score(LUMBAR_LEVELS, None, "L3", "R") == (None, None)


def test_keys_that_make_no_sense_say_so_and_change_nothing(keys: AnswerKeys) -> None:
    assert press(keys, "Return", "Ctrl+Z", "Ctrl+Return", "X") == [
        "nothing entered", "there is no answer to undo", "nothing entered", None,
    ]  # fmt: skip
    assert keys.log.hub.recent_events() == []
    short = AnswerKeys(
        Localization(
            Hub(SessionClock()),
            LocalizationConfig(regions={"neck": ["C5", "C6", "C7"]}, region="neck"),
        )
    )
    assert press(short, "4") == ["no level 4 in neck"]


def test_a_region_must_fit_the_level_keys() -> None:
    with pytest.raises(ValueError, match="1 to 10 distinct levels"):
        LocalizationConfig(regions={"thoracic": [f"T{i}" for i in range(1, 13)]}, region="thoracic")
    with pytest.raises(ValueError, match="region 'neck' is not one of"):
        LocalizationConfig(region="neck")


def test_level_keys_are_the_levels_own_numbers_with_a_letter_for_the_neighbours(
    keys: AnswerKeys,
) -> None:
    # T10..S2: L is the region's own letter; T and S levels after their letter.
    typed = {"3": "L3", "1": "L1", "5": "L5", "T10": "T10", "T11": "T11", "T12": "T12",
             "S1": "S1", "S2": "S2"}  # fmt: skip
    for sequence, level in typed.items():
        messages = press(keys, *sequence)
        assert messages[-1] == f"level {level}", sequence
        assert keys.draft.level == level and keys.typed == ""
    assert press(keys, "T", "1") == ["level T…", "level T1…"]  # T1 could go on: it waits
    assert press(keys, "R")[0] == "T1… dropped (not a level of lumbar); side R"
    assert keys.draft.level == "S2"  # the last level that was whole stands
    assert press(keys, "6") == ["no level 6 in lumbar"]  # no L6: nothing changes
    assert press(keys, "T", "1", "Return") == [
        "level T…", "level T1…",
        "T1… is not a level of lumbar: finish it or press Escape: nothing committed",
    ]  # fmt: skip
    assert keys.log.hub.recent_events() == []
    assert press(keys, "Escape") == ["draft cleared"] and keys.typed == "" and keys.draft.empty()


def test_site_keys_take_the_same_numbers_and_record_what_the_panel_shows(
    keys: AnswerKeys,
) -> None:
    shown = keys.log.site_fields()  # before any site: what the site panel shows
    assert (shown.level, shown.side, shown.muscle, shown.estim_on) == (
        "T10", "R", "multifidus", False,
    )  # fmt: skip
    press(keys, "Alt+3")
    site = keys.log.site
    assert site is not None and (site.level, site.side, site.muscle) == ("L3", "R", "multifidus")
    press(keys, "Alt+T", "Alt+1", "Alt+2", "Alt+L", "Alt+E")
    sites = [e for e in keys.log.hub.recent_events() if isinstance(e, NeedleSiteEvent)]
    assert [(s.level, s.side, s.muscle, s.estim_on) for s in sites] == [
        ("L3", "R", "multifidus", False), ("T12", "R", "multifidus", False),
        ("T12", "L", "multifidus", False), ("T12", "L", "multifidus", True),
    ]  # fmt: skip
    # The answer is scored against T12 in segments of the region's list.
    press(keys, "Space", "1", "L", "Return")
    (answer,) = keys.log.responses
    assert (answer.level, answer.level_error, answer.side_correct) == ("L1", 1, True)


def test_regions_are_keyed_by_number_when_they_can_be_and_by_position_otherwise() -> None:
    keyed = {
        ("C5", "C6", "C7", "T1", "T2"): ["5", "6", "7", "T1", "T2"],
        ("T11", "T12", "L1", "L2"): ["T11", "T12", "1", "2"],  # L main: T is a free letter
        ("T1", "T10"): ["1", "10"],  # 1 waits for a 0 (see below)
        ("L4-L5", "L5-S1"): ["1", "2"],  # not letter+number: by position
        ("R1", "B1", "X1"): ["1", "2", "3"],  # neighbours' letters are the side keys
    }
    for levels, expected in keyed.items():
        level_keys = LevelKeys(list(levels))
        assert [level_keys.keys(level) for level in levels] == expected, levels
    pair = AnswerKeys(
        Localization(
            Hub(SessionClock()),
            LocalizationConfig(regions={"upper": ["T1", "T10"]}, region="upper"),
        )
    )
    assert press(pair, "1") == ["level 1…"]
    assert press(pair, "R") == ["level T1; side R"]  # a key that does not go on ends it
    assert press(pair, "1", "0") == ["level 1…", "level T10"]


def test_a_closed_log_refuses_every_entry_and_records_nothing(keys: AnswerKeys) -> None:
    log = keys.log
    press(keys, "Alt+3", "Space", "3", "R", "Return")
    before = log.hub.recent_events()
    press(keys, "4")  # a draft under way when the recording stops
    log.close("the recording has stopped")
    said = press(keys, "Space", "4", "L", "Return", "Ctrl+Z", "Alt+5", "F1", "Escape")
    assert said == ["the recording has stopped: nothing entered"] * 8
    assert keys.draft.empty() and keys.typed == ""
    for entry in (log.prompt, lambda: log.answer("L3", "R"), log.undo,
                  lambda: log.set_site(level="L4"), lambda: log.note("a note")):  # fmt: skip
        with pytest.raises(EntryRefused, match="the recording has stopped"):
            entry()
    assert log.hub.recent_events() == before and len(log.responses) == 1
    assert press(keys, "X") == [None]  # not a key of the grammar: not taken, open or closed
    log.open()
    assert press(keys, "Ctrl+Z")[0] == f"answer #{before[-1].id} withdrawn"


def test_a_note_is_a_marker_never_an_answer(keys: AnswerKeys) -> None:
    note = keys.log.note("  patient moved, needle out  ")
    assert isinstance(note, MarkerEvent) and note.text == "patient moved, needle out"
    assert keys.log.hub.recent_events() == [note] and keys.log.responses == []
    with pytest.raises(ValueError, match="the note is empty"):
        keys.log.note("   ")
