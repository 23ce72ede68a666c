"""The de-identification key: one pseudonym per patient, however many exports run at once."""

from __future__ import annotations

import datetime as dt
import json
import stat
import threading
from pathlib import Path

from needlelab.record.deidentify import DeidentifyKey


def test_exports_side_by_side_never_lose_or_split_a_patient(tmp_path: Path) -> None:
    """Eight exports at once (each its own key object and file handle, as separate processes
    have), each adding ten new patients and asking for two shared ones: every patient ends up
    in the key once, and everyone got the same pseudonym for the shared ones."""
    path = tmp_path / "keys" / "key.json"
    got: dict[int, list[tuple[str, str, int]]] = {}

    def work(n: int) -> None:
        key = DeidentifyKey(path)
        out = []
        for i in range(10):
            for patient in (f"P{n}x{i}", "SHARED1", "SHARED2"):
                p = key.pseudonym(patient, dt.date(2026, 11, 23))
                out.append((patient, p.patient_id, p.shift_days))
        got[n] = out

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    patients = json.loads(path.read_text())["patients"]
    assert len(patients) == 8 * 10 + 2
    seen = {(p, i, s) for rows in got.values() for p, i, s in rows}
    assert {(p, e["id"], e["shift_days"]) for p, e in patients.items()} == seen
    ids = [e["id"] for e in patients.values()]
    assert len(set(ids)) == len(ids) and not set(ids) & set(patients)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["key.json"]  # no temporary left


def test_a_shift_puts_the_first_session_in_the_1990s_and_is_kept(tmp_path: Path) -> None:
    key = DeidentifyKey(tmp_path / "k.json")
    first = key.pseudonym("A1", dt.date(2026, 11, 23))
    assert 1990 <= (dt.date(2026, 11, 23) + dt.timedelta(days=first.shift_days)).year <= 1999
    assert DeidentifyKey(tmp_path / "k.json").pseudonym("A1", dt.date(2031, 1, 2)) == first
    shifts = {key.pseudonym(f"B{i}", dt.date(2026, 11, 23)).shift_days for i in range(20)}
    assert len(shifts) > 10  # random per patient, not one shift for everyone
    assert key.session_id("abc") == DeidentifyKey(tmp_path / "k.json").session_id("abc")
    assert key.session_id("abc") != key.session_id("abd")
