"""Helpers every benchmark shares: progress, timing, memory, the idle check, results files, tables.

Nothing here imports jaxmixed (or JAX) at import time: ``compare_versions.py``
imports this module in worker processes that run another tree's jaxmixed, and
the orchestrating processes of every suite stay small.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"  # the default output folder of every suite
LOAD_LIMIT = 0.5  # a 1-minute load average above this makes timings unreliable


def log(msg: str) -> None:
    """Progress, on stderr (stdout carries the tables)."""
    print(msg, file=sys.stderr, flush=True)


def git(*args: str, tree: Path = REPO) -> str:
    """The output of ``git -C tree args`` ('' when git fails or is unavailable)."""
    try:
        proc = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def git_state(tree: Path = REPO) -> dict:
    """The commit of tree and whether its ``jaxmixed/`` has uncommitted changes."""
    return {
        "git_commit": git("rev-parse", "--short", "HEAD", tree=tree),
        "jaxmixed_dirty": bool(git("status", "--porcelain", "--", "jaxmixed", tree=tree)),
    }


def run_environment() -> dict:
    """The machine, the checkout and the JAX version of a results file."""
    import jax

    return {**environment(), **git_state(), "jax": jax.__version__}


def command_line() -> str:
    """The command that started this run, as typed (``python -m benchmarks ...`` included)."""
    return " ".join([Path(sys.executable).name, *sys.orig_argv[1:]])


def environment() -> dict:
    """The machine and the command line (the suites add versions and the commit)."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "load_1min_at_start": load_1min(),
        "command": command_line(),
    }


def library_versions() -> dict:
    """jax's and jaxmixed's versions (imports both)."""
    import jax

    import jaxmixed

    return {"jax": jax.__version__, "jaxmixed": getattr(jaxmixed, "__version__", "?")}


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


def load_1min() -> float:
    """The 1-minute load average (0 where the system does not say)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def python_processes() -> list[str]:
    """The python processes that ps shows (pid, %cpu, elapsed, command), other than this one."""
    try:
        lines = subprocess.run(
            ["ps", "-eo", "pid,pcpu,etime,args"], capture_output=True, text=True, timeout=10
        ).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return []
    me = str(os.getpid())
    found = []
    for line in lines[1:]:
        parts = line.split(None, 3)
        if len(parts) == 4 and parts[0] != me and "python" in parts[3].lower():
            found.append(line.strip())
    return found


def check_idle(limit: float = LOAD_LIMIT) -> dict:
    """Warns (stderr) when the load average is above limit, with the python processes that ps shows."""
    try:
        load = list(os.getloadavg())
    except OSError:
        load = [0.0, 0.0, 0.0]
    others = python_processes()
    if load[0] > limit:
        log(
            f"WARNING: the 1-minute load average is {load[0]:.2f} (> {limit}): the machine is "
            "busy and the timings will be too slow and noisy"
        )
        if others:
            log("python processes visible to ps (pid, %cpu, elapsed, command):")
            for line in others:
                log(f"  {line[:200]}")
    return {"loadavg": load, "python_processes": others, "busy": load[0] > limit}


def timed(fn: Callable, *args, **kwargs) -> tuple[float, object]:
    """(seconds, result) of one call ``fn(*args, **kwargs)``."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def timed_repeats(
    fn: Callable[[], object], min_repeats: int = 3, max_repeats: int = 5, budget: float = 20.0
) -> list[float]:
    """Runs fn until max_repeats, or min_repeats once budget seconds are spent; returns the times.

    The caller makes the warm-up call (usually timed on its own as the first
    call, compilation included) and takes the median of these times.
    """
    times: list[float] = []
    while len(times) < max_repeats:
        times.append(timed(fn)[0])
        if len(times) >= min_repeats and sum(times) > budget:
            break
    return times


def per_call_seconds(fn: Callable[[], object], samples: int = 5, min_sample_s: float = 0.05) -> float:
    """Seconds per call of fn: after a warm-up call, the median over samples of enough calls to last min_sample_s.

    Calls of a few microseconds are timed in batches, so that the clock's
    resolution and the loop do not dominate. fn must wait for its result
    (``jax.block_until_ready``).
    """
    fn()  # warm-up: compiles on a first call
    calls = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        if time.perf_counter() - t0 >= min_sample_s or calls >= 2**20:
            break
        calls *= 4
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times)


@contextmanager
def caught_warnings() -> Iterator[list]:
    """Records every warning raised inside (``warnings.catch_warnings(record=True)``, all shown)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def warning_lines(caught: Iterable, width: int = 300) -> list[str]:
    """The distinct recorded warnings as 'Category: message', each cut at width characters."""
    return sorted({f"{w.category.__name__}: {w.message}"[:width] for w in caught})


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


def peak_memory() -> dict:
    """VmHWM and ru_maxrss of this process (bytes), for a process whose parent stays small."""
    return {"vmhwm": vm_hwm(), "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


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


def write_json(path: Path, obj) -> None:
    """obj as indented JSON at path (values JSON does not know written as strings)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=str) + "\n")


def write_results(out_dir: Path, stem: str, results: dict, text: str) -> None:
    """``stem.json`` (every number) and ``stem.md`` (the report) in out_dir."""
    write_json(out_dir / f"{stem}.json", results)
    (out_dir / f"{stem}.md").write_text(text)


def json_worker(fn: Callable[[dict], dict], spec_path: str, out_path: str) -> None:
    """A worker process: fn on the JSON spec at spec_path; its answer as JSON at out_path."""
    spec = json.loads(Path(spec_path).read_text())
    Path(out_path).write_text(json.dumps(fn(spec)))


def fmt_s(x) -> str:
    """Seconds with three significant digits or so; "–" for a missing value."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    if x >= 0.01:
        return f"{x:.3f}"
    return f"{x:.2g}"


def fmt_rel(x) -> str:
    """A relative difference: "–" missing, "n/a" not comparable."""
    if x is None:
        return "–"
    if isinstance(x, float) and math.isnan(x):
        return "n/a"
    return f"{x:.1e}"


def fmt_mib(b, unit: bool = False) -> str:
    """Bytes in MiB: "1234", or with unit "1,234 MiB" (then 0 counts as missing too); "–" missing."""
    if b is None or (unit and not b):
        return "–"
    return f"{b / 2**20:,.0f} MiB" if unit else f"{b / 2**20:.0f}"


def fmt_ratio(a, b, digits: int = 1, suffix: str = "×") -> str:
    """a / b, or "–" when either is missing or zero."""
    if not a or not b or b <= 0:
        return "–"
    return f"{a / b:.{digits}f}{suffix}"


def md_row(cells: Sequence[object]) -> str:
    """One row of a markdown table (an empty cell as '| |')."""
    return "|" + "|".join(f" {c} " if str(c) else " " for c in cells) + "|"


def md_table(
    columns: str | Sequence[str], rows: Iterable[Sequence[object]], align: str | None = None
) -> list[str]:
    """A markdown table's lines: header, alignment, rows.

    ``columns``: the headers, or one string of them separated by ' | '.
    ``align``: one letter per column, 'l' left or 'r' right; by default the
    first column left and the others right.
    """
    if isinstance(columns, str):
        columns = columns.split(" | ")
    align = align or "l" + "r" * (len(columns) - 1)
    rule = "|" + "".join("---|" if a == "l" else "---:|" for a in align)
    return [md_row(columns), rule, *(md_row(r) for r in rows)]
