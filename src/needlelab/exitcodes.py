"""The exit codes of every `needlelab` command, defined once (the CLI's --help lists them)."""

from __future__ import annotations

import textwrap

EXIT_OK = 0
EXIT_FAULT = 1
EXIT_USAGE = 2
EXIT_DAMAGED = 3
EXIT_CANNOT_WRITE = 4
EXIT_INTERNAL = 70  # sysexits' EX_SOFTWARE
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "done",
    EXIT_FAULT: "stopped by a fault: a recording stopped when a write failed (what was "
    "committed is saved and readable), a device or Bluetooth controller could not be "
    "reached, a simulator could not be served, a benchmark crashed, the output's reader went "
    "away (| head)",
    EXIT_USAGE: "usage or config error: bad arguments, an invalid config, driver profile, "
    "protocol template, port or transport spec, a missing input file or optional extra; "
    "nothing was created",
    EXIT_DAMAGED: "damaged file: the input is not a readable needlelab session (not SQLite, "
    "truncated, damaged pages) or it does not verify",
    EXIT_CANNOT_WRITE: "cannot write: the output folder is read-only, not a folder or full, "
    "or the file is in use; nothing is left behind",
    EXIT_INTERNAL: "internal error (a bug): one line; run with -v for the traceback",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C) before the command finished",
}
"""What each exit code means, for --help and the README."""


def exit_codes_text() -> str:
    """The exit-code list as --help prints it."""
    return "exit codes:\n" + "\n".join(
        textwrap.fill(text, 96, initial_indent=f"  {code:<4}", subsequent_indent=" " * 6)
        for code, text in EXIT_CODES.items()
    )
