"""Shared fixtures of the unit tests: a hand-built clinical session file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from needlelab.clinic.protocol import load_protocol
from needlelab.config import parse_config
from needlelab.events import (
    CorrectionEvent,
    LrjTrialEvent,
    NeedleSiteEvent,
    NrsEvent,
    PhaseEvent,
    ProtocolEvent,
    ResponseEvent,
    RomEvent,
    StimSettings,
    StimSettingsEvent,
    TpdTrialEvent,
)
from needlelab.session import Session
from needlelab.streams import Chunk, StreamKind, StreamSpec

S = 1_000_000_000


def tpd(name: str, when: str, reversals: list[float], t0: float) -> list[TpdTrialEvent]:
    """A track whose trials reverse at the given distances, with two catch trials (one "two")."""
    trials = []
    for k, d in enumerate(reversals):
        trials.append(
            TpdTrialEvent(
                t_ns=int((t0 + k) * S), staircase=name, site="L3 R", orientation="vertical",
                when=when, distance_mm=d + 5, points=2, answer="two", correct=True, trial=2 * k + 1,
            )
        )  # fmt: skip
        trials.append(
            TpdTrialEvent(
                t_ns=int((t0 + k + 0.5) * S), staircase=name, site="L3 R",
                orientation="vertical", when=when, distance_mm=d, points=2, answer="one",
                correct=False, reversal=True, trial=2 * k + 2,
            )
        )  # fmt: skip
    for k, answer in enumerate(["two", "one"]):
        trials.append(
            TpdTrialEvent(
                t_ns=int((t0 + 7 + k) * S), staircase=name, site="L3 R", orientation="vertical",
                when=when, distance_mm=30, points=1, answer=answer, correct=answer == "one",
                trial=20 + k,
            )
        )  # fmt: skip
    return trials


@pytest.fixture(scope="session")
def hand_built_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session file built event by event, whose scores are computed by hand in test_scoring."""
    tmp = tmp_path_factory.mktemp("scoring")
    session = Session(parse_config({"session": {"patient_id": "HAND01", "out_dir": str(tmp)}}))
    session.start()
    hub = session.hub
    protocol = load_protocol("low-back-l3")  # threshold = mean of the last 6 reversals
    hub.emit(ProtocolEvent(t_ns=S // 10, name="low-back-l3", template=protocol.model_dump()))
    hub.emit(PhaseEvent(t_ns=2 * S // 10, name="baseline pain", boundary="start"))
    hub.emit(PhaseEvent(t_ns=8 * S // 10, name="baseline pain", boundary="end"))
    # The needling phase (the template's kind "needling") from 0.9 s to 5 s.
    hub.emit(PhaseEvent(t_ns=9 * S // 10, name="needling with e-stim", boundary="start"))
    hub.emit(PhaseEvent(t_ns=5 * S, name="needling with e-stim", boundary="end"))
    # Stimulation: off, then 10 mA 2 Hz on for 2 s, 12 mA for 3 s, then off: within needling
    # 2 s at 10 mA and 1.995 s at 12 mA, and 1.005 s at 12 mA after it.
    # (Switches fall between samples: 5 ms after one.)
    for t, ma, on in ((0.5, 0.0, False), (1.005, 10.0, True), (3.005, 12.0, True),
                      (6.005, 12.0, False)):  # fmt: skip
        settings = StimSettings(frequency_hz=2, pulse_width_us=250, intensity_ma=ma, output_on=on)
        hub.emit(StimSettingsEvent(t_ns=int(t * S), settings=settings, source="stim"))
    # EMG at 100 Hz: 2 µV before the stimulation starts at 1 s, 4 µV while it is on, 1 µV after.
    spec = StreamSpec("emg.emg", "EMG", ("EMG 1",), ("uV",), StreamKind.REGULAR, 100.0)
    hub.add_stream(spec)
    for k in range(80):  # 10-sample blocks, each arriving with its last sample
        idx = np.arange(k * 10, k * 10 + 10)
        level = np.where(idx <= 100, 2.0, np.where(idx <= 600, 4.0, 1.0))
        signs = np.where(idx % 2 == 0, 1.0, -1.0)
        values = (level * signs).astype(np.float32)[:, None]
        hub.push(Chunk("emg.emg", values, int((idx[-1] / 100) * S), int(idx[0])))
    # Localization at L3 R: L3 R (exact), L4 R (+1) corrected to L3 R, L2 L (-1, wrong side),
    # and one withdrawn answer.
    site = hub.emit(NeedleSiteEvent(t_ns=7 * S, region="lumbar", level="L3", side="R"))
    answers = [("L3", "R", ("dull",), 900.0), ("L4", "R", ("dull", "ache"), 1200.0),
               ("L2", "L", ("electric",), 700.0), ("T10", "both", (), 500.0)]  # fmt: skip
    stamped = []
    for k, (level, side, words, latency) in enumerate(answers):
        stamped.append(
            hub.emit(
                ResponseEvent(
                    t_ns=(8 + k) * S, level=level, side=side, descriptors=words,
                    latency_ms=latency, site_id=site.id,
                )
            )
        )  # fmt: skip
    fix = hub.emit(
        ResponseEvent(t_ns=13 * S, level="L3", side="R", descriptors=("ache",), latency_ms=1200.0,
                      site_id=site.id)
    )  # fmt: skip
    hub.emit(CorrectionEvent(t_ns=13 * S, replaces=stamped[1].id, replacement=fix.id))
    hub.emit(CorrectionEvent(t_ns=14 * S, replaces=stamped[3].id))
    for e in tpd("pre L3 R vertical", "pre", [40, 30, 45, 35, 40, 30], 20):
        hub.emit(e)
    for e in tpd("post L3 R vertical", "post", [50, 30, 20, 35, 25, 30, 20], 40):
        hub.emit(e)
    lrj = [
        ("pre", "L", "L", 800.0), ("pre", "R", "R", 1000.0), ("pre", "L", "R", 900.0),
        ("pre", "R", None, None), ("post", "L", "L", 600.0), ("post", "R", "R", 700.0),
    ]  # fmt: skip
    for k, (block, true, said, rt) in enumerate(lrj):
        shown = (60 + k) * S
        hub.emit(
            LrjTrialEvent(
                t_ns=shown + int((rt or 5000) * 1e6), block=block, stimulus=f"hand-{true}",
                body_part="hand", true_side=true, answer=said, correct=said == true, rt_ms=rt,
                shown_t_ns=shown, trial=k + 1,
            )
        )  # fmt: skip
    hub.emit(NrsEvent(t_ns=70 * S, value=6, when="pre"))
    hub.emit(NrsEvent(t_ns=71 * S, value=3, when="post"))
    hub.emit(RomEvent(t_ns=72 * S, movement="flexion", degrees=40, when="pre"))
    hub.emit(RomEvent(t_ns=73 * S, movement="flexion", degrees=55, when="post"))
    session.stop()
    return session.path
