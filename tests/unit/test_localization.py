"""The localization log and its keyboard grammar, on a real hub: events, scores, corrections."""

from __future__ import annotations

import time

import pytest

from needlelab.clinic.localization import (
    AnswerKeys,
    Localization,
    effective_responses,
    score,
    summarize,
)
from needlelab.clock import SessionClock
from needlelab.config import LUMBAR_LEVELS, LocalizationConfig
from needlelab.events import CorrectionEvent, NeedleSiteEvent, PromptEvent, ResponseEvent
from needlelab.hub import Hub


@pytest.fixture
def keys() -> AnswerKeys:
    return AnswerKeys(Localization(Hub(SessionClock()), LocalizationConfig()))


def press(keys: AnswerKeys, *names: str) -> list[str | None]:
    return [keys.press(name) for name in names]


def test_three_keys_make_a_scored_answer_with_its_latency(keys: AnswerKeys) -> None:
    press(keys, "Alt+6", "Alt+R", "Alt+E")  # site: L3 (6th of T10..S2), right, e-stim on
    site = keys.log.site
    assert site is not None and (site.level, site.side, site.estim_on) == ("L3", "R", True)
    press(keys, "Space")
    time.sleep(0.05)
    message = press(keys, "7", "L", "Return")[-1]
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
    press(keys, "Alt+6", "Space", "6", "R", "F6", "F1", "F3", "F3")  # electric, sharp, ache off
    keys.draft.text = "deep, like a bruise"
    press(keys, "Return")
    (response,) = keys.log.responses
    assert response.descriptors == ("sharp", "electric") and response.text == "deep, like a bruise"
    assert (response.level_error, response.side_correct) == (0, True)
    assert keys.draft.empty()


def test_undo_and_correct_leave_an_audit_trail(keys: AnswerKeys) -> None:
    press(keys, "Alt+6", "Alt+R")
    press(keys, "Space", "6", "R", "Return")  # right
    press(keys, "Space", "8", "L", "Return")  # wrong: L5, left
    press(keys, "9", "R", "Ctrl+Return")  # correct the last one: S1 right, still a level off
    press(keys, "Space", "1", "B", "Return")
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
