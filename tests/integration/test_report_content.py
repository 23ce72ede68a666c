"""The session report as a clinician gets it, from a real recording through `needlelab report`.

A session is recorded through the real drivers (the stimulator simulator on a pty through the
serial driver, the EMG simulator through bleak to a bumble peripheral) while this test walks the
shipped protocol `low-back-l3` itself: quick answers, the needling phase a few seconds long. The
simulated stimulator runs its own random pattern whatever the phase (the walk waits for it to
switch before and during needling), so it is on and switches outside needling as well as within
it: the report must count the dose and EMG around e-stim within needling only, and flag the
rest. Expected values come from outside the report: phase names from the protocol's TOML, the
dose from the file's raw `stim.settings` and `phase` rows read with sqlite3.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from needlelab.clinic.lrj import block_stimuli
from needlelab.config import parse_config
from needlelab.events import StimSettingsEvent
from needlelab.resources import configs_dir
from needlelab.session import Session
from needlelab.testing.plugin import wait_until
from tests.unit.test_report import section_rows

PROTOCOL = configs_dir() / "protocols" / "low-back-l3.toml"
PATIENT = "RPT01"
SECTIONS_WITH_A_FIGURE = (
    "Phases",  # the timeline of the session
    "Two-point discrimination",  # staircases
    "Localization",  # the map: level and side answered vs needled
    "Left/right judgement",
    "Pain and movement",
    "EMG around e-stim",
)
CONFIG = {
    "session": {"patient_id": PATIENT, "commit_interval_ms": 50, "protocol": "low-back-l3"},
    "devices": [
        {"kind": "stim_serial", "name": "stim", "profile": "needlelab-stim-ascii",
         "channels": [1, 2], "poll_interval_ms": 100,
         "simulator": {"transport": "pty", "pattern": "random", "seed": 3}},
        {"kind": "emg_ble", "name": "emg", "profile": "needlelab-emg-ref",
         "muscle": "L3 multifidus R",
         "simulator": {"seed": 1, "artefacts_from": "stim", "artefacts_channel": 1}},
    ],
}  # fmt: skip


def needlelab_script() -> str:
    """The `needlelab` console script of this environment (what a user runs)."""
    script = Path(sys.executable).parent / "needlelab"
    assert script.exists(), f"no console script at {script}: pip install -e ."
    return str(script)


def switched_within(session: Session, since_ns: int, settled_s: float) -> bool:
    """Whether a stimulator channel switched its output on or off after `since_ns`, at least
    `settled_s` ago (so the EMG second after it is recorded too)."""
    state: dict[tuple[str, int], bool] = {}
    now = session.clock.now_ns()
    for e in session.hub.recent_events():
        if isinstance(e, StimSettingsEvent):
            key, on = (e.source, e.settings.channel), e.settings.output_on
            on = on and e.settings.intensity_ma > 0
            if key in state and state[key] != on and since_ns < e.t_ns < now - settled_s * 1e9:
                return True
            state[key] = on
    return False


def wait_for_switch(session: Session, since_ns: int) -> None:
    """Until the stimulator switched after `since_ns`, with the EMG second after it recorded."""
    deadline = time.monotonic() + 40
    while not switched_within(session, since_ns, 1.3):
        assert time.monotonic() < deadline, "the simulated stimulator did not switch in 40 s"
        time.sleep(0.1)


def walk_protocol(session: Session) -> None:
    """The clinician and patient, quickly: every phase of the template, with a baseline long
    enough that the stimulator is on before needling, and a needling phase that lasts until the
    stimulator (which follows its own pattern) has switched at least once within it."""
    run = session.protocol_run
    assert run is not None
    log = session.localization
    while (phase := run.advance()) is not None:
        if phase.kind == "nrs":
            if phase.when == "pre":  # until a switch before needling, with EMG around it
                wait_for_switch(session, session.clock.now_ns())
            run.nrs(6 if phase.when == "pre" else 3)
        elif phase.kind == "rom":
            for k, movement in enumerate(phase.movements):
                run.rom(movement, 40 + 10 * k + (8 if phase.when == "post" else 0))
        elif phase.kind == "tpd":
            while (track := run.current_track()) is not None:
                trial = track.staircase.next_trial()
                answer = "two" if trial.points == 2 and trial.distance_mm >= 45 else "one"
                run.tpd_answer(track, answer)
        elif phase.kind == "lrj":
            for k, stimulus in enumerate(block_stimuli(run.protocol.lrj, run.index, 6)):
                shown = session.clock.now_ns()
                time.sleep(0.05)
                answer = stimulus.side if k != 2 else ("L" if stimulus.side == "R" else "R")
                run.lrj_trial(stimulus.name, stimulus.body_part, stimulus.side, answer, shown,
                              session.clock.now_ns())  # fmt: skip
        elif phase.kind == "needling":
            started = session.clock.now_ns()
            for level, side in (("L3", "R"), ("L4", "R"), ("L3", "both")):
                time.sleep(0.8)
                log.prompt()
                time.sleep(0.3)
                log.answer(level, side, ("dull",))
            wait_for_switch(session, started + 10**9)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    session = Session(parse_config(CONFIG), folder)
    session.start()
    try:
        streaming = lambda: all(  # noqa: E731
            d.stats.state.value == "streaming" for d in session.devices.values()
        )
        wait_until(streaming, timeout_s=30, what="every device streaming")
        walk_protocol(session)
    finally:
        session.stop()
    return session.path


@pytest.fixture(scope="module")
def report(recorded: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("html")
    result = subprocess.run(
        [needlelab_script(), "report", str(recorded), "--out", str(out)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return (out / f"{recorded.stem}.report.html").read_text(encoding="utf-8")


def text_of(page: str) -> str:
    """The page without its embedded images' bytes (base64 can spell anything)."""
    return re.sub(r'src="data:image/png;base64,[^"]*"', 'src=""', page)


def sections(page: str) -> dict[str, str]:
    """Each <h2> section's title and content (up to the next <h2>)."""
    parts = re.split(r"<h2>(.*?)</h2>", page)
    return {parts[k]: parts[k + 1] for k in range(1, len(parts) - 1, 2)}


def raw_needling_dose(path: Path) -> tuple[dict[str, float], dict[str, float], list[str]]:
    """Per "<device> ch<k>": seconds with the output on within the needling phase and outside
    it, from the file's raw rows (sqlite3 and json only) and the protocol's TOML; and the
    needling phase's names."""
    template = tomllib.loads(PROTOCOL.read_text())
    needling_names = [p["name"] for p in template["phases"] if p["kind"] == "needling"]
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT t_ns, kind, source, payload FROM events "
            "WHERE kind IN ('stim.settings', 'phase') ORDER BY t_ns, id"
        ).fetchall()
        (last_t,) = db.execute("SELECT MAX(t_ns) FROM events").fetchone()
    windows, opened = [], {}
    for t_ns, kind, _source, payload in rows:
        p = json.loads(payload)
        if kind == "phase" and p["name"] in needling_names:
            if p["boundary"] == "start":
                opened[p["name"]] = t_ns
            else:
                windows.append((opened.pop(p["name"]), t_ns))
    assert windows and not opened, "the needling phase must start and end in the file"
    changes: dict[str, list[tuple[int, bool]]] = {}
    for t_ns, kind, source, payload in rows:
        if kind == "stim.settings":
            s = json.loads(payload)["settings"]
            on = bool(s["output_on"]) and s["intensity_ma"] > 0
            changes.setdefault(f"{source} ch{s['channel']}", []).append((t_ns, on))
    inside: dict[str, float] = {}
    outside: dict[str, float] = {}
    for channel, seq in changes.items():
        for (t0, on), (t1, _next) in zip(seq, [*seq[1:], (last_t, False)], strict=True):
            if not on:
                continue
            within = sum(max(0, min(t1, hi) - max(t0, lo)) for lo, hi in windows)
            inside[channel] = inside.get(channel, 0.0) + within / 1e9
            outside[channel] = outside.get(channel, 0.0) + (t1 - t0 - within) / 1e9
    return inside, outside, needling_names


def test_every_phase_is_named_in_full(report: str) -> None:
    names = [p["name"] for p in tomllib.loads(PROTOCOL.read_text())["phases"]]
    text = text_of(report)
    for name in names:
        assert name in text, name
    assert [row[0] for row in section_rows(report, "phases")[1:]] == names


def test_units_are_microvolts_never_uv(report: str) -> None:
    text = text_of(report)
    assert "µV" in text
    assert "uV" not in text


def test_the_dose_is_counted_within_needling_and_stimulation_outside_is_flagged(
    recorded: Path, report: str
) -> None:
    inside, outside, needling = raw_needling_dose(recorded)
    # The simulated stimulator does not follow the phases: it was on within needling and
    # outside it (if not, this recording cannot test the flag).
    assert any(v > 0.5 for v in inside.values()), inside
    assert any(v > 0.5 for v in outside.values()), outside
    totals = {
        row[0].removesuffix(" total"): float(row[2].removesuffix(" s"))
        for row in section_rows(report, "dose")[1:]
        if row[0].endswith(" total")
    }
    assert set(totals) == {c for c, v in inside.items() if v > 0}
    for channel, seconds in totals.items():
        assert seconds == pytest.approx(inside[channel], abs=0.051), channel  # printed to 0.1 s
    flag = re.search(r'<p class="flag"[^>]*>(.*?)</p>', text_of(report), re.S)
    assert flag, "no flag for stimulation outside needling"
    line = flag.group(1)
    assert line.startswith("Stimulation outside needling") and needling[0] in line
    for channel, seconds in outside.items():
        if seconds > 0.05:
            said = re.search(rf"{channel} (\d+\.\d) s", line)
            assert said and float(said.group(1)) == pytest.approx(seconds, abs=0.051), line


def test_emg_around_estim_is_only_within_needling(recorded: Path, report: str) -> None:
    with sqlite3.connect(f"file:{recorded}?mode=ro", uri=True) as db:
        phases = [
            (t, json.loads(p)) for t, p in db.execute(
                "SELECT t_ns, payload FROM events WHERE kind = 'phase' ORDER BY t_ns, id")
        ]  # fmt: skip
    start = next(t for t, p in phases if p["name"] == "needling with e-stim" and
                 p["boundary"] == "start") / 1e9  # fmt: skip
    end = next(t for t, p in phases if p["name"] == "needling with e-stim" and
               p["boundary"] == "end") / 1e9  # fmt: skip
    with sqlite3.connect(f"file:{recorded}?mode=ro", uri=True) as db:
        settings = [
            (t / 1e9, src, json.loads(p)["settings"]) for t, src, p in db.execute(
                "SELECT t_ns, source, payload FROM events WHERE kind = 'stim.settings' "
                "ORDER BY t_ns, id")
        ]  # fmt: skip
    state: dict[tuple[str, int], bool] = {}
    switches = []
    for t, src, st in settings:
        on = st["output_on"] and st["intensity_ma"] > 0
        if state.get((src, st["channel"]), on) != on:
            switches.append(t)
        state[(src, st["channel"])] = on
    # The recording switched outside needling (with EMG a second either side) and within it.
    assert any(t < start - 1 for t in switches) and any(start < t < end - 1 for t in switches)
    rows = section_rows(report, "emg")[1:]
    assert rows
    for row in rows:
        t = float(row[0].removesuffix(" s"))
        assert start - 0.051 <= t <= end + 0.051, (row, start, end)
    inside = [t for t in switches if start <= t <= end - 1]
    assert len(rows) >= len(inside)  # every switch within needling (with a second after it)


def test_a_figure_for_every_section_a_picture_reads_faster(report: str) -> None:
    by_title = sections(report)
    for title in SECTIONS_WITH_A_FIGURE:
        assert title in by_title, title
        assert by_title[title].count('<img alt="') == 1, title
    assert by_title["Stimulation dose"].count("<img") == 1  # intensity over time


def test_every_statistic_is_explained(report: str) -> None:
    for table in re.finditer(r'<table data-section="([^"]+)">(.*?)</table>(<ul[^>]*>.*?</ul>)?',
                             report, re.S):  # fmt: skip
        headers = [re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<th>(.*?)</th>", table[2])]
        assert table[3], f"table {table[1]} has no explanations"
        terms = re.findall(r'<li data-term="([^"]*)"><b>[^<]*</b>: ([^<]+)</li>', table[3])
        explained = {html_unescape(t) for t, text in terms if len(text.split()) >= 2}
        assert set(map(html_unescape, headers)) <= explained, table[1]


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)


def test_no_reference_to_files_users_do_not_have(recorded: Path, report: str,
                                                 tmp_path: Path) -> None:  # fmt: skip
    assert "ARCHITECTURE" not in text_of(report)
    out = tmp_path / "csv"
    result = subprocess.run(
        [needlelab_script(), "export", str(recorded), "--to", "csv", "--out", str(out)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for path in out.iterdir():
        assert "ARCHITECTURE" not in path.read_text(encoding="utf-8"), path.name
    with open(out / "data_dictionary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # Each event column is described in words of its own (not a pointer elsewhere).
    events = [r for r in rows if r["file"].startswith("events_")]
    assert events and all(len(r["description"].split()) >= 3 for r in events)
    latency = next(r for r in rows if r["file"] == "events_response.csv" and
                   r["column"] == "latency_ms")  # fmt: skip
    assert latency["unit"] == "ms" and "prompt" in latency["description"]


def test_the_trend_has_visits_on_an_integer_axis(recorded: Path, tmp_path: Path) -> None:
    folder = tmp_path / "visits"
    folder.mkdir()
    for stamp in ("20260101T090000Z", "20260108T090000Z", "20260115T090000Z"):
        with sqlite3.connect(f"file:{recorded}?mode=ro", uri=True) as src, \
                sqlite3.connect(folder / f"{PATIENT}_{stamp}.sqlite") as dst:  # fmt: skip
            src.backup(dst)
    result = subprocess.run(
        [needlelab_script(), "report", str(folder), "--patient", PATIENT, "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    page = (tmp_path / f"{PATIENT}.trend.html").read_text(encoding="utf-8")
    axes = re.findall(r'<img alt="[^"]*x axis: visit ([^"]*)"', page)
    assert axes, "no trend figure says its visit axis"
    for ticks in axes:
        assert ticks.split(", ") == ["1", "2", "3"], ticks
    shutil.rmtree(folder)
