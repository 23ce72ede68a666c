"""The scripted clinician of `needlelab demo`: phases, notes, the needle site and the patient's
localization answers, on the session clock."""

from __future__ import annotations

import threading
from typing import Any

from needlelab.events import PhaseEvent
from needlelab.session import Session

DEMO_SCRIPT: list[tuple[float, str, Any]] = [
    # (seconds after start, what, argument)
    (0.5, "phase.start", "baseline"),
    (2.0, "mark", "patient prone, L3 right multifidus marked"),
    (4.0, "phase.end", "baseline"),
    (4.0, "phase.start", "needling"),
    (5.0, "site", {"level": "L3", "side": "R", "muscle": "multifidus", "estim_on": True}),
    (6.5, "prompt", None),
    (8.0, "answer", ("L3", "R", ("dull", "ache"))),
    (10.0, "prompt", None),
    (11.2, "answer", ("L5", "R", ("electric",))),
    (11.8, "correct", ("L4", "R", ("electric",))),  # the clinician misheard
    (13.0, "prompt", None),
    (14.1, "answer", ("L3", "both", ("tingling", "spreading"))),
    (14.5, "mark", "needle out"),
    (15.0, "site", {"estim_on": False}),
    (15.0, "phase.end", "needling"),
]


def demo_script(session: Session, stop: threading.Event) -> None:
    """Emit the demo's clinician actions at their times until the script ends or `stop` is set."""
    start_ns = session.clock.now_ns()
    log = session.localization
    for at_s, what, arg in DEMO_SCRIPT:
        wait_s = at_s - (session.clock.now_ns() - start_ns) / 1e9
        if stop.wait(max(0.0, wait_s)):
            return
        if what == "mark":
            session.mark(arg)
        elif what == "site":
            log.set_site(**arg)
        elif what == "prompt":
            log.prompt()
        elif what == "answer":
            log.answer(*arg)
        elif what == "correct":
            log.correct(*arg)
        else:
            boundary = "start" if what == "phase.start" else "end"
            session.hub.emit(PhaseEvent(name=arg, boundary=boundary, source="clinician"))
