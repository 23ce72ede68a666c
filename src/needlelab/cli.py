"""The `needlelab` command line: check, devices, demo, monitor, record, report, export, bench,
verify, info, seal, sim."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO

from needlelab import __version__
from needlelab.config import ConfigError, SessionConfig, bumble_transport_problem
from needlelab.exitcodes import (
    EXIT_CANNOT_WRITE,
    EXIT_DAMAGED,
    EXIT_FAULT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    exit_codes_text,
)
from needlelab.signals import SignalStop


def _err(message: str) -> None:
    print(f"needlelab: {message}", file=sys.stderr)


_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


def _os_error_text(exc: OSError, where: Path | None = None) -> str:
    """An OSError as one line: the file (or `where` it was writing), what the system said and,
    for a full disk or a read-only place, what to do."""
    what = exc.strerror or str(exc)
    if exc.filename:
        text = f"{exc.filename}: {what}"
    elif where is not None:
        text = f"{'in ' if where.is_dir() else ''}{where}: {what}"
    else:
        text = what
    if exc.errno in _FULL:
        text += " (the disk is full or a file-size limit was reached: free space, or write "
        text += "elsewhere with --out)"
    elif exc.errno in _READ_ONLY:
        text += " (not writable by this user: write elsewhere with --out)"
    return text


def _failed(exc: BaseException, where: Path | None = None) -> int:
    """Say one line (or one per config problem) about an expected failure; its exit code."""
    from needlelab.preflight import CannotWriteError
    from needlelab.record import ExportError, NotASessionError, RecordingError

    if isinstance(exc, ConfigError):
        for line in exc.lines:
            print(line, file=sys.stderr)
        return EXIT_USAGE
    if isinstance(exc, CannotWriteError):  # the session's SessionFileError too
        _err(str(exc))
        return EXIT_CANNOT_WRITE
    if isinstance(exc, NotASessionError):
        _err(str(exc))
        return EXIT_DAMAGED
    if isinstance(exc, RecordingError | ExportError | ImportError):
        _err(str(exc))  # a missing input, a wrong option, a missing extra
        return EXIT_USAGE
    if isinstance(exc, FileNotFoundError | NotADirectoryError | IsADirectoryError):
        _err(_os_error_text(exc) if exc.filename else str(exc))  # a path that is not there
        return EXIT_USAGE
    if isinstance(exc, OSError):  # permissions, a read-only file system, a full disk
        _err(f"cannot write {_os_error_text(exc, where)}")
        return EXIT_CANNOT_WRITE
    _err(f"internal error: {type(exc).__name__}: {exc} (a bug: run with -v for the traceback)")
    return EXIT_INTERNAL


def _expected_errors() -> tuple[type[BaseException], ...]:
    """The failures `_failed` has words for; anything else is a bug."""
    from needlelab.preflight import CannotWriteError
    from needlelab.record import ExportError, RecordingError

    return (ConfigError, OSError, ImportError, CannotWriteError, RecordingError, ExportError)


@contextlib.contextmanager
def _no_partial_output(folder: Path, ours: Callable[[str], bool]) -> Iterator[None]:
    """On a failure, remove the entries of `folder` that appeared meanwhile and are `ours` by
    name (a file cut short by a full disk, half an export), and the folders made for them if
    they are left empty."""
    from needlelab.preflight import missing_folders, remove_empty_folders

    made = missing_folders(folder)
    before = set(os.listdir(folder)) if folder.is_dir() else set()
    try:
        yield
    except BaseException:
        fresh = set(os.listdir(folder)) - before if folder.is_dir() else set()
        for name in sorted(n for n in fresh if ours(n)):
            target = folder / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
        remove_empty_folders(made)
        raise


# -- check ---------------------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    """Validate configs with the preflight every recording runs; one line per problem."""
    from needlelab.clinic.protocol import load_protocol
    from needlelab.config import read_toml
    from needlelab.preflight import CannotWriteError, load_checked
    from needlelab.profiles import load_any_profile

    status = EXIT_OK
    for path in args.config:
        try:
            data = read_toml(path)
            if "protocol" in data:  # a protocol template, not a session config
                protocol = load_protocol(path)
                phases = " → ".join(p.name for p in protocol.phases)
                print(f"{path}: ok: protocol {protocol.protocol.name}: {phases}")
                continue
            if "device_type" in data:  # a driver profile
                profile = load_any_profile(path, data["device_type"])
                print(f"{path}: ok: {data['device_type']} profile {profile.profile}")
                continue
            config = load_checked(path)
        except (ConfigError, CannotWriteError) as exc:
            code = _failed(exc)
            status = EXIT_USAGE if EXIT_USAGE in (status, code) else code
            continue
        devices = ", ".join(f"{d.name} ({d.kind})" for d in config.devices) or "no devices"
        protocol_name = f", protocol {config.session.protocol}" if config.session.protocol else ""
        print(f"{path}: ok: patient {config.session.patient_id}, {devices}{protocol_name}")
    return status


# -- devices -------------------------------------------------------------------------------------
def cmd_devices(args: argparse.Namespace) -> int:
    """List serial ports with their descriptions; `scan` lists Bluetooth LE devices instead."""
    if args.action == "scan":
        return _scan_ble(args)
    from serial.tools import list_ports

    ports = sorted(list_ports.comports(), key=lambda p: p.device)
    if not ports:
        print("serial: no ports found")
    for port in ports:
        hwid = f" [{port.hwid}]" if port.hwid and port.hwid != "n/a" else ""
        print(f"serial: {port.device}: {port.description}{hwid}")
    return EXIT_OK


def _scan_ble(args: argparse.Namespace) -> int:
    """Scan for BLE advertisements; print address, name, RSSI and services of each match."""
    import asyncio

    from bleak import BleakScanner
    from bleak.exc import BleakError

    kwargs: dict[str, Any] = {}
    if args.bumble is not None:
        from needlelab.ble.bumble_backend import BumbleScanner

        kwargs = {"backend": BumbleScanner, "bumble_transport": args.bumble}

    async def scan() -> list[tuple[Any, Any]]:
        try:
            # bleak passes backend arguments (bumble_transport) through untyped.
            found = await BleakScanner.discover(  # type: ignore[call-overload]
                timeout=args.timeout,
                return_adv=True,
                service_uuids=args.service or None,
                **kwargs,
            )
        finally:
            if args.bumble is not None:
                from needlelab.ble.bumble_backend import BumbleCentral

                await BumbleCentral.close_all()
        return list(found.values())

    try:
        seen = asyncio.run(scan())
    except (BleakError, OSError) as exc:
        if args.bumble is not None:
            _err(
                f"cannot scan through bumble transport {args.bumble}: {exc}. Is its controller "
                "running (`needlelab sim session` prints the transports it serves)?"
            )
        else:
            _err(
                f"cannot scan for Bluetooth LE devices: {exc}. Is there a Bluetooth adapter, "
                "and is it on? (Without one, scan a simulator: needlelab devices scan --bumble "
                "SPEC)"
            )
        return EXIT_FAULT
    want_name = (args.name or "").lower()
    want_address = (args.address or "").lower()
    shown = 0
    for device, adv in sorted(seen, key=lambda item: -(item[1].rssi or -999)):
        name = adv.local_name or device.name or ""
        if want_name and want_name not in name.lower():
            continue
        if want_address and device.address.lower() != want_address:
            continue
        services = ",".join(adv.service_uuids) or "-"
        print(f"ble: {device.address}  {name or '(no name)'}  rssi {adv.rssi}  services {services}")
        shown += 1
    if not shown:
        print("ble: no devices found")
    return EXIT_OK


# -- recording -----------------------------------------------------------------------------------
class _Progress:
    """One status line: rewritten in place on a terminal, a line every few seconds otherwise."""

    def __init__(self, session: Any, stream: TextIO, every_s: float = 5.0) -> None:
        self.session, self.stream, self.every_s = session, stream, every_s
        self.tty = stream.isatty()
        self._last = -every_s

    def __call__(self, elapsed_s: float) -> None:
        if not self.tty and elapsed_s - self._last < self.every_s:
            return
        self._last = elapsed_s
        parts = [
            f"{s.name}: {s.state} {s.samples} samples"
            + (f", {s.malformed} malformed" if s.malformed else "")
            + (f", {s.gaps} gaps" if s.gaps else "")
            for s in self.session.status()
        ]
        line = f"{elapsed_s:6.1f} s | " + " | ".join(parts)
        if self.tty:
            self.stream.write("\r" + line[:160].ljust(160))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _console_reader(session: Any, stop: threading.Event) -> None:
    from needlelab.console import CommandError, run_command

    for line in sys.stdin:
        try:
            reply, should_stop = run_command(session, line)
        except CommandError as exc:
            print(f"? {exc}", file=sys.stderr, flush=True)
            continue
        if reply:
            print(reply, file=sys.stderr, flush=True)
        if should_stop:
            stop.set()
            return


def _record(
    config: SessionConfig,
    out_dir: Path | None,
    duration_s: float | None,
    console: bool,
    script: Any = None,
    separate_simulators: bool = False,
) -> tuple[int, Any]:
    """Record a session; the exit status and the (stopped) `Session`, or None if none started."""
    from needlelab.preflight import CannotWriteError
    from needlelab.record import RecordingError, ignore_sigxfsz
    from needlelab.session import Session

    ignore_sigxfsz()  # a file-size limit must give a clear error, not kill the process
    session = Session(config, out_dir, separate_simulators=separate_simulators)
    signals = SignalStop().install()
    stop = signals.event
    progress = _Progress(session, sys.stderr)
    try:
        try:
            session.start()
        except CannotWriteError as exc:  # the file could not be created: nothing is left
            _err(str(exc))
            return EXIT_CANNOT_WRITE, None
        except (RecordingError, OSError, RuntimeError) as exc:
            _err(f"cannot start recording: {exc}")
            return EXIT_FAULT, None
        print(f"recording to {session.path}", file=sys.stderr, flush=True)
        if console:
            threading.Thread(
                target=_console_reader, args=(session, stop), daemon=True, name="console"
            ).start()
        if script is not None:
            threading.Thread(
                target=script, args=(session, stop), daemon=True, name="demo-script"
            ).start()
        session.wait(duration_s, on_tick=progress, stop_requested=stop)
    finally:
        session.stop("stopped by user" if stop.is_set() else "duration reached")
        progress.done()
        signals.restore()
    if session.error:
        _err(session.error)
        return EXIT_FAULT, session
    return EXIT_OK, session


def _verify(path: Path, as_json: bool = False) -> int:
    from needlelab.record import RecordingError, format_verify, verify_report

    try:
        report = verify_report(path)
    except RecordingError as exc:  # missing (2), or not a readable session (3)
        return _failed(exc)
    print(json.dumps(report, indent=2, default=str) if as_json else format_verify(report))
    return EXIT_OK if report["ok"] else EXIT_DAMAGED


def _checked_config(
    path: Path, out_dir: Path | None = None, lsl: bool | None = None
) -> SessionConfig | int:
    """The config at `path` after the preflight every session runs (its protocol template,
    driver profiles, channels, output folder); or, once its problems are said (one line
    each), the exit code."""
    from needlelab.preflight import CannotWriteError, load_checked

    try:
        return load_checked(path, out_dir, lsl)
    except (ConfigError, CannotWriteError) as exc:
        return _failed(exc)


def cmd_record(args: argparse.Namespace) -> int:
    """Record a session headless until Ctrl-C, SIGTERM, `stop` or --duration."""
    config = _checked_config(args.config, args.out, lsl=args.lsl or None)
    if isinstance(config, int):
        return config
    if args.lsl:
        config = config.model_copy(update={"lsl": config.lsl.model_copy(update={"enabled": True})})
    status, session = _record(config, args.out, args.duration, console=not args.no_console)
    if session is not None and session.path.exists():
        print(f"saved {session.path}")
    return status


def _monitor_problem() -> str | None:
    """Why the monitor cannot open here, or None."""
    from needlelab.monitor import display_available, gui_missing, qt_problem

    missing = gui_missing()
    if missing:
        return missing
    if not display_available() and not os.environ.get("QT_QPA_PLATFORM"):
        return "no display to show the monitor on; `needlelab record CONFIG` records headless"
    problem = qt_problem()  # in a child: Qt that cannot start aborts its process
    if problem:
        return f"{problem}; `needlelab record CONFIG` records headless"
    return None


def _run_monitor(
    config: SessionConfig,
    out_dir: Path | None,
    autostart: bool,
    duration_s: float | None,
    script: Any = None,
    separate_simulators: bool = False,
) -> tuple[Any, Path | None]:
    """Open the monitor on a new session; the session once the window closed, and the report
    the monitor wrote (None if it wrote none)."""
    from needlelab.monitor.app import run_monitor
    from needlelab.record import ignore_sigxfsz
    from needlelab.session import Session

    ignore_sigxfsz()
    session = Session(config, out_dir, separate_simulators=separate_simulators)
    result = run_monitor(session, autostart=autostart, duration_s=duration_s, script=script)
    return session, result.report


def cmd_monitor(args: argparse.Namespace) -> int:
    """Open the live monitor on a session config."""
    config = _checked_config(args.config, args.out)
    if isinstance(config, int):
        return config
    problem = _monitor_problem()
    if problem:
        _err(problem)
        return EXIT_USAGE
    session, report = _run_monitor(config, args.out, args.start, args.duration)
    status = _after_monitor(session)
    if report is not None:
        print(f"report: {report}")
    return status


def _after_monitor(session: Any) -> int:
    """The exit status of a monitor session once its window closed, said in one line."""
    if session.error:
        _err(session.error)
        return EXIT_FAULT
    if not session.path.exists():
        if session.start_failure is not None:  # shown in the window; said here too
            return _failed(session.start_failure)
        _err("the window was closed before recording started: nothing was recorded")
        return EXIT_OK
    print(f"saved {session.path}")
    return EXIT_OK


def _until_done(script: Any) -> Any:
    """A script that asks the session to stop a second after it has run to its end."""

    def run(session: Any, stop: threading.Event) -> None:
        script(session, stop)
        if not stop.wait(1.0):
            stop.set()

    return run


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the default protocol with simulated devices and patient; verify; write the report."""
    from needlelab.demo import demo_config, demo_script
    from needlelab.monitor import display_available, gui_missing, qt_problem
    from needlelab.resources import configs_dir

    config = _checked_config(configs_dir() / "demo.toml", args.out)
    if isinstance(config, int):
        return config
    config = demo_config(config)  # the simulated clinician holds the stimulator and caliper
    length = f"{args.duration:g} s" if args.duration else "whole-protocol"
    print(
        f"needlelab {__version__} demo: a {length} simulated session of protocol "
        f"{config.session.protocol} (simulators in a separate process; stimulator through the "
        "real serial driver, EMG and caliper through bleak; a simulated patient answers)",
        flush=True,
    )
    windowed = False
    if not args.headless:
        missing = gui_missing()
        windowed = display_available() and missing is None
        if not windowed:
            why = "no display" if missing is None else missing
            print(f"{why}: running headless", file=sys.stderr)
        elif problem := qt_problem():  # in a child: Qt that cannot start aborts its process
            windowed = False
            print(f"{problem}; running headless", file=sys.stderr)
    if windowed:
        session, report = _run_monitor(
            config, args.out, True, args.duration, demo_script, separate_simulators=True
        )
        status = _after_monitor(session)
    else:
        report = None
        status, session = _record(
            config,
            args.out,
            args.duration,
            console=False,
            script=_until_done(demo_script),
            separate_simulators=True,
        )
    if session is None or not session.path.exists():
        return status or EXIT_FAULT
    print()
    verify_status = _verify(session.path)
    _print_sync_check(session)
    _print_localization(session.path)
    if report is not None:  # the monitor wrote it already
        print(f"report: {report}")
        return status or verify_status
    try:
        from needlelab.clinic.report import write_report

        print(f"report: {write_report(session.path)}")
    except ImportError as exc:
        print(f"no report: {exc}", file=sys.stderr)
    return status or verify_status


def _print_localization(path: Path) -> None:
    """The localization answers' accuracy, computed from the file alone."""
    from needlelab.clinic.localization import effective_responses, format_accuracy, summarize
    from needlelab.events import CorrectionEvent, ResponseEvent
    from needlelab.record import open_session

    with open_session(path) as s:
        events = [e for e in s.events() if isinstance(e, ResponseEvent | CorrectionEvent)]
    if events:
        print(f"localization: {format_accuracy(summarize(effective_responses(events)))}")


def _print_sync_check(session: Any) -> None:
    """Each simulated EMG stream's sample times against the simulator's own: the sample times
    of its frames as sent (a counter names each frame), and its stimulation artefacts against
    the simulated stimulator's true pulse times (the whole chain, as a user would check it).
    Each line gives the goal and PASS or FAIL."""
    from needlelab.config import EmgBleConfig
    from needlelab.record import open_session
    from needlelab.sim.artefacts import (
        ARTEFACT_WINDOW_MS,
        SYNC_GOAL_P95_MS,
        artefact_sync_errors,
        error_summary_ms,
        sync_verdict,
    )
    from needlelab.sim.emg_sensor import sample_time_errors

    sims = session.simulators
    truth = sims.truth() if sims is not None else {}
    goal = f"goal |error| p95 <= {SYNC_GOAL_P95_MS:g} ms"
    for device in session.config.devices:
        sim = device.simulator if isinstance(device, EmgBleConfig) else None
        if sim is None or sims is None:
            continue
        stream = f"{device.name}.emg"
        with open_session(session.path) as f:  # the latency the file declares: as measured
            spec = f.streams[stream]
            blocks = f.blocks(stream)
            times, values = f.stream(stream)
            anchor = int(f.meta["anchor_monotonic_ns"])
        declared = (
            f"declared link latency {spec.latency_ns / 1e6:.3f} ms above the "
            f"{spec.latency_floor} floor"
        )
        frames = sims.frames_truth(device.name)
        off_ms = 0.0  # how far the sample times are off, by the frames (0: not known)
        if frames is not None:
            s = error_summary_ms(sample_time_errors(frames, blocks, times, anchor))
            if s["n"]:
                off_ms = abs(s["median"])
                print(
                    f"sample times {device.name} vs the simulator's: {s['n']:.0f} samples, "
                    f"error median {s['median']:+.3f} ms, |error| p95 {s['p95']:.3f} ms, "
                    f"max {s['max']:.3f} ms, {declared} ({goal}): {sync_verdict(s)}"
                )
        if sim.artefacts_from not in truth:
            continue
        errors = artefact_sync_errors(
            truth[sim.artefacts_from], times, values, anchor, sim.artefacts_channel
        )
        s = error_summary_ms(errors)
        if not s["n"]:
            print(
                f"sync check {device.name}: no stimulation artefact within "
                f"{ARTEFACT_WINDOW_MS:g} ms of a true "
                f"{sim.artefacts_from} pulse ({goal}): FAIL"
            )
            continue
        verdict = sync_verdict(s)
        if off_ms > ARTEFACT_WINDOW_MS:  # each artefact was matched to another pulse than its own
            verdict = f"FAIL (the samples are {off_ms:.1f} ms off: artefacts matched other pulses)"
        print(
            f"sync check {device.name} vs {sim.artefacts_from} pulses: {s['n']:.0f} artefacts, "
            f"error median {s['median']:+.3f} ms, |error| p95 {s['p95']:.3f} ms, "
            f"max {s['max']:.3f} ms, {declared} ({goal}): {verdict}"
        )


# -- files ---------------------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    """Write the HTML report of a session, or a patient's trend across sessions."""
    from needlelab.record import RecordingError

    if args.patient:
        folder, name = args.out or args.path, f"{args.patient}.trend.html"
    else:
        folder, name = args.out or args.path.parent, f"{args.path.stem}.report.html"
    try:
        from needlelab.clinic.report import write_report, write_trend_report

        with _no_partial_output(folder, lambda n: n == name):
            if args.patient:
                path = write_trend_report(args.patient, args.path, args.out)
            else:
                path = write_report(args.path, args.out)
    except (ImportError, RecordingError, OSError) as exc:  # OSError: FileNotFoundError too
        return _failed(exc, folder / name)
    print(f"report: {path}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    """Export a session file to XDF, EDF+, BDF+, CSV or FIF."""
    from needlelab.record import ExportError, RecordingError, export
    from needlelab.record.deidentify import default_key_path

    if args.key is not None and not args.deidentify:
        _err("--key is the de-identification key: give it with --deidentify")
        return EXIT_USAGE
    key = (args.key or default_key_path()) if args.deidentify else None
    bids = None
    if args.bids is not None:
        if not (args.session and (args.subject or args.deidentify)):
            _err("--bids needs --subject and --session (with --deidentify, --session)")
            return EXIT_USAGE
        bids = (args.bids, args.subject or "", args.session)
    folder, ours = _export_outputs(args)
    try:
        with _no_partial_output(folder, ours):
            path = export(args.path, args.to, args.out, bids, deidentify=key)
    except (ExportError, RecordingError, OSError) as exc:  # OSError: FileNotFoundError too
        return _failed(exc, args.out or args.bids or args.path.parent)
    print(f"exported: {path}")
    if key is not None:
        print(f"key: {key} (keep it apart from the export: it links the export to the patient)")
    return EXIT_OK


def _export_outputs(args: argparse.Namespace) -> tuple[Path, Callable[[str], bool]]:
    """Where an export writes and which new names there are its own (removed if it fails)."""
    if args.bids is not None:
        return args.bids, lambda n: n.startswith("sub-")
    if args.out is not None:
        return args.out.parent, lambda n: n == args.out.name
    # Beside the session, named after it (or, de-identified, after its pseudonym).
    suffix = {"csv": "_csv", "fif": "_raw.fif"}.get(args.to, f".{args.to}")
    return args.path.parent, lambda n: n.endswith(suffix)


def cmd_bench(args: argparse.Namespace) -> int:
    """Run every benchmark and print one table (and JSON); fails only if one crashed."""
    from needlelab.bench import (
        format_comparison,
        format_table,
        load_baseline,
        machine,
        run_bench,
        source,
    )

    baseline = None
    if args.baseline is not None:
        try:  # before the runs: a wrong file should not cost minutes
            baseline = load_baseline(args.baseline)
        except ValueError as exc:
            _err(f"{exc}. Give a file written by `needlelab bench --json`.")
            return EXIT_USAGE
    checkout = source()  # what is measured: the code as the runs start
    try:
        rows, crashed = run_bench(args.quick, sys.stderr)
    except FileNotFoundError as exc:
        _err(str(exc))
        return EXIT_USAGE
    info = machine()
    print(
        f"needlelab {__version__} bench{' --quick' if args.quick else ''}: {info['cpus']} CPUs, "
        f"Python {info['python']}, {info['platform']}"
    )
    print(format_table(rows))
    if crashed:
        print(f"crashed: {', '.join(crashed)}")
    if baseline is not None:
        kind = "quick" if baseline["quick"] else "full"
        cpus = baseline["machine"].get("cpus", "?")
        print(f"\nagainst {args.baseline} ({kind} run, {baseline['when']}, {cpus} CPUs):")
        if baseline["quick"] != args.quick or baseline["machine"] != info:
            print("  (a different kind of run or machine: expect differences)")
        print(format_comparison(rows, baseline))
    if args.json is not None:
        when = datetime.now(UTC).isoformat(timespec="seconds")
        saved = {"when": when, "version": __version__, "source": checkout, "machine": info,
                 "quick": args.quick}  # fmt: skip
        args.json.write_text(json.dumps({**saved, "rows": rows, "crashed": crashed}, indent=2))
    return EXIT_FAULT if crashed else EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    """Integrity check and what a crash cost."""
    return _verify(args.file, args.json)


def cmd_seal(args: argparse.Namespace) -> int:
    """Fold a killed recording's write-ahead log into it: one self-contained file."""
    from needlelab.record import NotASessionError, RecordingError, seal

    if not args.file.is_file():
        _err(f"{args.file}: no such session file")
        return EXIT_USAGE
    try:
        folded = seal(args.file)
    except NotASessionError as exc:
        return _failed(exc)
    except RecordingError as exc:  # in use, a read-only folder, a full disk: the log stays
        _err(str(exc))
        return EXIT_CANNOT_WRITE
    if folded:
        print(f"sealed {args.file}: its write-ahead log is folded in; the file alone holds it all")
    else:
        print(f"{args.file}: already one self-contained file; nothing to fold")
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    """Human summary of a session file."""
    from needlelab.record import RecordingError, format_info, info_report

    try:
        report = info_report(args.file)
    except RecordingError as exc:  # missing (2), or not a readable session (3)
        return _failed(exc)
    print(json.dumps(report, indent=2, default=str) if args.json else format_info(report))
    return EXIT_OK


# -- parser --------------------------------------------------------------------------------------
def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0 seconds")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error said in one line (and the exit code for usage errors)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _bumble_spec(text: str) -> str:
    problem = bumble_transport_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(
        prog="needlelab",
        description=__doc__,
        epilog=exit_codes_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"needlelab {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check", help="validate session configs and protocol templates")
    p.add_argument("config", nargs="+", type=Path)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("devices", help="list serial ports, or scan for Bluetooth LE devices")
    p.add_argument("action", nargs="?", choices=["list", "scan"], default="list")
    p.add_argument("--timeout", type=_positive, default=5.0, help="scan seconds (default 5)")
    p.add_argument("--name", help="scan: only names containing this")
    p.add_argument("--address", help="scan: only this address")
    p.add_argument("--service", action="append", help="scan: only devices advertising this UUID")
    p.add_argument(
        "--bumble",
        metavar="SPEC",
        type=_bumble_spec,
        help="scan through a bumble transport (e.g. unix:/path/emg.hci from "
        "`needlelab sim session`) instead of the system's adapter",
    )
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("demo", help="record a fully simulated session and verify it")
    p.add_argument(
        "--duration",
        type=_positive,
        default=None,
        help="stop after this many s (default: when the protocol is done, under a minute)",
    )
    p.add_argument("--out", type=Path, default=Path("recordings"), help="output folder")
    p.add_argument("--headless", action="store_true", help="never open a window")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("monitor", help="open the live monitor on a session config (gui extra)")
    p.add_argument("config", type=Path)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: config's)")
    p.add_argument("--start", action="store_true", help="start recording at once")
    p.add_argument("--duration", type=_positive, default=None, help="stop after this many s")
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("bench", help="run every benchmark: one table of figures, goals, peers")
    p.add_argument("--quick", action="store_true", help="shorter runs (about 6 minutes on 2 cores)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument(
        "--baseline", type=Path, default=None, help="compare with a saved --json of an earlier run"
    )
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("export", help="export a session to XDF, EDF+, BDF+, CSV or FIF")
    p.add_argument("path", type=Path, help="a session file")
    p.add_argument("--to", required=True, choices=("xdf", "edf", "bdf", "csv", "fif"))
    p.add_argument("--out", type=Path, default=None, help="file (csv: folder); default beside it")
    p.add_argument("--bids", type=Path, metavar="ROOT", help="BIDS-like layout under ROOT")
    p.add_argument("--subject", help="BIDS subject label (letters and digits)")
    p.add_argument("--session", help="BIDS session label (letters and digits)")
    p.add_argument(
        "--deidentify",
        action="store_true",
        help="drop free text, map the patient id and shift dates through the key",
    )
    p.add_argument(
        "--key",
        type=Path,
        default=None,
        metavar="KEYFILE",
        help="de-identification key, made on first use (default: "
        "$XDG_DATA_HOME/needlelab/deidentify-key.json); keep it apart from the exports",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("report", help="write a session's HTML report (report extra)")
    p.add_argument("path", type=Path, help="a session file, or with --patient a folder")
    p.add_argument("--patient", metavar="ID", help="the trend across this patient's sessions")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: beside it)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("record", help="record a session headless")
    p.add_argument("config", type=Path)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: config's)")
    p.add_argument("--duration", type=_positive, default=None, help="stop after SECONDS")
    p.add_argument(
        "--no-console",
        action="store_true",
        help="do not read clinician commands (stim ..., mark ...) from stdin",
    )
    p.add_argument(
        "--lsl",
        action="store_true",
        help="publish every stream on LSL (this machine only unless [lsl] share_on_lan)",
    )
    p.set_defaults(func=cmd_record)

    for name, func, text in (
        ("verify", cmd_verify, "integrity check of a session file"),
        ("info", cmd_info, "summary of a session file"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("file", type=Path)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=func)

    p = sub.add_parser("seal", help="fold a killed recording's write-ahead log into the file")
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_seal)

    from needlelab.sim.cli import add_sim_parser

    add_sim_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `needlelab` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    if hasattr(signal, "SIGXFSZ") and threading.current_thread() is threading.main_thread():
        # A file-size limit is a full disk to every command: an error to say, not a kill.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        status: int = args.func(args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Whatever read our output (`| head`) stopped reading: not a fault to report. Point
        # stdout at /dev/null so the interpreter's own flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAULT
    except _expected_errors() as exc:
        return _failed(exc)
    except Exception as exc:  # a bug: one line, and the traceback with -v
        if args.verbose:
            traceback.print_exc()
        return _failed(exc)
    return status


if __name__ == "__main__":
    sys.exit(main())
