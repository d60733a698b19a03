"""Subprocesses with per-process peak memory, and repeat timings.

Every fit of the peer and real-models suites runs in its own subprocess, so
that its peak memory (the maximum resident set size of that process) belongs
to one tool and one model. A worker reports its answer as JSON; :func:`collect`
merges it with what the parent saw (status, wall time, polled peak memory).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"  # the default output folder of every suite

DEFAULT_TIMEOUT = 30 * 60  # seconds, any subprocess
MIN_FREE_MEMORY = 1.0 * 2**30  # a fit is stopped when the machine has less available


def log(msg: str) -> None:
    """Progress, on stderr (stdout carries the tables)."""
    print(msg, file=sys.stderr, flush=True)


def git(*args: str) -> str:
    """The output of ``git args`` in the repository ('' when git is unavailable)."""
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def no_compilation_cache() -> None:
    """Switches off persistent compilation caches: a first call must include its compilation.

    Call before jaxmixed compiles anything. jaxmixed's own disk cache reads
    ``JAXMIXED_COMPILATION_CACHE`` (set here unless the caller set it); JAX's
    cache is switched off in this process.
    """
    os.environ.setdefault("JAXMIXED_COMPILATION_CACHE", "0")
    import jax

    try:
        jax.config.update("jax_enable_compilation_cache", False)
    except AttributeError:  # a jax without the option has no cache to switch off
        pass


def command_line() -> str:
    """The command that started this run, as typed (``python -m benchmarks ...`` included)."""
    return " ".join([Path(sys.executable).name, *sys.orig_argv[1:]])


def timed_repeats(
    fn: Callable[[], object], min_repeats: int = 3, max_repeats: int = 5, budget: float = 20.0
) -> list[float]:
    """Runs fn until max_repeats, or min_repeats once budget seconds are spent; returns times."""
    times: list[float] = []
    while len(times) < max_repeats:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= min_repeats and sum(times) > budget:
            break
    return times


def vm_hwm(pid: int | str = "self") -> int:
    """Peak resident set size (VmHWM) of a live process in bytes; 0 when unavailable.

    Unlike ``ru_maxrss``, VmHWM belongs to the process's current address space
    only: ``ru_maxrss`` of a forked-and-exec'd child starts at the parent's
    peak, which would hide small peaks under the parent's ~200 MiB.
    """
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def mem_available() -> float:
    """MemAvailable of the machine in bytes (inf when unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return float("inf")


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


def run_measured(cmd: list[str], timeout: float, workdir: Path, label: str) -> ProcessRun:
    """Runs cmd in its own session from the repository root, polling its peak memory.

    The process is killed (with its children) when it runs past ``timeout``
    seconds or when the machine's available memory falls under MIN_FREE_MEMORY.
    """
    out_path = workdir / f"{label}.stdout"
    err_path = workdir / f"{label}.stderr"
    t0 = time.perf_counter()
    timed_out = out_of_memory = False
    peak = 0
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=REPO, start_new_session=True)
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
        tail = (run.stderr or run.stdout).strip().splitlines()[-15:]
        return {**base, "status": "error", "returncode": run.returncode, "error": "\n".join(tail)}
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
