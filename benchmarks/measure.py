"""Subprocesses with per-process peak memory.

Every fit of the suites runs in its own subprocess, so that its peak memory
(the maximum resident set size of that process) belongs to one tool and one
model. A worker reports its answer as JSON; :func:`collect` merges it with what
the parent saw (status, wall time, polled peak memory).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ._common import REPO, mem_available, vm_hwm

DEFAULT_TIMEOUT = 30 * 60  # seconds, any subprocess
MIN_FREE_MEMORY = 1.0 * 2**30  # a fit is stopped when the machine has less available


@dataclass(frozen=True)
class ProcessRun:
    """What the parent saw of one subprocess."""

    returncode: int
    timed_out: bool
    out_of_memory: bool
    wall_s: float
    polled_hwm_bytes: int  # the last VmHWM read from outside while it ran
    wait4_maxrss_bytes: int
    stdout: str
    stderr: str

    def tail(self, lines: int = 15) -> str:
        """The last lines of stderr (of stdout when stderr is empty)."""
        return "\n".join((self.stderr or self.stdout).strip().splitlines()[-lines:])

    def failure(self, what: str, timeout: float) -> str:
        """Why the process gave no answer, for a report."""
        if self.timed_out:
            return f"{what}: did not finish in {timeout / 60:.0f} min"
        if self.out_of_memory:
            return f"{what}: stopped when the machine had under {MIN_FREE_MEMORY / 2**30:.1f} GiB available"
        return f"{what} failed (exit {self.returncode}):\n{self.tail(25)}"


def run_measured(
    cmd: list[str], timeout: float, workdir: Path, label: str, env: dict | None = None, cwd: Path = REPO
) -> ProcessRun:
    """Runs cmd in its own session (from the repository root by default), polling its peak memory.

    The process is killed (with its children) when it runs past ``timeout``
    seconds or when the machine's available memory falls under MIN_FREE_MEMORY.
    Its output goes to ``workdir/label.stdout`` and ``.stderr``.
    """
    out_path = workdir / f"{label}.stdout"
    err_path = workdir / f"{label}.stderr"
    t0 = time.perf_counter()
    timed_out = out_of_memory = False
    peak = 0
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=cwd, env=env, start_new_session=True)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid != 0:
                break
            peak = max(peak, vm_hwm(proc.pid))
            out_of_memory = mem_available() < MIN_FREE_MEMORY
            timed_out = time.perf_counter() - t0 > timeout
            if out_of_memory or timed_out:
                os.killpg(proc.pid, signal.SIGKILL)  # the session this call started
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
    return ProcessRun(
        returncode=os.waitstatus_to_exitcode(status),
        timed_out=timed_out,
        out_of_memory=out_of_memory,
        wall_s=time.perf_counter() - t0,
        polled_hwm_bytes=peak,
        wait4_maxrss_bytes=usage.ru_maxrss * 1024,  # Linux reports kilobytes
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
    )


def run_python_worker(kind: str, spec: dict, workdir: Path, label: str, timeout: float) -> dict:
    """Runs ``python -m benchmarks --worker kind`` on spec (JSON); returns :func:`collect`'s answer."""
    spec_path = workdir / f"{label}.spec.json"
    out_path = workdir / f"{label}.result.json"
    spec_path.write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "benchmarks", "--worker", kind, str(spec_path), str(out_path)]
    run = run_measured(cmd, timeout, workdir, label)
    return collect(run, out_path.read_text() if out_path.exists() else None, timeout)


def collect(run: ProcessRun, payload: str | None, timeout: float) -> dict:
    """The worker's own answer (JSON) with status and peak memory.

    Peak memory: VmHWM read by the worker at its end (``peak_rss_bytes`` in
    the payload), else the last VmHWM polled from outside.
    """
    base = {
        "maxrss_bytes": run.polled_hwm_bytes,
        "maxrss_source": "polled VmHWM",
        "wall_s": run.wall_s,
        "wait4_maxrss_bytes": run.wait4_maxrss_bytes,
    }
    if run.out_of_memory:
        return {
            **base,
            "status": "out of memory",
            "error": f"stopped when the machine had under {MIN_FREE_MEMORY / 2**30:.1f} GiB available "
            f"(process peak {base['maxrss_bytes'] / 2**30:.1f} GiB)",
        }
    if run.timed_out:
        return {**base, "status": "timeout", "error": f"did not finish in {timeout / 60:.0f} min"}
    if run.returncode != 0 or payload is None:
        return {**base, "status": "error", "returncode": run.returncode, "error": run.tail()}
    result = {**base, "status": "ok", **json.loads(payload)}
    if result.get("peak_rss_bytes"):
        result["maxrss_bytes"] = max(result["peak_rss_bytes"], base["maxrss_bytes"])
        result["maxrss_source"] = "VmHWM at the end of the process"
    return result


def brief(r: dict, key: str) -> str:
    """One line about a tool's answer: its time and peak memory, or what went wrong."""
    if r.get("status") != "ok":
        return f"{r.get('status')}: {str(r.get('error', ''))[-300:]}"
    return f"{r[key]:.4g} s, peak RSS {r['maxrss_bytes'] / 2**20:.0f} MiB"
