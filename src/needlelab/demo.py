"""The scripted clinician of `needlelab demo`: phases and notes on the session clock."""

from __future__ import annotations

import threading

from needlelab.events import PhaseEvent
from needlelab.session import Session

DEMO_SCRIPT: list[tuple[float, str, str]] = [
    # (seconds after start, what, text)
    (0.5, "phase.start", "baseline"),
    (2.0, "mark", "patient prone, L3 right multifidus marked"),
    (4.0, "phase.end", "baseline"),
    (4.0, "phase.start", "needling"),
    (5.0, "mark", "needle in: L3 right multifidus"),
    (9.0, "mark", "patient: 'around the middle of my back, right side, dull ache'"),
    (14.0, "mark", "needle out"),
    (15.0, "phase.end", "needling"),
]


def demo_script(session: Session, stop: threading.Event) -> None:
    """Emit the demo's clinician actions at their times until the script ends or `stop` is set."""
    start_ns = session.clock.now_ns()
    for at_s, what, text in DEMO_SCRIPT:
        wait_s = at_s - (session.clock.now_ns() - start_ns) / 1e9
        if stop.wait(max(0.0, wait_s)):
            return
        if what == "mark":
            session.mark(text)
        else:
            boundary = "start" if what == "phase.start" else "end"
            session.hub.emit(PhaseEvent(name=text, boundary=boundary, source="clinician"))
