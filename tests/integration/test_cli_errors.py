"""Every CLI error path, swept: missing, read-only, full and damaged targets for each command.

Each case runs the real `needlelab` console script as a child process and checks what a user
sees: the exit code documented for that case (`needlelab --help`, "exit codes"; the numbers are
typed here, not imported), exactly one line on stderr, no "Traceback", and no file left where
none should be. Read-only folders are read-only for real: when the tests run as root the child
drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH before it starts (prctl), so permissions apply
to it. A full disk is RLIMIT_FSIZE in the child, as in the fault matrix's disk-full row.

`pytest -s tests/integration/test_cli_errors.py` prints the table of cases (case, exit code,
message) for the README.
"""

from __future__ import annotations

import ctypes
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from needlelab.record import open_session

# What each documented exit code is for, in the words --help must use for it.
DOCUMENTED = {
    0: "done",
    1: "stopped by a fault",
    2: "usage or config error",
    3: "damaged file",
    4: "cannot write",
}

ROWS: list[tuple[str, int, str]] = []  # (case, exit code, the line on stderr) as run


def row(case: str, code: int, line: str, *folders: Path) -> None:
    """Keep a row of the table, with the test's folders shortened to DIR."""
    for folder in folders:
        line = line.replace(str(folder), "DIR")
    ROWS.append((case, code, re.sub(r"/tmp/\S*/inputs\d*", "DIR", line)))


def needlelab_cmd() -> list[str]:
    """The console script installed with the package (the real entry point)."""
    script = Path(sys.executable).with_name("needlelab")
    return [str(script)] if script.exists() else [sys.executable, "-m", "needlelab.cli"]


def _drop_dac_override() -> None:
    """In the child: let file permissions bind even root (no CAP_DAC_OVERRIDE/READ_SEARCH)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: gone after exec
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:  # in the child only: no file it writes can grow past `limit` bytes
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def run(
    args: list[str], target: str = "", limit: int = 0, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """`needlelab ARGS`; `target` "ro" drops the DAC override, "full" limits file sizes."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "QT_QPA_PLATFORM": "offscreen"}
    preexec = {"ro": _drop_dac_override, "full": _file_size_limit(limit)}.get(target)
    return subprocess.run(
        [*needlelab_cmd(), *args],
        capture_output=True, text=True, timeout=timeout, env=env, preexec_fn=preexec,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if not p.is_dir()} if folder.exists() else set()


@pytest.fixture(scope="module", autouse=True)
def table() -> Iterator[None]:
    """Print the cases as run, as a Markdown table (visible with -s)."""
    yield
    if ROWS:
        print("\n| case | exit | message (stderr) |\n|---|---|---|")
        for case, code, line in ROWS:
            print(f"| {case} | {code} | `{line.replace('|', '/')}` |")


# -- inputs --------------------------------------------------------------------------------------
SIM_STIM = """
[session]
patient_id = "ERR01"
out_dir = "{out}"

[[devices]]
kind = "stim_serial"
name = "stim"
profile = "needlelab-stim-ascii"
poll_interval_ms = 20

[devices.simulator]
transport = "pty"
pattern = "random"
"""

MANUAL = """
[session]
patient_id = "ERR02"
out_dir = "{out}"

[[devices]]
kind = "stim_manual"
name = "unit"
"""

STIM = '\n[[devices]]\nkind = "stim_serial"\nname = "stim"\nport = "loop://"\n'
EMG = '\n[[devices]]\nkind = "emg_ble"\nname = "emg"\naddress = "AA:BB:CC:DD:EE:FF"\n'
HEAD = '[session]\npatient_id = "ERR03"\nout_dir = "{out}"\n'

# Configs `record`, `monitor` and `demo` would reject: (case, config text, words in the line).
BAD_CONFIGS = [
    ("unknown stimulator profile", HEAD + STIM + 'profile = "no-such-stim"\n',
     "devices[0].profile: no-such-stim: no such driver profile"),
    ("unknown EMG profile", HEAD + EMG + 'profile = "no-such-emg"\n',
     "devices[0].profile: no-such-emg: no such driver profile"),
    ("EMG device given a caliper profile", HEAD + EMG + 'profile = "sylvac-simple"\n',
     "'sylvac-simple' is a caliper profile; kind 'emg_ble' needs an emg profile"),
    ("stimulator channel 0", HEAD + STIM + 'profile = "needlelab-stim-ascii"\nchannels = [0]\n',
     "devices[0].channels[0]: Input should be greater than or equal to 1"),
    ("stimulator channel 99", HEAD + STIM + 'profile = "needlelab-stim-ascii"\nchannels = [99]\n',
     "devices[0].channels[0]: Input should be less than or equal to 16"),
    ("bumble_transport = \"bogus-spec\"", HEAD + EMG
     + 'profile = "needlelab-emg-ref"\nbackend = "bumble"\nbumble_transport = "bogus-spec"\n',
     "devices[0].bumble_transport: unknown transport scheme 'bogus-spec'"),
    ("port socket:// without a port", HEAD + STIM.replace("loop://", "socket://localhost")
     + 'profile = "needlelab-stim-ascii"\n', "devices[0].port: expected socket://HOST:PORT"),
    ("unknown protocol template", HEAD.replace("\nout_dir", '\nprotocol = "no-such"\nout_dir'),
     "session.protocol: "),
    ("damaged config (not TOML)", "[session\npatient_id = \x00", "not valid TOML"),
]  # fmt: skip


@dataclass
class Inputs:
    """Session files every case copies from: finished, killed (with its -wal), damaged."""

    good: Path
    killed: Path
    junk: Path
    truncated: Path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    root = tmp_path_factory.mktemp("inputs")
    config = root / "sim.toml"
    config.write_text(SIM_STIM.format(out=root / "good"))
    done = run(["record", str(config), "--duration", "1.5", "--no-console"])
    assert done.returncode == 0, done.stderr
    (good,) = (root / "good").glob("*.sqlite")
    manual = root / "manual.toml"
    manual.write_text(MANUAL.format(out=root / "killed"))
    proc = subprocess.Popen(
        [*needlelab_cmd(), "record", str(manual), "--no-console"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    assert proc.stderr.readline().startswith("recording to")
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    proc.stderr.close()
    (killed,) = (root / "killed").glob("*.sqlite")
    junk = root / "junk.sqlite"
    junk.write_bytes(b"these are notes, not a session\n" * 200)
    truncated = root / "truncated.sqlite"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    return Inputs(good, killed, junk, truncated)


@dataclass
class Place:
    """One case's folder: inputs copied in, a read-only folder, an output that must stay empty."""

    root: Path
    inputs: Inputs
    made: list[Path] = field(default_factory=list)

    def copy(self, source: Path, folder: str = "in") -> Path:
        dest = self.root / folder
        dest.mkdir(exist_ok=True)
        for extra in ("", "-wal", "-shm"):
            if Path(f"{source}{extra}").exists():
                shutil.copyfile(f"{source}{extra}", dest / f"{source.name}{extra}")
        return dest / source.name

    @property
    def good(self) -> Path:
        return self.copy(self.inputs.good)

    @property
    def junk(self) -> Path:
        return self.copy(self.inputs.junk)

    @property
    def truncated(self) -> Path:
        return self.copy(self.inputs.truncated)

    def read_only(self, *sources: Path) -> Path:
        """A folder holding copies of `sources`, then made read-only (0500)."""
        folder = self.root / "ro"
        folder.mkdir(exist_ok=True)
        for source in sources:
            self.copy(source, "ro")
        folder.chmod(0o500)
        self.made.append(folder)
        return folder

    def config(self, text: str, name: str = "c.toml") -> Path:
        path = self.root / name
        path.write_text(text.format(out=self.root / "out"))
        return path

    @property
    def out(self) -> Path:
        return self.root / "out"


@pytest.fixture
def place(tmp_path: Path, inputs: Inputs) -> Iterator[Place]:
    p = Place(tmp_path, inputs)
    yield p
    for folder in p.made:
        folder.chmod(0o700)


@dataclass(frozen=True)
class Case:
    """A command on a target: the documented exit code, words of its one line, what may stay."""

    name: str
    argv: Callable[[Place], list[str]]
    code: int
    says: str
    target: str = ""  # "", "ro" or "full"
    limit: int = 0  # full: the file-size limit in bytes
    keeps: int = 0  # new files allowed to stay (a recording stopped by a full disk keeps its own)
    progress: bool = False  # stderr also has the recording's progress lines before the error


def _scan_missing_socket(p: Place) -> list[str]:
    return ["devices", "scan", "--bumble", f"unix:{p.root / 'no-controller.sock'}",
            "--timeout", "1"]  # fmt: skip


CASES = [
    # check
    Case("check: config missing", lambda p: ["check", str(p.root / "none.toml")], 2,
         "none.toml: no such file"),
    Case("check: a session file given as config", lambda p: ["check", str(p.good)], 2,
         "cannot read"),
    Case("check: out_dir read-only", lambda p: [
        "check", str(p.config(MANUAL.replace("{out}", str(p.read_only() / "sub"))))], 4,
         "cannot create files in", target="ro"),
    # record
    Case("record: config missing", lambda p: ["record", str(p.root / "none.toml")], 2,
         "none.toml: no such file"),
    Case("record: no config argument", lambda p: ["record"], 2,
         "the following arguments are required: config"),
    Case("record: --out read-only", lambda p: [
        "record", str(p.config(MANUAL)), "--out", str(p.read_only() / "sub"), "--duration", "1"],
         4, "is read-only for this user", target="ro"),
    Case("record: --out is a file", lambda p: [
        "record", str(p.config(MANUAL)), "--out", str(p.junk / "sub"), "--duration", "1"],
         4, "is a file, not a folder"),
    Case("record: disk full at create", lambda p: [
        "record", str(p.config(MANUAL)), "--duration", "5"], 4,
         "nothing was recorded and no file is left", target="full", limit=4096),
    Case("record: disk full while recording", lambda p: [
        "record", str(p.config(SIM_STIM)), "--duration", "30", "--no-console"], 1,
         "recording stopped: a write failed", target="full", limit=250_000, keeps=1,
         progress=True),
    # demo
    Case("demo --headless: --out read-only", lambda p: [
        "demo", "--headless", "--duration", "2", "--out", str(p.read_only())], 4,
         "is read-only for this user", target="ro"),
    Case("demo --headless: disk full at create", lambda p: [
        "demo", "--headless", "--duration", "2", "--out", str(p.out)], 4,
         "nothing was recorded and no file is left", target="full", limit=4096),
    # monitor (offscreen)
    Case("monitor: config missing", lambda p: ["monitor", str(p.root / "none.toml")], 2,
         "none.toml: no such file"),
    Case("monitor: --out read-only", lambda p: [
        "monitor", str(p.config(MANUAL)), "--start", "--out", str(p.read_only())], 4,
         "is read-only for this user", target="ro"),
    # export
    Case("export: session missing", lambda p: [
        "export", str(p.root / "none.sqlite"), "--to", "xdf"], 2, "none.sqlite: no such file"),
    Case("export: not a SQLite file", lambda p: ["export", str(p.junk), "--to", "csv"], 3,
         "not a readable SQLite file"),
    Case("export: truncated session", lambda p: ["export", str(p.truncated), "--to", "xdf"], 3,
         "truncated.sqlite"),
    Case("export: --out in a read-only folder", lambda p: [
        "export", str(p.good), "--to", "xdf", "--out", str(p.read_only() / "s.xdf")], 4,
         "Permission denied", target="ro"),
    Case("export: disk full (xdf beside the session)", lambda p: [
        "export", str(p.good), "--to", "xdf"], 4, "disk is full", target="full", limit=512),
    Case("export: disk full (csv folder)", lambda p: [
        "export", str(p.good), "--to", "csv", "--out", str(p.out / "deep" / "csv")], 4,
         "disk is full", target="full", limit=512),
    # report
    Case("report: session missing", lambda p: ["report", str(p.root / "none.sqlite")], 2,
         "none.sqlite: no such file"),
    Case("report: not a SQLite file", lambda p: ["report", str(p.junk)], 3,
         "not a readable SQLite file"),
    Case("report: truncated session", lambda p: ["report", str(p.truncated)], 3,
         "truncated.sqlite"),
    Case("report: --out read-only", lambda p: [
        "report", str(p.good), "--out", str(p.read_only())], 4, "Permission denied",
         target="ro"),
    Case("report: disk full", lambda p: ["report", str(p.good)], 4, "disk is full",
         target="full", limit=512),
    Case("report --patient: folder missing", lambda p: [
        "report", "--patient", "ERR01", str(p.root / "none")], 2, "no sessions of patient"),
    # verify
    Case("verify: session missing", lambda p: ["verify", str(p.root / "none.sqlite")], 2,
         "none.sqlite: no such file"),
    Case("verify: not a SQLite file", lambda p: ["verify", str(p.junk)], 3,
         "not a readable SQLite file"),
    Case("verify: truncated session", lambda p: ["verify", str(p.truncated)], 3,
         "truncated.sqlite"),
    # info
    Case("info: session missing", lambda p: ["info", str(p.root / "none.sqlite")], 2,
         "none.sqlite: no such file"),
    Case("info: not a SQLite file", lambda p: ["info", str(p.junk)], 3,
         "not a readable SQLite file"),
    Case("info: truncated session", lambda p: ["info", str(p.truncated)], 3,
         "truncated.sqlite"),
    # seal
    Case("seal: session missing", lambda p: ["seal", str(p.root / "none.sqlite")], 2,
         "none.sqlite: no such session file"),
    Case("seal: not a SQLite file", lambda p: ["seal", str(p.junk)], 3,
         "not a readable SQLite file"),
    Case("seal: truncated session", lambda p: ["seal", str(p.truncated)], 3,
         "truncated.sqlite"),
    Case("seal: killed recording in a read-only folder", lambda p: [
        "seal", str(p.read_only(p.inputs.killed) / p.inputs.killed.name)], 4,
         "cannot fold its write-ahead log in", target="ro"),
    Case("seal: killed recording, disk full", lambda p: [
        "seal", str(p.copy(p.inputs.killed))], 4, "cannot fold its write-ahead log in",
         target="full", limit=0),
    # devices scan
    Case("devices scan --bumble bogus-spec", lambda p: [
        "devices", "scan", "--bumble", "bogus-spec"], 2,
         "unknown transport scheme 'bogus-spec'"),
    Case("devices scan --bumble: controller missing", _scan_missing_socket, 1,
         "cannot scan through bumble transport"),
    # sim
    Case("sim stim: profile unknown", lambda p: ["sim", "stim", "--profile", "no-such"], 2,
         "no-such: no such driver profile"),
    Case("sim stim: --log in a read-only folder", lambda p: [
        "sim", "stim", "--log", str(p.read_only() / "sent.jsonl")], 4, "Permission denied",
         target="ro"),
    Case("sim session: config missing", lambda p: ["sim", "session", str(p.root / "none.toml")],
         2, "none.toml: no such file"),
]  # fmt: skip


def check_one_line(result: subprocess.CompletedProcess[str], progress: bool = False) -> str:
    """The one error line on stderr (after the progress lines of a recording, if any)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    if progress:
        assert lines[0].startswith("recording to "), lines
        lines = [line for line in lines if not line.startswith(("recording to ", " "))]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_error_is_one_line_and_a_documented_code(case: Case, place: Place) -> None:
    argv = case.argv(place)  # made before the snapshot: the inputs it copies are not output
    before = files_under(place.root)
    result = run(argv, case.target, case.limit)
    line = check_one_line(result, case.progress)
    row(case.name, result.returncode, line, place.root)
    assert result.returncode == case.code, (result.returncode, result.stderr)
    assert case.says in line, line
    new = files_under(place.root) - before
    kept = {p for p in new if p.suffix == ".sqlite"}
    assert len(kept) == case.keeps, sorted(new)  # nothing half-written stays behind
    assert {p for p in new if p.suffix != ".sqlite"} <= {  # but its own write-ahead log
        Path(f"{k}{extra}") for k in kept for extra in ("-wal", "-shm")
    }, sorted(new)
    for path in kept:  # what a full disk stopped is kept, owner-only, and readable
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with open_session(path) as s:
            assert s.meta["patient_id"] == "ERR01"


@pytest.mark.parametrize(
    ("case", "text", "says"), BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS]
)  # fmt: skip
def test_check_rejects_what_record_and_monitor_reject_with_the_same_line(
    place: Place, case: str, text: str, says: str
) -> None:
    config = place.config(text)
    commands = {
        "check": ["check", str(config)],
        "record": ["record", str(config), "--duration", "1"],
        "monitor": ["monitor", str(config), "--start", "--duration", "1"],
    }
    with ThreadPoolExecutor(3) as pool:  # the three at once: they are independent
        results = dict(zip(commands, pool.map(run, commands.values()), strict=True))
    lines = {}
    for command, result in results.items():
        lines[command] = check_one_line(result)
        row(f"{command}: {case}", result.returncode, lines[command], place.root)
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""
    assert lines["check"] == lines["record"] == lines["monitor"]
    assert lines["check"].startswith(f"{config}: ") and says in lines["check"]
    assert not place.out.exists()  # refused before any file or folder was made


def test_readers_need_no_write_access(place: Place) -> None:
    """verify and info read a finished file in a read-only folder, and with no room to write."""
    session = place.read_only(place.inputs.good) / place.inputs.good.name
    for target in ("ro", "full"):
        for command in ("verify", "info"):
            result = run([command, str(session)], target)
            assert result.returncode == 0, (target, command, result.stderr)
            assert result.stderr == ""
            where = "read-only folder" if target == "ro" else "disk full"
            row(f"{command}: finished file, {where}", 0, "(nothing on stderr)")
    assert files_under(place.root / "ro") == {session}


def test_record_makes_a_missing_output_folder_owner_only(place: Place) -> None:
    out = place.root / "new" / "deeper"
    result = run(["record", str(place.config(MANUAL)), "--out", str(out), "--duration", "0.5",
                  "--no-console"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    (path,) = out.glob("*.sqlite")
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE(out.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    row("record: --out a missing folder", 0, "(made 0700; progress lines only)")


def test_help_documents_every_exit_code() -> None:
    result = run(["--help"])
    assert result.returncode == 0
    epilog = result.stdout[result.stdout.index("exit codes:") :]
    for code, meaning in DOCUMENTED.items():
        assert f"  {code:<4}{meaning}" in epilog, (code, epilog)
