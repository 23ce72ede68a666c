"""`needlelab sim ...`: serve simulated devices for another program (or another machine's test)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from needlelab.config import ConfigError, FaultSpec, format_validation_error
from needlelab.signals import SignalStop

FAULT_HELP = (
    "KIND:AT_S[:ARG], KIND one of garbage (ARG bytes), truncate / duplicate (ARG count), "
    "stall / disconnect (ARG seconds); repeatable"
)


def parse_fault(text: str) -> FaultSpec:
    """`garbage:5:1000`, `stall:10:3`, `disconnect:20:2`, `truncate:4` → FaultSpec."""
    parts = text.split(":")
    try:
        kind, at_s = parts[0], float(parts[1])
        arg = float(parts[2]) if len(parts) > 2 else None
        if len(parts) > 3:
            raise ValueError
    except (IndexError, ValueError):
        raise argparse.ArgumentTypeError(f"bad fault {text!r}: expected {FAULT_HELP}") from None
    fields: dict[str, Any] = {"kind": kind, "at_s": at_s}
    if arg is not None:
        fields["duration_s" if kind in ("stall", "disconnect") else "count"] = (
            arg if kind in ("stall", "disconnect") else int(arg)
        )
    try:
        return FaultSpec.model_validate(fields)
    except ValidationError as exc:
        lines = format_validation_error(f"bad fault {text!r}", exc)
        raise argparse.ArgumentTypeError("; ".join(lines)) from None


def _channels(text: str) -> list[int]:
    try:
        channels = [int(c) for c in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("channels: comma-separated numbers, e.g. 1,2") from None
    if not channels or any(not 1 <= c <= 16 for c in channels):
        raise argparse.ArgumentTypeError("channels must be 1..16")
    return channels


def cmd_sim_stim(args: argparse.Namespace) -> int:
    """Serve a simulated stimulator until SIGINT/SIGTERM; the URL is the first stdout line."""
    from needlelab.config import StimSimulatorConfig
    from needlelab.profiles import load_stim_profile
    from needlelab.sim.stim_server import SimulatedStim

    try:
        profile = load_stim_profile(args.profile)
    except ConfigError as exc:
        print("\n".join(exc.lines), file=sys.stderr)
        return 2
    sim = StimSimulatorConfig(
        transport="tcp" if args.tcp is not None else "pty",
        pattern=args.pattern,
        seed=args.seed,
        faults=args.fault,
    )
    stop = _stop_on_signals()
    with contextlib.ExitStack() as resources:
        if args.workdir is not None:
            workdir = Path(args.workdir)
        else:  # the pty link lives here; removed on exit
            workdir = Path(resources.enter_context(tempfile.TemporaryDirectory(prefix="nl-sim-")))
        log = resources.enter_context(open(args.log, "w", encoding="utf-8")) if args.log else None
        received = resources.enter_context(open(args.received, "wb")) if args.received else None
        server = SimulatedStim(
            profile,
            sim,
            args.channels,
            workdir,
            tcp_port=args.tcp or 0,
            log_file=log,
            received_file=received,
            profile_source=args.profile,
        )
        try:
            server.start()
        except OSError as exc:
            print(f"needlelab: cannot serve: {exc}", file=sys.stderr)
            return 1
        try:
            print(server.url, flush=True)
            print(
                f"simulated {profile.profile} (channels {args.channels}); Ctrl-C to stop",
                file=sys.stderr,
                flush=True,
            )
            _wait(stop)
        finally:
            server.stop()
    return _writes_verdict()


def _stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM (installed before serving: no window to die in)."""
    return SignalStop().install().event


def _wait(stop: threading.Event) -> None:
    # A timed wait, so the signal handler runs promptly on every platform.
    while not stop.wait(0.5):
        pass


def cmd_sim_session(args: argparse.Namespace) -> int:
    """Serve every simulated device of a session config; endpoints are the first stdout line.

    The line is JSON, {device name: config fields}: what a config for real hardware would say
    (`port`, or `backend`, `bumble_transport` and `advertised_name`).
    """
    import json

    from needlelab.config import load_config, parse_config
    from needlelab.sim.emg_sensor import write_frames_truth
    from needlelab.sim.serve import SimulatorSet, write_truth

    try:
        if str(args.config) == "-":
            config = parse_config(json.loads(sys.stdin.read()), "<stdin>")
        else:
            config = load_config(args.config)
    except ConfigError as exc:
        print("\n".join(exc.lines), file=sys.stderr)
        return 2
    except json.JSONDecodeError as exc:
        print(f"<stdin>: not JSON: {exc}", file=sys.stderr)
        return 2
    stop = _stop_on_signals()
    priority = keep_time()  # before any thread starts: they inherit it
    with contextlib.ExitStack() as resources:
        if args.workdir is not None:
            workdir = Path(args.workdir)
        else:
            workdir = Path(resources.enter_context(tempfile.TemporaryDirectory(prefix="nl-sim-")))
        sims = SimulatorSet(config, workdir, ble=args.ble, tag="proc", control_path=args.control)
        try:
            endpoints = sims.start()
        except OSError as exc:
            print(f"needlelab: cannot serve: {exc}", file=sys.stderr)
            return 1
        try:
            print(json.dumps(endpoints), flush=True)
            names = ", ".join(endpoints) or "nothing (no device has a [simulator] table)"
            print(f"serving {names} ({priority}); Ctrl-C to stop", file=sys.stderr, flush=True)
            _wait(stop)
        finally:
            sims.stop()
            if args.truth is not None:
                write_truth(args.truth, sims.truth())
                write_frames_truth(args.truth, sims.ble_devices)
    return _writes_verdict()


def keep_time() -> str:
    """Run this process (the simulated devices' radios and ports) at the lowest real-time
    priority where the OS allows it (Linux SCHED_RR 1, as root or with CAP_SYS_NICE; not passed
    on to the processes it starts); what it runs at, said in a few words.

    A real sensor's radio keeps its own time whatever the host's load; a simulated one shares
    the host's CPU, and on a busy machine its frames left late by a varying amount, which moved
    the link's latency floor between the start-up probe and the session (demo under two CPU
    hogs: the simulator's part of the latency, typical floor 2.2 ms at normal priority, 1.3-1.6
    ms at real-time priority). It mostly sleeps (about a third of a CPU for the demo's devices),
    and the kernel's real-time throttling keeps a runaway from taking a whole CPU.
    """
    import os

    policy = getattr(os, "SCHED_RR", None)
    if policy is None:
        return "normal priority: no real-time scheduling on this OS"
    try:
        os.sched_setscheduler(0, policy | getattr(os, "SCHED_RESET_ON_FORK", 0), os.sched_param(1))
    except OSError:
        return "normal priority: real-time priority not permitted (needs root or CAP_SYS_NICE)"
    return "real-time priority"


def _writes_verdict() -> int:
    """0; or 1, after one stderr line, if a write command reached a simulated stimulator (a unit
    that would have obeyed it): needlelab's tests fail on it."""
    from needlelab.sim.stim_server import writes_received

    writes = writes_received()
    if not writes:
        return 0
    print(
        f"needlelab sim: {len(writes)} write command(s) reached a simulated stimulator: "
        f"{writes[0]}",
        file=sys.stderr,
    )
    return 1


def add_sim_parser(subparsers: Any) -> None:
    """Register `needlelab sim stim` and `needlelab sim session` on the top-level subparsers."""
    sim = subparsers.add_parser("sim", help="serve simulated devices")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True, metavar="DEVICE")
    p = sim_sub.add_parser("stim", help="a simulated stimulator on a pty or loopback TCP")
    p.add_argument("--profile", default="needlelab-stim-ascii", help="driver profile name")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--pty", action="store_true", help="serve on a pseudo-terminal (default)")
    where.add_argument(
        "--tcp", type=int, metavar="PORT", help="serve on 127.0.0.1:PORT (0 = any free port)"
    )
    p.add_argument("--pattern", choices=["clinical", "random"], default="clinical")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--channels", type=_channels, default=[1], help="e.g. 1,2")
    p.add_argument("--fault", type=parse_fault, action="append", default=[], help=FAULT_HELP)
    p.add_argument(
        "--log", type=Path, help="write every sent message as JSON lines (monotonic ns, fields)"
    )
    p.add_argument(
        "--received", type=Path, help="write every byte received from the driver (raw binary)"
    )
    p.add_argument("--workdir", type=Path, help="where the pty link is made (default: a temp dir)")
    p.set_defaults(func=cmd_sim_stim)

    p = sim_sub.add_parser(
        "session", help="every simulated device of a session config, in this process"
    )
    p.add_argument("config", type=Path, help="a session config (.toml), or - for JSON on stdin")
    p.add_argument(
        "--ble",
        choices=["unix", "tcp"],
        default="unix",
        help="how a central reaches the BLE simulators: a unix socket each in the workdir "
        "(default) or a loopback TCP port each",
    )
    p.add_argument("--workdir", type=Path, help="where ptys and sockets go (default: a temp dir)")
    p.add_argument(
        "--control",
        type=Path,
        help="serve the simulators' own controls on a unix socket at PATH (JSON lines: "
        '{"device": "stim", "output": true}, {"device": "caliper", "press_mm": 45}); for the '
        "devices whose [simulator] has control = true",
    )
    p.add_argument(
        "--truth",
        type=Path,
        help="at exit, write the stimulators' settings histories (JSON), and beside it each EMG "
        "sensor's frames as sent (FILE's stem + .DEVICE.frames.json)",
    )
    p.set_defaults(func=cmd_sim_session)
