"""lme4 through ``Rscript benchmarks/lme4.R``, in a measured subprocess."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ._common import HERE
from .measure import collect, run_measured

LME4_SCRIPT = HERE / "lme4.R"


def r_packages_available(*packages: str) -> tuple[bool, str]:
    """Whether Rscript runs and loads every package; else False and why."""
    if shutil.which("Rscript") is None:
        return False, "Rscript not found on PATH"
    code = "; ".join(f"suppressPackageStartupMessages(library({p}))" for p in packages)
    try:
        proc = subprocess.run(["Rscript", "-e", code], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"Rscript failed: {exc}"
    if proc.returncode != 0:
        return False, f"R package(s) {', '.join(packages)} not installed: " + proc.stderr.strip()[-200:]
    return True, ""


def lme4_available() -> tuple[bool, str]:
    """Whether lme4 can be used; else False and why."""
    return r_packages_available("lme4")


@dataclass(frozen=True)
class Repeats:
    """How often lme4.R fits: until ``most`` fits, or ``least`` once ``budget_s`` seconds are spent."""

    least: int = 1
    most: int = 5
    budget_s: float = 2.0


def run_lme4(
    formula: str,
    factors: tuple[str, ...] | list[str],
    csv: Path,
    workdir: Path,
    label: str,
    timeout: float,
    *,
    levels_csv: Path | None = None,
    repeats: Repeats = Repeats(),  # noqa: B008  (frozen: never changed)
) -> dict:
    """Fits formula on csv with lmer; returns the JSON line of lme4.R with status and peak memory."""
    cmd = [
        "Rscript",
        str(LME4_SCRIPT),
        str(csv),
        formula,
        ",".join(factors),
        str(levels_csv or ""),
        str(repeats.least),
        str(repeats.most),
        str(repeats.budget_s),
    ]
    run = run_measured(cmd, timeout, workdir, label)
    payload = None
    for line in run.stdout.splitlines():
        if line.startswith("JSON:"):
            payload = line[len("JSON:") :]
    return collect(run, payload, timeout)
