"""`needlelab bench`: every benchmark in `benchmarks/`, one table, each figure beside its goal
and its peer, and the same as JSON to track over time.

The scripts run one after another in child processes (each measures alone), each told to write
its rows as JSON (`benchmarks/_results.py`). `--quick` shortens each run; the whole table then
takes about 6 minutes on a 2-core machine (329 s on an idle one for the plan below); the figures
are then rougher, never fake.
`python -m needlelab.bench RUN.json` prints a saved run as the README's markdown table. The exit
status is 1 only if a benchmark crashed: goals not met are reported, since timings on shared
machines are noisy.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO


@dataclass(frozen=True)
class Benchmark:
    """One script and its arguments for a quick and a full run."""

    script: str
    quick: tuple[str, ...]
    full: tuple[str, ...] = ()


PLAN = (
    Benchmark("ingest.py", ("--seconds", "300"), ("--seconds", "3000", "--rounds", "9")),
    Benchmark("decode.py", ("--seconds", "120")),
    Benchmark("sync.py", ("--streams", "5")),
    Benchmark("monitor_fps.py", ("--seconds", "3", "--max-only")),
    Benchmark("ble_latency.py", ("--seconds", "4")),
    Benchmark("soak.py", ("--hours", "0.25")),
    Benchmark(
        "soak_system.py",
        ("--minutes", "0.7", "--warmup-s", "15", "--extrapolate-h", "0"),
        ("--minutes", "65"),
    ),
    Benchmark("kill.py", ("--kills", "3")),
    Benchmark("kill_alone.py", ("--kills", "3", "--max-s", "6"), ("--kills", "20")),
    Benchmark("wal_growth.py", ("--seconds", "2"), ("--seconds", "6")),
    Benchmark("outages.py", ("--outages", "3", "--stalls", "2", "--max-s", "2")),
    Benchmark(
        "export.py",
        ("--minutes", "1", "3", "--formats", "xdf", "edf", "bids", "--peer-minutes", "3"),
        ("--minutes", "1", "10", "120", "--peer-minutes", "120"),
    ),
    Benchmark("grid.py", ("--hours", "0.1", "--points", "3"), ("--hours", "2")),
    Benchmark("demo_sync.py", ("--runs", "1"), ("--runs", "3")),
)


def benchmarks_dir() -> Path | None:
    """The source checkout's `benchmarks/` folder, or None (an installed wheel has none)."""
    folder = Path(__file__).resolve().parents[2] / "benchmarks"
    return folder if (folder / "_results.py").exists() else None


def run_bench(quick: bool, out: TextIO) -> tuple[list[dict[str, Any]], list[str]]:
    """Run every benchmark; (rows, names of the ones that crashed)."""
    folder = benchmarks_dir()
    if folder is None:
        raise FileNotFoundError(
            "needlelab bench runs the scripts of a source checkout's benchmarks/ folder: "
            "git clone the project and pip install -e it"
        )
    rows: list[dict[str, Any]] = []
    crashed: list[str] = []
    env = dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"))
    with tempfile.TemporaryDirectory() as tmp:
        for bench in PLAN:
            result = Path(tmp) / f"{bench.script}.json"
            args = bench.quick if quick else bench.full
            start = time.monotonic()
            out.write(f"running {bench.script} {' '.join(args)} ...\n")
            out.flush()
            done = subprocess.run(
                [sys.executable, str(folder / bench.script), *args, "--json", str(result)],
                cwd=folder.parent, capture_output=True, text=True, env=env,
            )  # fmt: skip
            took = time.monotonic() - start
            if done.returncode != 0 or not result.exists():
                crashed.append(bench.script)
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                out.write(f"  CRASHED after {took:.0f} s: {' | '.join(tail)}\n")
                continue
            for row in json.loads(result.read_text())["rows"]:
                rows.append({**row, "script": bench.script, "seconds": round(took, 1)})
    return rows, crashed


def format_table(rows: list[dict[str, Any]]) -> str:
    """The table: figure, value, goal and whether it is met, the peer, and how many times better
    needlelab does than the peer ("vs peer", > 1 is better)."""

    def num(value: float | None, unit: str = "") -> str:
        if value is None:
            return "—"
        if abs(value) >= 1000:
            return f"{value:,.0f} {unit}".strip()
        return f"{value:.3g} {unit}".strip()

    header = ("#", "figure", "value", "goal", "met", "peer", "peer value", "vs peer")
    table = [header] + [
        (
            r["id"], r["figure"], num(r["value"], r["unit"]), r["goal"],
            "—" if r["met"] is None else "yes" if r["met"] else "NO", r.get("peer", ""),
            num(r.get("peer_value"), r["unit"]),
            "—" if r.get("ratio") is None else f"{r['ratio']:.2f}x",
        )
        for r in rows
    ]  # fmt: skip
    # Every column as wide as its widest cell (nothing cut); numbers right-aligned.
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    right = {2, 6, 7}
    return "\n".join(
        " ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in table
    )


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def format_markdown(saved: dict[str, Any]) -> str:
    """A saved run (`needlelab bench --json`) as the README's table: one line naming the run (and
    its commit, where it was recorded), its date and its machine, then one markdown table of
    every figure beside its goal and its peer."""
    info = saved.get("machine") or {}
    kind = "`needlelab bench --quick`" if saved.get("quick") else "`needlelab bench`"
    checkout = saved.get("source")
    if checkout:
        kind += f" of commit {str(checkout['commit'])[:12]}"
        kind += " with uncommitted changes" if checkout.get("modified") else ""
    head = (
        f"needlelab {saved.get('version', '?')}, {kind}, {saved.get('when', 'date unknown')}; "
        f"machine: {info.get('cpus', '?')} CPUs ({info.get('processor', '?')}), "
        f"Python {info.get('python', '?')}, {info.get('platform', '?')}"
    )

    def num(value: float | None, unit: str = "") -> str:
        if value is None:
            return "—"
        text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
        return f"{text} {unit}".strip()

    lines = [
        head,
        "",
        "| # | figure | value | goal | met | peer (what it does) | peer value | vs peer |",
        "|---|---|--:|---|---|---|--:|--:|",
    ]
    for r in saved.get("rows", []):
        met = r.get("met")
        lines.append(
            "| " + " | ".join(_cell(c) for c in (
                str(r["id"]), str(r["figure"]), num(r["value"], r.get("unit", "")),
                str(r.get("goal", "")), "—" if met is None else "yes" if met else "**no**",
                str(r.get("peer") or "—"), num(r.get("peer_value"), r.get("unit", "")),
                "—" if r.get("ratio") is None else f"{r['ratio']:.2f}x",
            )) + " |"
        )  # fmt: skip
    crashed = saved.get("crashed") or []
    if crashed:
        lines += ["", f"crashed (no figures): {', '.join(crashed)}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m needlelab.bench RUN.json`: print a saved run as the README's markdown table.

    Exit 2 with one line if the file is not a saved run."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m needlelab.bench",
        description="print a saved `needlelab bench --json` run as the README's markdown table",
    )
    parser.add_argument("run", type=Path, help="a file written by `needlelab bench --json`")
    args = parser.parse_args(argv)
    try:
        load_baseline(args.run)  # the same checks as --baseline: one line if it is not one
        saved = json.loads(args.run.read_text(encoding="utf-8"))
    except ValueError as exc:
        sys.stderr.write(
            f"needlelab bench: {exc}. Give a file written by `needlelab bench --json`.\n"
        )
        return 2
    sys.stdout.write(format_markdown(saved) + "\n")
    return 0


SAME_WITHIN = 0.10  # a change smaller than this is noise on a shared machine


def load_baseline(path: Path) -> dict[str, Any]:
    """A saved run (`needlelab bench --json`): its figures by id, kind of run, date and machine.

    `ValueError` with one line if the file is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = [{"id": str(r["id"]), "value": float(r["value"])} for r in data["rows"]]
        machine = data.get("machine")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read it: {exc}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"{path}: not the JSON of `needlelab bench --json` ({type(exc).__name__}: {exc})"
        ) from None
    if not rows:
        raise ValueError(f"{path}: it holds no figures")
    return {
        "rows": rows,
        "quick": data.get("quick") is True,
        "when": str(data.get("when", "date unknown")),
        "machine": machine if isinstance(machine, dict) else {},
    }


def format_comparison(rows: list[dict[str, Any]], baseline: dict[str, Any]) -> str:
    """Each figure now against a saved run: the factor and whether it got better or worse.

    A factor within `SAME_WITHIN` of 1 is "same". The direction comes from each row's `better`.
    """
    then = {r["id"]: r for r in baseline["rows"]}
    lines = []
    for r in rows:
        old = then.get(r["id"])
        if old is None or not old["value"] or not r["value"]:
            lines.append(f"{r['id']:<3} {'new' if old is None else 'not comparable (zero)'}")
            continue
        factor = r["value"] / old["value"]
        gain = factor if r.get("better", "higher") == "higher" else 1 / factor
        verdict = "same" if abs(gain - 1) < SAME_WITHIN else "better" if gain > 1 else "WORSE"
        lines.append(
            f"{r['id']:<3} {old['value']:>12.4g} -> {r['value']:<12.4g} {r['unit']:<10} "
            f"x{factor:<8.3f} {verdict}"
        )
    return "\n".join(lines)


def source(folder: Path | None = None) -> dict[str, Any] | None:
    """The commit of the checkout whose benchmarks ran, and whether its tracked files differed
    from it ({"commit": full hash, "modified": bool}); None outside a git checkout."""
    folder = folder or benchmarks_dir()
    if folder is None:
        return None

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, check=True,
            timeout=30,
        ).stdout.strip()  # fmt: skip

    try:
        commit = git("rev-parse", "HEAD")
        modified = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout
        return None
    return {"commit": commit, "modified": modified}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.machine(),
    }


if __name__ == "__main__":
    sys.exit(main())
