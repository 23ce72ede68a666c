"""What the session file holds, read back with `open_session` and judged by the tests' own
rules (not the monitor's), and what the monitor shows, for comparing the two."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from needlelab.events import CorrectionEvent, MarkerEvent, NeedleSiteEvent, ResponseEvent
from needlelab.monitor.window import MonitorWindow
from needlelab.record import open_session
from needlelab.session import Session


@dataclass(frozen=True)
class Entries:
    """The clinician's entries: standing answer ids (newest first), their count and level-exact
    percentage, the last site, the note ids (newest first)."""

    answers: tuple[int, ...]
    level_exact_pct: float | None
    site: tuple[str, str, str, bool] | None  # level, side, muscle, e-stim
    notes: tuple[int, ...]


def file_entries(path: Path) -> Entries:
    """The entries the file holds: every response not named by a correction's `replaces`."""
    if not path.exists():
        return Entries((), None, None, ())
    with open_session(path) as s:
        events = s.events()
    replaced = {e.replaces for e in events if isinstance(e, CorrectionEvent)}
    standing = [e for e in events if isinstance(e, ResponseEvent) and e.id not in replaced]
    scored = [r for r in standing if r.level_error is not None]
    exact = None  # in whole percent, as a screen shows it
    if scored:
        exact = float(round(100.0 * sum(r.level_error == 0 for r in scored) / len(scored)))
    sites = [e for e in events if isinstance(e, NeedleSiteEvent)]
    site = (
        (sites[-1].level, sites[-1].side, sites[-1].muscle, sites[-1].estim_on) if sites else None
    )
    notes = [e.id for e in events if isinstance(e, MarkerEvent)]
    return Entries(tuple(r.id for r in reversed(standing)), exact, site, tuple(reversed(notes)))


def screen_entries(window: MonitorWindow) -> Entries:
    """The entries the monitor shows: its answer and note lists, accuracy line and site."""
    panel = window.localization_panel
    answers = tuple(int(line.split()[0].lstrip("#")) for line in panel.shown_answers())
    accuracy = panel.accuracy_label.text()
    exact: float | None = None
    if "level exact" in accuracy and "level exact –" not in accuracy:
        exact = float(accuracy.split("level exact ")[1].split(" %")[0])
    count = int(accuracy.split(" answers")[0]) if accuracy[:1].isdigit() else 0
    assert count == len(answers), (accuracy, answers)
    site = None
    if not panel.site_label.text().startswith("no site set"):
        site = (
            panel.level_combo.currentText(), panel.side_combo.currentText(),
            panel.muscle_combo.currentText(), panel.estim_check.isChecked(),
        )  # fmt: skip
        words = panel.site_label.text().split(" · ")[0].split()
        assert words[:2] == [site[0], site[1]], (panel.site_label.text(), site)
    notes = tuple(int(line.split()[0].lstrip("#")) for line in panel.shown_notes())
    return Entries(answers, exact, site, notes)


def committed(session: Session, timeout_s: float = 10.0) -> None:
    """Wait until the file holds every event emitted so far (read from the file itself)."""
    events = session.hub.recent_events()
    if not events or not session.path.exists():
        return
    last = events[-1].id
    deadline = time.monotonic() + timeout_s
    while True:
        with open_session(session.path) as s:
            ids = [e.id for e in s.events()]
        if ids and max(ids) >= last:
            return
        if not session.recording or time.monotonic() > deadline:
            return  # what is not in the file by now never will be: the comparison says so
        time.sleep(0.02)
