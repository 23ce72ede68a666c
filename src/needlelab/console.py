"""Typed clinician commands for headless sessions: manual stimulator settings and markers.

A line like `stim ch=1 freq=2 pw=250 ma=12.5 on` or `mark needle in L3 right` is parsed into a
call on the session. Used by `needlelab record` on its standard input, so a unit with no data port
can be logged without the GUI. `backlog` says how far the file is behind; a disk that falls behind
is also told on the same console by itself (the writer's `writer.backlog` warning, logged).
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from needlelab.hub import format_bytes

if TYPE_CHECKING:
    from needlelab.hub import Backlog
    from needlelab.session import Session

HELP = (
    "commands: stim [DEVICE] [ch=N] [freq=HZ] [pw=US] [ma=MA] [wave=NAME] [mode=NAME] [on|off]"
    " | mark TEXT | backlog | stop | help"
)

_STIM_KEYS = {
    "freq": "frequency_hz",
    "frequency_hz": "frequency_hz",
    "hz": "frequency_hz",
    "pw": "pulse_width_us",
    "pulse_width_us": "pulse_width_us",
    "us": "pulse_width_us",
    "ma": "intensity_ma",
    "intensity_ma": "intensity_ma",
    "wave": "waveform",
    "waveform": "waveform",
    "mode": "mode",
}


class CommandError(ValueError):
    """A console line could not be understood; the message says what is expected."""


def parse_stim_args(words: list[str]) -> tuple[str | None, int, dict[str, Any]]:
    """Parse the words after `stim` into (device or None, channel, setting changes)."""
    device: str | None = None
    channel = 1
    changes: dict[str, Any] = {}
    for word in words:
        if word in ("on", "off"):
            changes["output_on"] = word == "on"
            continue
        key, sep, value = word.partition("=")
        if not sep:
            if device is None and not changes and word.isidentifier():
                device = word
                continue
            raise CommandError(f"cannot read {word!r}; expected KEY=VALUE, on or off. {HELP}")
        key = key.lower()
        if key in ("ch", "channel"):
            try:
                channel = int(value)
            except ValueError:
                raise CommandError(f"channel must be a whole number, not {value!r}") from None
        elif key in _STIM_KEYS:
            field = _STIM_KEYS[key]
            if field in ("waveform", "mode"):
                changes[field] = value
            else:
                try:
                    changes[field] = float(value)
                except ValueError:
                    raise CommandError(f"{key} must be a number, not {value!r}") from None
        else:
            raise CommandError(f"unknown setting {key!r}; known: ch, {', '.join(_STIM_KEYS)}")
    if not changes:
        raise CommandError(f"nothing to set. {HELP}")
    return device, channel, changes


def format_backlog(b: Backlog) -> str:
    """One line: what waits to be written to the file, and the worst so far."""
    state = {"ok": "keeping up", "slow": "FALLING BEHIND", "full": "FULL: recording stopped"}
    return (
        f"writer {state[b.state]}: {b.items} items, {format_bytes(b.bytes)}, the oldest "
        f"{b.seconds:.2f} s old, waiting to be written (worst {format_bytes(b.peak_bytes)}, "
        f"{b.peak_seconds:.2f} s)" + (f"; {b.refused} refused at the limit" if b.refused else "")
    )


def run_command(session: Session, line: str) -> tuple[str, bool]:
    """Apply one console line; returns (reply text, whether the session should stop)."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise CommandError(f"cannot parse the line: {exc}") from None
    if not words:
        return "", False
    verb, rest = words[0].lower(), words[1:]
    if verb == "stop":
        return "stopping", True
    if verb == "help":
        return HELP, False
    if verb == "backlog":
        return format_backlog(session.hub.backlog_status()), False
    if verb == "mark":
        text = line.strip()[len(words[0]) :].strip()
        if not text:
            raise CommandError("mark needs a note, e.g. `mark patient moved`")
        session.mark(text)
        return f"marked: {text}", False
    if verb == "stim":
        device, channel, changes = parse_stim_args(rest)
        try:
            stim = session.manual_stimulator(device)
            settings = stim.set(channel, **changes)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise CommandError(f"{first['loc'][0]}: {first['msg']}") from None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        return (
            f"{stim.name} ch{settings.channel}: {settings.frequency_hz:g} Hz, "
            f"{settings.pulse_width_us:g} us, {settings.intensity_ma:g} mA, "
            f"{'ON' if settings.output_on else 'off'}"
        ), False
    raise CommandError(f"unknown command {verb!r}. {HELP}")
