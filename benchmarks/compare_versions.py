#!/usr/bin/env python
"""Before/after timings of the public ``jaxmixed.fit_reml`` for two source trees.

Each tree is a checkout that contains a ``jaxmixed/`` package (for example a
``git worktree`` of the old commit, and the working copy). Every measurement
runs in a fresh process with ``PYTHONPATH=<tree>`` (checked: ``jaxmixed`` comes
from that tree; persistent compilation caches off): the first call of
``jaxmixed.fit_reml(formula, data=df)``, the steady state (median of up to 5
further calls within 20 s) and the REML criterion. Processes alternate before,
after, before, after, so that drift of the machine affects both trees; the
table shows medians over a tree's processes. Writes
``benchmarks/results/before_after.md`` (the table, also printed) and
``before_after.json`` (every number). See benchmarks/README.md.

Usage (from the repository root, on an otherwise idle machine; it warns when
the 1-minute load average is above 0.5):

    git worktree add /tmp/old HEAD        # or any commit to compare against
    .venv/bin/python benchmarks/compare_versions.py --before /tmp/old --after .
    .venv/bin/python benchmarks/compare_versions.py --before /tmp/old --after . --cases a --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# This checkout's benchmarks package, whatever tree a process measures: the repository root comes
# first while the package is imported (a tree under PYTHONPATH may hold an older benchmarks/ of its
# own), then moves to the end, so that jaxmixed comes from PYTHONPATH=<tree>, never from this checkout.
sys.path.insert(0, str(HERE.parent))
from benchmarks import cases  # noqa: E402  (the case definitions and data)
from benchmarks._common import (  # noqa: E402
    LOAD_LIMIT,
    caught_warnings,
    check_idle,
    environment,
    fmt_ratio,
    fmt_s,
    git_state,
    json_worker,
    library_versions,
    load_1min,
    log,
    md_table,
    no_compilation_cache,
    timed,
    timed_repeats,
    vm_hwm,
    warning_lines,
    write_results,
)
from benchmarks.measure import run_measured  # noqa: E402

sys.path.remove(str(HERE.parent))
sys.path.append(str(HERE.parent))

RESULTS = HERE / "results"
TREES = ("before", "after")
DEFAULT_TIMEOUT = 30 * 60  # seconds per process


def measure_tree(spec: dict) -> dict:
    """Measures one tree on one case in this (fresh) process."""
    tree = Path(spec["tree"]).resolve()

    no_compilation_cache()  # a first call includes its compilation, not a load from disk
    import jaxmixed  # from PYTHONPATH=<tree>

    where = Path(jaxmixed.__file__).resolve()
    if not where.is_relative_to(tree):
        raise SystemExit(f"jaxmixed was imported from {where}, not from the tree {tree}")

    import jax.numpy as jnp
    import pandas as pd

    df = pd.read_pickle(spec["data"])
    formula = spec["formula"]
    jnp.zeros(1).block_until_ready()  # JAX backend start-up is not part of any fit
    values: list[float] = []
    with caught_warnings() as caught:
        first, res = timed(jaxmixed.fit_reml, formula, data=df)
        times = timed_repeats(
            lambda: values.append(float(jaxmixed.fit_reml(formula, data=df).objective)),
            min_repeats=1,
            max_repeats=spec["repeats"],
            budget=spec["budget"],
        )
    return {
        "first_call_s": first,
        "steady_s": statistics.median(times),
        "steady_times": times,
        "objective": float(res.objective),
        "objective_repeats": values,
        "n_obs": int(res.nobs),
        "n_iter": int(res.n_iter),
        "converged": bool(res.converged),
        "jaxmixed_file": str(where),
        "warnings": warning_lines(caught),
        "versions": library_versions(),
        "peak_rss_bytes": vm_hwm(),
    }


def make_data_main(key: str, out_path: str, quick: bool) -> None:
    """Writes the data of one case (run under the after tree, for the bundled datasets)."""
    case = cases.case_specs(quick)[key]
    cases.make_data(case.make, quick).to_pickle(out_path)


def tree_env(tree: Path) -> dict:
    env = dict(os.environ)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(tree) + (os.pathsep + old if old else "")
    return env


def run_child(args: list[str], tree: Path, workdir: Path, label: str, timeout: float):
    """Runs this script with args under PYTHONPATH=tree, from workdir."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    return run_measured(cmd, timeout, workdir, label, env=tree_env(tree), cwd=workdir)


def measure(case: cases.Case, tree: Path, data: Path, workdir: Path, label: str, args) -> dict:
    """One fresh process measuring tree on case: its answer with status, wall time and load."""
    spec_path = workdir / f"{label}.spec.json"
    out_path = workdir / f"{label}.result.json"
    spec = {"tree": str(tree), "data": str(data), "formula": case.formula}
    spec_path.write_text(json.dumps({**spec, "repeats": args.repeats, "budget": args.budget}))
    load = load_1min()
    run = run_child(["--worker", str(spec_path), str(out_path)], tree, workdir, label, args.timeout)
    base = {"wall_s": run.wall_s, "load_1min_at_start": load}
    if run.timed_out:
        return {**base, "status": "timeout", "error": f"did not finish in {args.timeout:.0f} s"}
    if run.returncode != 0 or not out_path.exists():
        return {**base, "status": "error", "returncode": run.returncode, "error": run.tail()}
    return {**base, "status": "ok", **json.loads(out_path.read_text())}


def make_case_data(key: str, tree: Path, workdir: Path, args) -> Path:
    path = workdir / f"{key}.pkl"
    cmd = ["--make-data", key, str(path)] + (["--quick"] if args.quick else [])
    run = run_child(cmd, tree, workdir, f"{key}-data", args.timeout)
    if run.returncode != 0 or not path.exists():
        raise RuntimeError(f"making the data of case ({key}) failed:\n" + run.tail())
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


def git_info(tree: Path) -> dict:
    state = git_state(tree)
    if not state["git_commit"]:
        return {"path": str(tree), "git_commit": "not a git checkout", "jaxmixed_dirty": None}
    return {"path": str(tree), **state}


def fmt_obj(x) -> str:
    return "–" if x is None else f"{x:.6f}"


def _header(results: dict) -> list[str]:
    env, trees, idle = results["environment"], results["trees"], results["idle_check"]

    def describe(t: str) -> str:
        info = trees[t]
        dirty = " (jaxmixed/ modified)" if info["jaxmixed_dirty"] else ""
        return f"{t}: `{info['path']}` at {info['git_commit']}{dirty}"

    return [
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
    ]


def _row(key: str, c: dict) -> list[str]:
    b, a = c["summary"]["before"], c["summary"]["after"]
    cells = [f"({key}) {c['title']}"]
    for what in ("steady_s", "first_call_s"):
        cells += [fmt_s(b.get(what)), fmt_s(a.get(what)), fmt_ratio(a.get(what), b.get(what), 2, "")]
    return cells + [fmt_obj(b.get("objective")), fmt_obj(a.get("objective"))]


def _notes(key: str, c: dict) -> list[str]:
    b, a = c["summary"]["before"], c["summary"]["after"]
    notes = []
    if b.get("objective") is not None and a.get("objective") is not None:
        diff = abs(a["objective"] - b["objective"])
        if diff > 1e-6 * (1.0 + abs(b["objective"])):
            notes.append(f"- ({key}) the objectives of before and after differ by {diff:.3g}")
    for t in TREES:
        s = c["summary"][t]
        if s["n_ok"] and not s["converged"]:
            notes.append(f"- ({key}) {t}: the fit did not converge ({s['n_iter']} iterations)")
        if s["n_ok"] and s["objective_spread"] > 0:
            notes.append(f"- ({key}) {t}: objectives differ across processes by {s['objective_spread']:.2e}")
        for r in c["runs"][t]:
            if r.get("status") != "ok":
                err = str(r.get("error", "")).strip().replace("\n", " / ")[-400:]
                notes.append(f"- ({key}) {t}: {r.get('status')}: {err}")
            notes += [f"- ({key}) {t} warned: {w}" for w in r.get("warnings", [])]
            if r.get("load_1min_at_start", 0.0) > LOAD_LIMIT:
                notes.append(
                    f"- ({key}) {t}: a process started at load average {r['load_1min_at_start']:.2f}"
                )
    return notes


def markdown(results: dict) -> str:
    columns = (
        "case | before steady | after steady | ratio | before first call | after first call | ratio "
        "| objective before | objective after"
    )
    cases_ = results["cases"]
    lines = _header(results) + md_table(columns, (_row(key, c) for key, c in cases_.items()))
    notes = [n for key, c in cases_.items() for n in _notes(key, c)]
    if notes:
        lines += ["", "## Notes", "", *dict.fromkeys(notes)]
    return "\n".join(lines) + "\n"


def save(results: dict, stem: str) -> None:
    write_results(RESULTS, stem, results, markdown(results))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", help="source tree with the old jaxmixed/ package")
    p.add_argument("--after", help="source tree with the new jaxmixed/ package")
    p.add_argument("--cases", default="a,b,c,d", help="comma-separated subset of a,b,c,d")
    p.add_argument("--quick", action="store_true", help="small sizes (run_benchmarks' --quick data)")
    p.add_argument("--processes", type=int, default=2, help="fresh processes per tree and case (2)")
    p.add_argument("--repeats", type=int, default=5, help="steady-state calls per process (5)")
    p.add_argument("--budget", type=float, default=20.0, help="seconds of steady-state calls (20)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per process")
    p.add_argument("--output", default="before_after", help="file stem in benchmarks/results/")
    p.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--make-data", nargs=2, metavar=("CASE", "OUT"), help=argparse.SUPPRESS)
    return p


def check_tree(p: argparse.ArgumentParser, name: str, value: str | None) -> Path:
    if not value:
        p.error("--before and --after are required")
    tree = Path(value).resolve()
    if not (tree / "jaxmixed" / "__init__.py").is_file():
        p.error(f"--{name} {value}: no jaxmixed/__init__.py under {tree}")
    return tree


def run_case(key: str, spec: cases.Case, trees: dict, workdir: Path, args, results: dict) -> dict:
    """The processes of one case, alternating the trees; the case's runs and their summaries."""
    log(f"case ({key}) {spec.title}")
    data = make_case_data(key, trees["after"], workdir, args)
    runs: dict[str, list[dict]] = {t: [] for t in TREES}
    for i in range(args.processes):
        for t in TREES:
            r = measure(spec, trees[t], data, workdir, f"{key}-{t}-{i}", args)
            runs[t].append(r)
            if r["status"] != "ok":
                log(f"  {t} #{i + 1}: {r['status']}: {str(r.get('error', ''))[-300:]}")
                continue
            results.setdefault("jax_version", r["versions"]["jax"])
            log(
                f"  {t} #{i + 1}: first call {r['first_call_s']:.3g} s, steady {r['steady_s']:.3g} s "
                f"({len(r['steady_times'])} calls), objective {r['objective']:.6f}"
            )
    data.unlink(missing_ok=True)
    summary = {t: summarise(runs[t]) for t in TREES}
    return {"title": spec.title, "formula": spec.formula, "runs": runs, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.worker:
        json_worker(measure_tree, *args.worker)
        return 0
    if args.make_data:
        make_data_main(*args.make_data, args.quick)
        return 0
    trees = {t: check_tree(p, t, getattr(args, t)) for t in TREES}
    if args.processes < 1 or args.repeats < 1:
        p.error("--processes and --repeats must be at least 1")
    specs = cases.case_specs(args.quick)
    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(wanted) - set(specs)
    if unknown:
        p.error(f"unknown cases {sorted(unknown)}; choose from a,b,c,d")
    settings = {
        "quick": args.quick,
        "processes": args.processes,
        "repeats": args.repeats,
        "budget": args.budget,
    }
    results: dict = {
        "environment": {**environment(), "executable": sys.executable},
        "idle_check": check_idle(),
        "trees": {t: git_info(path) for t, path in trees.items()},
        **settings,
        "cases": {},
    }
    with tempfile.TemporaryDirectory(prefix="jaxmixed-compare-") as tmp:
        for key in wanted:
            results["cases"][key] = run_case(key, specs[key], trees, Path(tmp), args, results)
            save(results, args.output)
    results["load_at_end"] = list(os.getloadavg())
    save(results, args.output)
    print(markdown(results), flush=True)
    log(f"wrote {RESULTS / (args.output + '.md')} and {RESULTS / (args.output + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
