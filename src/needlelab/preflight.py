"""Preflight: everything a session needs, checked before its file exists.

`preflight(config)` is the one validation that `needlelab check`, `record`, `monitor`, `demo`
and every `Session` run: the config itself (validated when loaded: fields, ports and transport
specs), the protocol template it names, each device's driver profile (through the same loaders
the drivers use) and its channels against that profile, the optional modules the devices and
LSL need, and that files can be created in the output folder. Whatever a recording would reject
is rejected here, with the same lines, and nothing is created.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from needlelab.config import (
    CaliperBleConfig,
    ConfigError,
    EmgBleConfig,
    SessionConfig,
    StimSerialConfig,
    load_config,
    read_toml,
)


class CannotWriteError(Exception):
    """Files cannot be created where the output goes (read-only, not a folder); one line."""


_PROFILE_TYPES = {"stim_serial": "stimulator", "emg_ble": "emg", "caliper_ble": "caliper"}


def writable_folder_problem(folder: Path) -> str | None:
    """Why files cannot be created in `folder` (made later if missing), or None. Creates nothing:
    the nearest existing level must be a folder this process may write in."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"cannot create files in {folder}: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot create files in {folder}: {existing} is read-only for this user"
    return None


def _profile_type_problem(profile: str, kind: str) -> str | None:
    """A one-line problem if the profile file exists but is for another kind of device."""
    from needlelab.profiles import find_profile
    from needlelab.resources import drivers_dir

    path = find_profile(profile)  # ConfigError (no such profile) is for the loader to say
    found = read_toml(path).get("device_type")
    wanted = _PROFILE_TYPES[kind]
    if not isinstance(found, str) or found == wanted:
        return None
    shipped = sorted(
        p.stem for p in drivers_dir().glob("*.toml") if read_toml(p).get("device_type") == wanted
    )
    article = "an" if wanted[0] in "aeiou" else "a"
    return (
        f"{profile!r} is a {found} profile; kind {kind!r} needs {article} {wanted} profile "
        f"(shipped: {', '.join(shipped)})"
    )


def _stim_problems(device: StimSerialConfig) -> list[str]:
    """Problems of a serial stimulator's channels against its profile (field, message)."""
    from needlelab.devices.codecs import StimProtocol
    from needlelab.profiles import load_stim_profile

    profile = load_stim_profile(device.profile)
    problems = []
    for message in profile.messages:
        rule = message.fields.get("channel")
        if message.kind == "settings" and rule is not None and rule.type == "const":
            others = [c for c in device.channels if c != rule.value]
            if others:
                problems.append(
                    f"channels: profile {profile.profile} reports channel {rule.value} only "
                    f"(its message {message.name!r}); got {device.channels}"
                )
                break
    protocol = StimProtocol(profile)
    for query in profile.queries:
        if not query.per_channel:
            continue
        for channel in device.channels:
            try:
                protocol.encode_query(query, channel)
            except (ValueError, KeyError, IndexError) as exc:
                problems.append(
                    f"channels: profile {profile.profile} cannot ask channel {channel} "
                    f"(query {query.name!r}: {exc})"
                )
    return problems


def _device_problems(device: object) -> list[str]:
    """(field: message) lines for one device; ConfigError lines of its profile are prefixed."""
    from needlelab.devices.registry import device_class

    kind: str = getattr(device, "kind", "")
    try:
        device_class(kind)  # its driver's module and optional dependencies import
    except ImportError as exc:
        return [f"kind: {exc}"]
    if kind not in _PROFILE_TYPES:
        return []
    profile: str = getattr(device, "profile", "")
    try:
        wrong_type = _profile_type_problem(profile, kind)
        if wrong_type:
            return [f"profile: {wrong_type}"]
        if isinstance(device, StimSerialConfig):
            return _stim_problems(device)
        if isinstance(device, EmgBleConfig):
            from needlelab.profiles import load_emg_profile

            load_emg_profile(profile)
        elif isinstance(device, CaliperBleConfig):
            from needlelab.profiles import load_caliper_profile

            load_caliper_profile(profile)
    except ConfigError as exc:
        return [f"profile: {line}" for line in exc.lines]
    return []


def _lsl_problem() -> str | None:
    """Why LSL cannot run here, or None. pylsl is imported, not configured: configuring is the
    publisher's first call, and must be."""
    from needlelab.lsl import LSL_HINT

    try:
        importlib.import_module("pylsl")
    except (ImportError, OSError, RuntimeError) as exc:
        return f"lsl.enabled: LSL cannot run here: {LSL_HINT} ({type(exc).__name__}: {exc})"
    return None


def preflight(
    config: SessionConfig,
    source: str = "<config>",
    out_dir: Path | None = None,
    lsl: bool | None = None,
) -> None:
    """Check everything a session of `config` needs before any file exists.

    `ConfigError` with one line per problem (`source: field: message`), or `CannotWriteError`
    if no file can be created in `out_dir` (default: the config's `out_dir`). `lsl` overrides
    the config's `[lsl] enabled` (`record --lsl`).
    """
    from needlelab.clinic.protocol import load_protocol

    lines = []
    if config.session.protocol:
        try:
            load_protocol(config.session.protocol, config.localization)
        except ConfigError as exc:
            lines += [f"{source}: session.protocol: {line}" for line in exc.lines]
    for i, device in enumerate(config.devices):
        lines += [f"{source}: devices[{i}].{p}" for p in _device_problems(device)]
    lsl_problem = _lsl_problem() if (config.lsl.enabled if lsl is None else lsl) else None
    if lsl_problem:
        lines.append(f"{source}: {lsl_problem}")
    if lines:
        raise ConfigError(lines)
    folder = Path(out_dir if out_dir is not None else config.session.out_dir)
    problem = writable_folder_problem(folder)
    if problem:
        raise CannotWriteError(
            f"{problem}. Choose a writable folder with --out (or out_dir in the config)."
        )


def load_checked(
    path: str | Path, out_dir: Path | None = None, lsl: bool | None = None
) -> SessionConfig:
    """Load the session config at `path` and preflight it (`ConfigError`, `CannotWriteError`)."""
    config = load_config(path)
    preflight(config, str(path), out_dir, lsl)
    return config


def missing_folders(folder: Path) -> list[Path]:
    """The levels of `folder` that do not exist yet, deepest first."""
    missing = []
    for level in (folder, *folder.parents):
        if level.exists():
            break
        missing.append(level)
    return missing


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove folders (deepest first) made for an output that was not written, if still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty, or not ours to remove: leave it
            return
