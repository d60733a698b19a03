#!/usr/bin/env python
"""Before/after timings of the public ``jaxmixed.fit_reml`` for two source trees.

Each tree is a checkout that contains a ``jaxmixed/`` package (for example a
``git worktree`` of the old commit and the working copy). Every measurement
runs in a fresh subprocess of this same Python interpreter with
``PYTHONPATH=<tree>``; the subprocess checks that ``jaxmixed.__file__`` lies
under that tree before it measures anything.

Per case and tree, each process measures

- the first call of ``jaxmixed.fit_reml(formula, data=df)`` in the process
  (formula handling, XLA compilation, the fit, the results; JAX's backend
  start-up is done before),
- the steady state: the median of up to 5 further calls (fewer when they
  would pass a 20 s budget),
- the REML criterion (``res.objective``).

The processes alternate (before, after, before, after: 2 processes per tree
per case by default) so that drift of the machine affects both trees, and the
table reports the median over a tree's processes. The data of a case are made
once (with the after tree's ``jaxmixed`` for the bundled datasets), by
``benchmarks.cases.make_data``, and every process reads the same pickle.

Writes ``benchmarks/results/before_after.md`` (the table, also printed) and
``benchmarks/results/before_after.json`` (every number).

Usage (from the repository root):

    git worktree add /tmp/old HEAD        # or any commit to compare against
    .venv/bin/python benchmarks/compare_versions.py --before /tmp/old --after .
    .venv/bin/python benchmarks/compare_versions.py --before /tmp/old --after . --cases a --quick

Timings are only meaningful on an otherwise idle machine: the script warns
when the 1-minute load average is above 0.5 and lists the Python processes
it can see.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The benchmarks package, one level up. Appended, not prepended: a worker must
# import jaxmixed from its tree (PYTHONPATH), never from this checkout.
sys.path.append(str(HERE.parent))

from benchmarks import cases  # noqa: E402  (the case definitions and data)
from benchmarks._format import fmt_s  # noqa: E402
from benchmarks.measure import timed_repeats, vm_hwm  # noqa: E402

RESULTS = HERE / "results"
TREES = ("before", "after")
DEFAULT_TIMEOUT = 30 * 60  # seconds per process
LOAD_LIMIT = 0.5


# --------------------------------------------------------------------------------------
# Subprocess side
# --------------------------------------------------------------------------------------


def worker(spec_path: str, out_path: str) -> None:
    """Measures one tree on one case in this (fresh) process; writes JSON to out_path."""
    spec = json.loads(Path(spec_path).read_text())
    tree = Path(spec["tree"]).resolve()

    import jaxmixed  # from PYTHONPATH=<tree>

    where = Path(jaxmixed.__file__).resolve()
    if not where.is_relative_to(tree):
        raise SystemExit(f"jaxmixed was imported from {where}, not from the tree {tree}")

    import jax
    import jax.numpy as jnp
    import pandas as pd

    df = pd.read_pickle(spec["data"])
    formula = spec["formula"]
    jnp.zeros(1).block_until_ready()  # JAX backend start-up is not part of any fit

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        res = jaxmixed.fit_reml(formula, data=df)
        first = time.perf_counter() - t0

        values: list[float] = []
        times = timed_repeats(
            lambda: values.append(float(jaxmixed.fit_reml(formula, data=df).objective)),
            min_repeats=1,
            max_repeats=spec["repeats"],
            budget=spec["budget"],
        )

    result = {
        "first_call_s": first,
        "steady_s": statistics.median(times),
        "steady_times": times,
        "objective": float(res.objective),
        "objective_repeats": values,
        "n_obs": int(res.nobs),
        "n_iter": int(res.n_iter),
        "converged": bool(res.converged),
        "jaxmixed_file": str(where),
        "warnings": sorted({f"{w.category.__name__}: {w.message}"[:300] for w in caught}),
        "versions": {"jax": jax.__version__, "jaxmixed": getattr(jaxmixed, "__version__", "")},
        "peak_rss_bytes": vm_hwm(),
    }
    Path(out_path).write_text(json.dumps(result))


def make_data_main(key: str, out_path: str, quick: bool) -> None:
    """Writes the data of one case (run under the after tree, for the bundled datasets)."""
    case = cases.case_specs(quick)[key]
    cases.make_data(case.make, quick).to_pickle(out_path)


# --------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def tree_env(tree: Path) -> dict:
    env = dict(os.environ)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(tree) + (os.pathsep + old if old else "")
    return env


def run_child(args: list[str], tree: Path, workdir: Path, label: str, timeout: float) -> dict:
    """Runs this script with args under PYTHONPATH=tree; returns rc, timeout flag, wall time, output."""
    out_path = workdir / f"{label}.stdout"
    err_path = workdir / f"{label}.stderr"
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    t0 = time.perf_counter()
    timed_out = False
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=err, cwd=workdir, env=tree_env(tree), start_new_session=True
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)  # the session this call started
            proc.wait()
    return {
        "returncode": proc.returncode,
        "timed_out": timed_out,
        "wall_s": time.perf_counter() - t0,
        "stdout": out_path.read_text(errors="replace"),
        "stderr": err_path.read_text(errors="replace"),
    }


def measure(case: cases.Case, tree: Path, data: Path, workdir: Path, label: str, args) -> dict:
    spec_path = workdir / f"{label}.spec.json"
    out_path = workdir / f"{label}.result.json"
    spec_path.write_text(
        json.dumps(
            {
                "tree": str(tree),
                "data": str(data),
                "formula": case.formula,
                "repeats": args.repeats,
                "budget": args.budget,
            }
        )
    )
    load = os.getloadavg()[0]
    run = run_child(["--worker", str(spec_path), str(out_path)], tree, workdir, label, args.timeout)
    base = {"wall_s": run["wall_s"], "load_1min_at_start": load}
    if run["timed_out"]:
        return {**base, "status": "timeout", "error": f"did not finish in {args.timeout:.0f} s"}
    if run["returncode"] != 0 or not out_path.exists():
        tail = (run["stderr"] or run["stdout"]).strip().splitlines()[-15:]
        return {**base, "status": "error", "returncode": run["returncode"], "error": "\n".join(tail)}
    return {**base, "status": "ok", **json.loads(out_path.read_text())}


def make_case_data(key: str, tree: Path, workdir: Path, args) -> Path:
    path = workdir / f"{key}.pkl"
    cmd = ["--make-data", key, str(path)] + (["--quick"] if args.quick else [])
    run = run_child(cmd, tree, workdir, f"{key}-data", args.timeout)
    if run["returncode"] != 0 or not path.exists():
        tail = (run["stderr"] or run["stdout"]).strip().splitlines()[-15:]
        raise RuntimeError(f"making the data of case ({key}) failed:\n" + "\n".join(tail))
    return path


def summarise(runs: list[dict]) -> dict:
    ok = [r for r in runs if r.get("status") == "ok"]
    out: dict = {"n_ok": len(ok), "n_runs": len(runs)}
    if ok:
        objectives = [r["objective"] for r in ok]
        out.update(
            steady_s=statistics.median(r["steady_s"] for r in ok),
            first_call_s=statistics.median(r["first_call_s"] for r in ok),
            objective=objectives[0],
            objective_spread=max(objectives) - min(objectives),
            n_iter=ok[0]["n_iter"],
            converged=all(r["converged"] for r in ok),
            n_obs=ok[0]["n_obs"],
        )
    return out


def ps_python() -> list[str]:
    """The python processes that ps shows, other than this one."""
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


def check_idle() -> dict:
    load = os.getloadavg()
    others = ps_python()
    if load[0] > LOAD_LIMIT:
        log(
            f"WARNING: the 1-minute load average is {load[0]:.2f} (> {LOAD_LIMIT}): the machine is "
            "busy and the timings will be too slow and noisy"
        )
    if others:
        log("python processes visible to ps (pid, %cpu, elapsed, command):")
        for line in others:
            log(f"  {line[:200]}")
    return {"loadavg": list(load), "python_processes": others, "busy": load[0] > LOAD_LIMIT}


def git_info(tree: Path) -> dict:
    def git(*args):
        try:
            proc = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return proc.stdout.strip() if proc.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    return {
        "path": str(tree),
        "git_commit": commit or "not a git checkout",
        "jaxmixed_dirty": bool(git("status", "--porcelain", "--", "jaxmixed")) if commit else None,
    }


def ratio(after, before) -> str:
    if after is None or before is None or before <= 0:
        return "–"
    return f"{after / before:.2f}"


def fmt_obj(x) -> str:
    return "–" if x is None else f"{x:.6f}"


def markdown(results: dict) -> str:
    env = results["environment"]
    trees = results["trees"]

    def describe(t: str) -> str:
        info = trees[t]
        dirty = " (jaxmixed/ modified)" if info["jaxmixed_dirty"] else ""
        return f"{t}: `{info['path']}` at {info['git_commit']}{dirty}"

    idle = results["idle_check"]
    lines = [
        "# jaxmixed before/after",
        "",
        f"{env['date']}; {env['platform']}, {env['cpu_count']} CPUs; Python {env['python']}; "
        f"jax {results.get('jax_version', '?')}.",
        "",
        f"- {describe('before')}",
        f"- {describe('after')}",
        f"- 1-minute load average at the start: {idle['loadavg'][0]:.2f}"
        + (" (busy machine: timings are unreliable)" if idle["busy"] else ""),
        "",
        f"Command: `{env['command']}`",
        "",
        f"Public `jaxmixed.fit_reml(formula, data=df)` (REML). Per tree and case, "
        f"{results['processes']} fresh processes, alternating before/after; each measures the first "
        f"call (compilation included) and the steady state (median of up to {results['repeats']} "
        f"calls within {results['budget']:.0f} s). Cells are medians over the processes, in "
        "seconds; ratio = after / before (below 1: after is faster).",
        "",
        "| case | before steady | after steady | ratio | before first call | after first call | ratio "
        "| objective before | objective after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for key, c in results["cases"].items():
        b, a = c["summary"]["before"], c["summary"]["after"]
        lines.append(
            f"| ({key}) {c['title']} | {fmt_s(b.get('steady_s'))} | {fmt_s(a.get('steady_s'))} "
            f"| {ratio(a.get('steady_s'), b.get('steady_s'))} "
            f"| {fmt_s(b.get('first_call_s'))} | {fmt_s(a.get('first_call_s'))} "
            f"| {ratio(a.get('first_call_s'), b.get('first_call_s'))} "
            f"| {fmt_obj(b.get('objective'))} | {fmt_obj(a.get('objective'))} |"
        )
        if b.get("objective") is not None and a.get("objective") is not None:
            diff = abs(a["objective"] - b["objective"])
            if diff > 1e-6 * (1.0 + abs(b["objective"])):
                notes.append(f"- ({key}) the objectives of before and after differ by {diff:.3g}")
        for t in TREES:
            s = c["summary"][t]
            if s["n_ok"] and not s["converged"]:
                notes.append(f"- ({key}) {t}: the fit did not converge ({s['n_iter']} iterations)")
            if s["n_ok"] and s["objective_spread"] > 0:
                notes.append(
                    f"- ({key}) {t}: objectives differ across processes by {s['objective_spread']:.2e}"
                )
            for r in c["runs"][t]:
                if r.get("status") != "ok":
                    err = str(r.get("error", "")).strip().replace("\n", " / ")[-400:]
                    notes.append(f"- ({key}) {t}: {r.get('status')}: {err}")
                for w in r.get("warnings", []):
                    notes.append(f"- ({key}) {t} warned: {w}")
                if r.get("load_1min_at_start", 0.0) > LOAD_LIMIT:
                    notes.append(
                        f"- ({key}) {t}: a process started at load average {r['load_1min_at_start']:.2f}"
                    )
    if notes:
        lines += ["", "## Notes", "", *dict.fromkeys(notes)]
    return "\n".join(lines) + "\n"


def save(results: dict, stem: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=1, default=str))
    (RESULTS / f"{stem}.md").write_text(markdown(results))


def check_tree(parser, name: str, value: str) -> Path:
    tree = Path(value).resolve()
    if not (tree / "jaxmixed" / "__init__.py").is_file():
        parser.error(f"--{name} {value}: no jaxmixed/__init__.py under {tree}")
    return tree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", help="source tree with the old jaxmixed/ package")
    parser.add_argument("--after", help="source tree with the new jaxmixed/ package")
    parser.add_argument("--cases", default="a,b,c,d", help="comma-separated subset of a,b,c,d")
    parser.add_argument("--quick", action="store_true", help="small sizes (run_benchmarks' --quick data)")
    parser.add_argument("--processes", type=int, default=2, help="fresh processes per tree and case (2)")
    parser.add_argument("--repeats", type=int, default=5, help="steady-state calls per process (5)")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds of steady-state calls (20)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per process")
    parser.add_argument("--output", default="before_after", help="file stem in benchmarks/results/")
    parser.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--make-data", nargs=2, metavar=("CASE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return 0
    if args.make_data:
        make_data_main(*args.make_data, args.quick)
        return 0

    if not args.before or not args.after:
        parser.error("--before and --after are required")
    trees = {
        "before": check_tree(parser, "before", args.before),
        "after": check_tree(parser, "after", args.after),
    }
    if args.processes < 1 or args.repeats < 1:
        parser.error("--processes and --repeats must be at least 1")
    specs = cases.case_specs(args.quick)
    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(wanted) - set(specs)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; choose from a,b,c,d")

    results: dict = {
        "environment": {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "executable": sys.executable,
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
        },
        "idle_check": check_idle(),
        "trees": {t: git_info(p) for t, p in trees.items()},
        "quick": args.quick,
        "processes": args.processes,
        "repeats": args.repeats,
        "budget": args.budget,
        "cases": {},
    }

    with tempfile.TemporaryDirectory(prefix="jaxmixed-compare-") as tmp:
        workdir = Path(tmp)
        for key in wanted:
            spec = specs[key]
            log(f"case ({key}) {spec.title}")
            data = make_case_data(key, trees["after"], workdir, args)
            runs: dict[str, list[dict]] = {t: [] for t in TREES}
            for i in range(args.processes):
                for t in TREES:
                    label = f"{key}-{t}-{i}"
                    r = measure(spec, trees[t], data, workdir, label, args)
                    runs[t].append(r)
                    if r["status"] == "ok":
                        results.setdefault("jax_version", r["versions"]["jax"])
                        log(
                            f"  {t} #{i + 1}: first call {r['first_call_s']:.3g} s, steady "
                            f"{r['steady_s']:.3g} s ({len(r['steady_times'])} calls), "
                            f"objective {r['objective']:.6f}"
                        )
                    else:
                        log(f"  {t} #{i + 1}: {r['status']}: {str(r.get('error', ''))[-300:]}")
            data.unlink(missing_ok=True)
            results["cases"][key] = {
                "title": spec.title,
                "formula": spec.formula,
                "runs": runs,
                "summary": {t: summarise(runs[t]) for t in TREES},
            }
            save(results, args.output)
    results["load_at_end"] = list(os.getloadavg())
    save(results, args.output)
    print(markdown(results), flush=True)
    log(f"wrote {RESULTS / (args.output + '.md')} and {RESULTS / (args.output + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
