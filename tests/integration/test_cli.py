"""The `needlelab` command line as a user runs it: demo, record with the console, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from needlelab.events import MarkerEvent, StimSettingsEvent
from needlelab.record import open_session
from needlelab.resources import configs_dir

from .test_record_faults import record_cmd

MANUAL = """
[session]
patient_id = "MAN01"

[[devices]]
kind = "stim_manual"
name = "unit"
channels = 2
"""


def needlelab(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "needlelab.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )  # type: ignore[call-overload]


def test_demo_records_verifies_and_reports(tmp_path: Path) -> None:
    result = needlelab("demo", "--duration", "4", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "no display: running headless" in result.stderr
    assert "OK (integrity: ok)" in result.stdout and "closed cleanly" in result.stdout
    # The sample times against the simulator's frames as sent, with the goal and a verdict.
    (sample_line,) = [x for x in result.stdout.splitlines() if x.startswith("sample times emg")]
    assert "goal |error| p95 <= 1 ms" in sample_line and sample_line.endswith(("PASS", "FAIL"))
    (path,) = tmp_path.glob("DEMO01_*.sqlite")
    with open_session(path) as s:
        assert {"stim.ch1", "stim.ch2"} <= set(s.streams)
        # The simulated link's probe measured the EMG's typical floor, and the file says so.
        assert s.streams["emg.emg"].latency_floor == "typical"
        assert s.streams["emg.emg"].latency_ns > 0
        assert len(s.stream("stim.ch1")[0]) > 20
        kinds = {e.kind for e in s.events()}
    assert {"stim.settings", "device.state", "recording", "phase", "marker"} <= kinds
    info = needlelab("info", str(path), "--json")
    assert json.loads(info.stdout)["patient_id"] == "DEMO01"


def test_record_takes_manual_settings_and_notes_from_the_console(tmp_path: Path) -> None:
    config = tmp_path / "manual.toml"
    config.write_text(MANUAL)
    commands = (
        "stim ch=1 freq=2 pw=250 ma=5 on\n"
        "stim ma=7.5\n"
        "stim ch=2 ma=lots\n"
        "mark patient reports dull ache, right side\n"
        "stim ch=2 freq=100 on\n"
        "stop\n"
    )
    result = needlelab("record", str(config), "--out", str(tmp_path), input=commands)
    assert result.returncode == 0, result.stderr
    assert "? ma must be a number" in result.stderr  # a typo is explained, not fatal
    (path,) = tmp_path.glob("MAN01_*.sqlite")
    with open_session(path) as s:
        settings = [e for e in s.events("stim.settings") if isinstance(e, StimSettingsEvent)]
        notes = [e.text for e in s.events("marker") if isinstance(e, MarkerEvent)]
        assert len(s.stream("unit.ch1")[0]) == 2
    assert [
        (e.settings.channel, e.settings.intensity_ma, e.settings.output_on, e.origin)
        for e in settings
    ] == [(1, 5.0, True, "manual"), (1, 7.5, True, "manual"), (2, 0.0, True, "manual")]
    assert notes == ["patient reports dull ache, right side"]
    assert settings[0].t_ns < settings[1].t_ns


def test_console_refuses_an_unknown_waveform_or_mode_with_the_allowed_names(
    tmp_path: Path,
) -> None:
    config = tmp_path / "manual.toml"
    config.write_text(MANUAL)
    commands = "stim wave=triangle ma=9\nstim mode=zigzag\nstim wave=Monophasic ma=2 on\nstop\n"
    result = needlelab("record", str(config), "--out", str(tmp_path), input=commands)
    assert result.returncode == 0, result.stderr
    refused = [line for line in result.stderr.splitlines() if line.startswith("? ")]
    assert refused == [
        "? unknown waveform 'triangle'; allowed: biphasic, monophasic, alternating",
        "? unknown mode 'zigzag'; allowed: continuous, burst",
    ]
    (path,) = tmp_path.glob("MAN01_*.sqlite")
    with open_session(path) as s:
        settings = [e for e in s.events("stim.settings") if isinstance(e, StimSettingsEvent)]
    assert [(e.settings.waveform, e.settings.mode, e.settings.intensity_ma) for e in settings] == [
        ("monophasic", "continuous", 2.0)  # the refused lines set nothing, not even ma=9
    ]


def test_sigterm_closes_the_file_cleanly(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(MANUAL)
    proc = subprocess.Popen(
        record_cmd(config, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    assert proc.stderr.readline().startswith("recording to")
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "saved" in out
    (path,) = tmp_path.glob("MAN01_*.sqlite")
    verify = needlelab("verify", str(path), "--json")
    report = json.loads(verify.stdout)
    assert verify.returncode == 0 and report["ok"] and report["closed_cleanly"]


def test_verify_on_garbage_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"\x00\x01garbage" * 1000)
    result = needlelab("verify", str(bad))
    assert result.returncode == 3  # damaged file (needlelab --help, exit codes)
    assert result.stderr.count("\n") == 1 and "not a readable SQLite file" in result.stderr
    assert "Traceback" not in result.stderr


def test_output_piped_to_a_reader_that_stops_is_no_traceback() -> None:
    """`needlelab ... | head`: the reader goes away before the output is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: the first write fails with EPIPE
    try:
        result = subprocess.run(
            [sys.executable, "-m", "needlelab.cli", "check", str(configs_dir() / "demo.toml")],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert result.returncode == 1
    assert result.stderr == ""


def test_devices_lists_serial_ports() -> None:
    result = needlelab("devices")
    assert result.returncode == 0
    assert all(line.startswith("serial: ") for line in result.stdout.splitlines())


def test_bad_config_and_bad_arguments_are_clear(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(MANUAL.replace('"MAN01"', '"../x"'))
    result = needlelab("record", str(config))
    assert result.returncode == 2 and "session.patient_id" in result.stderr
    assert "Traceback" not in result.stderr
    result = needlelab("demo", "--duration", "-3")
    assert result.returncode == 2 and "must be > 0" in result.stderr


def test_monitor_without_the_gui_extra_says_what_to_install(tmp_path: Path) -> None:
    # Hide pyqtgraph as if the `gui` extra were not installed.
    code = (
        "import sys; sys.modules['pyqtgraph'] = None; "
        "from needlelab.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "monitor", str(configs_dir() / "demo.toml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "pip install 'needlelab[gui]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_takes_driver_profiles_too(tmp_path: Path) -> None:
    """`needlelab check PROFILE.toml` validates a driver profile as a profile (it used to parse it
    as a session config: seven 'unknown field' lines for a valid shipped profile)."""
    shipped = sorted((Path(__file__).parents[2] / "drivers").glob("*.toml"))
    assert len(shipped) >= 7
    result = needlelab("check", *map(str, shipped))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == len(shipped)
    assert "ok: stimulator profile needlelab-stim-ascii" in result.stdout
    text = (Path(__file__).parents[2] / "drivers" / "needlelab-stim-ascii.toml").read_text()
    writer = tmp_path / "write-stim.toml"
    writer.write_text(text.replace('send = "STAT? {channel}"', 'send = "SET CH{channel} OUT=1"'))
    result = needlelab("check", str(writer))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "query 'status'" in line and "is not a read" in line
    odd = tmp_path / "odd.toml"
    odd.write_text('profile = "odd"\ndevice_type = "laser"\n')
    result = needlelab("check", str(odd))
    assert result.returncode == 2 and "'laser' is not one of" in result.stderr
