#!/usr/bin/env python
"""Benchmark of the inference layer against lmerTest, pbkrtest and lme4's profile.

Cases (REML fits): sleepstudy ``Reaction ~ Days + (Days | Subject)`` (180
rows), mlmRev's ScotsSec ``attain ~ verbal * sex + (1 | primary) + (1 |
second)`` (3,435 rows, crossed) and Hsb82 ``mAch ~ meanses * cses + (cses |
school)`` (7,185 rows); the mlmRev data come from the real-models suite's
export (``benchmarks/real.py``; R with mlmRev needed, else those cases are
skipped). Operations, each timed as the whole call on both sides:

- ``satterthwaite``: ``fit.coef_table()`` / lmerTest's ``summary(as_lmerModLmerTest(m))``
  (lmerTest computes the derivatives in that conversion, which its ``lmer`` makes)
- ``kr``: ``fit.coef_table(ddf="kenward-roger")`` / ``summary(mt, ddf = "Kenward-Roger")``
- ``anova3``: ``fit.anova(type=3)`` / ``anova(as_lmerModLmerTest(m), type = 3)``
- ``profile``: ``fit.conf_int(method="profile")`` / ``confint(m, method = "profile")``
- ``power`` (sleepstudy only; jaxmixed alone, simr is not on Debian):
  ``fit.power("Days", effect=5, n_sim=1000)``

Every (case, operation) runs in a fresh jaxmixed process with the
compilation caches off: the model is fitted (not timed), then the operation's
first call (compilation included) and the median of up to 5 steady calls on
fresh copies of the results (no cached tables). R: one process per (case,
operation), lmer fitted first, then the first call and up to 5 repeats within
a 120 s budget; the median of the repeats (the first call when there are none).

Usage (repository root, idle machine):

    .venv/bin/python benchmarks/inference_benchmark.py [--cases sleepstudy,scotssec] [--ops kr,profile]

Writes ``benchmarks/results/inference.{md,json}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (  # noqa: E402
    check_idle,
    environment,
    fmt_ratio,
    fmt_s,
    git_state,
    json_worker,
    log,
    md_table,
    no_compilation_cache,
    timed,
    write_results,
)

HERE = Path(__file__).resolve().parent
OPS = ("satterthwaite", "kr", "anova3", "profile", "power")
CASES = {
    "sleepstudy": ("Reaction ~ Days + (Days | Subject)", None),
    "scotssec": ("attain ~ verbal * sex + (1 | primary) + (1 | second)", "scotssec"),
    "hsb82": ("mAch ~ meanses * cses + (cses | school)", "hsb82"),
}


def _data_files(case: str, workdir: Path) -> tuple[Path, str, str]:
    """(CSV, LEVELS csv or "", FACTORS) for R; the mlmRev cases from the real suite's export."""
    if CASES[case][1] is None:
        import jaxmixed as jm

        path = workdir / f"{case}.csv"
        jm.load_dataset(case).to_csv(path, index=False)
        return path, "", "Subject"
    from benchmarks import real

    model = next(m for m in real.REAL_MODELS if m.key == CASES[case][1])
    real.export_data([model], refresh=False)
    csv, levels = real.data_paths(model)
    return csv, str(levels), ""


def _load(case: str):
    import jaxmixed as jm

    if CASES[case][1] is None:
        return jm.load_dataset(case)
    from benchmarks import real

    return real.load_data(next(m for m in real.REAL_MODELS if m.key == CASES[case][1]))


def _call(fit, op: str):
    if op == "satterthwaite":
        return fit.coef_table()
    if op == "kr":
        return fit.coef_table(ddf="kenward-roger")
    if op == "anova3":
        return fit.anova(type=3)
    if op == "profile":
        return fit.conf_int(method="profile")
    return fit.power("Days", effect=5.0, n_sim=1000, key=1)


def worker(spec: dict) -> dict:
    """One (case, operation) in this fresh process: fit, first call, steady calls."""
    no_compilation_cache()
    import jaxmixed as jm

    fit = jm.fit_reml(CASES[spec["case"]][0], _load(spec["case"]))
    first, _ = timed(_call, dataclasses.replace(fit), spec["op"])
    steady = [timed(_call, dataclasses.replace(fit), spec["op"])[0] for _ in range(5)]
    return {"first_s": first, "times": steady}


def run_jaxmixed(case: str, op: str, workdir: Path) -> dict:
    spec, out = workdir / f"{case}-{op}.json", workdir / f"{case}-{op}.out.json"
    spec.write_text(json.dumps({"case": case, "op": op}))
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", str(spec), str(out)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-1500:]}
    return json.loads(out.read_text())


def run_r(case: str, op: str, workdir: Path) -> dict | None:
    if op == "power" or shutil.which("Rscript") is None:
        return None
    csv, levels, factors = _data_files(case, workdir)
    cmd = ["Rscript", str(HERE / "inference.R"), str(csv), levels, CASES[case][0], op, "5", "120"]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=3600, env={**os.environ, "FACTORS": factors}
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("JSON:")), None)
    if line is None:
        return {"error": proc.stderr.strip()[-1500:]}
    return json.loads(line[5:])


def _steady(r: dict | None) -> float | None:
    if not r or "error" in r:
        return None
    return statistics.median(r["times"]) if r["times"] else r["first_s"]


def report(results: dict) -> str:
    rows = []
    for key, r in results["runs"].items():
        case, op = key.split("/")
        jx, rr = r["jaxmixed"], r["r"]
        jx_first = jx.get("first_s") if jx else None
        rows.append(
            [
                case,
                op,
                fmt_s(jx_first),
                fmt_s(_steady(jx)),
                fmt_s(rr.get("first_s")) if rr and "error" not in rr else "–",
                fmt_s(_steady(rr)),
                fmt_ratio(_steady(rr), _steady(jx)),
                fmt_ratio(_steady(rr), jx_first),
            ]
        )
    head = "case | operation | jaxmixed first | jaxmixed steady | R first | R steady | R / jaxmixed steady | R steady / jaxmixed first"
    lines = ["# Inference: jaxmixed against lmerTest, pbkrtest and lme4's profile", ""]
    env, git = results["environment"], results.get("git", {})
    lines += [
        f"Commit {git.get('git_commit', '?')}{' (jaxmixed/ modified)' if git.get('jaxmixed_dirty') else ''}, "
        f"{env['date']}, {env['platform']}, {env['cpu_count']} cores, 1-minute load at start "
        f"{env['load_1min_at_start']:.2f}. R 4.2.2: lme4 1.1-31, lmerTest 3.1-3, pbkrtest 0.5-2. Seconds; "
        "ratios above 1: jaxmixed faster. jaxmixed first: the first call in a fresh process with "
        "the compilation caches off (the model already fitted); steady: median of 5 calls on fresh "
        "copies of the results. R: the first call and the median of up to 5 repeats within 120 s "
        "(none after pbkrtest's 166 s on ScotsSec).",
        "",
        "lmerTest computes the derivatives behind Satterthwaite's df when it fits (its `lmer` is "
        "lme4's followed by `as_lmerModLmerTest`), so R's `satterthwaite` and `anova3` calls include "
        "that conversion of lme4's fit; alone, its `summary` and `anova` take 1-3 ms. `profile`: "
        "lme4's `confint(m, method = \"profile\")` against `fit.conf_int(method=\"profile\")`, "
        "both for every variance parameter, σ and the fixed effects. `power`: 1,000 simulations "
        "of sleepstudy refitted and tested by likelihood ratio (simr is not on Debian: no R "
        "column).",
        "",
    ]
    lines += md_table(head, rows)
    errors = [
        f"- {k}: {side}: {r[side]['error'][:300]}"
        for k, r in results["runs"].items()
        for side in ("jaxmixed", "r")
        if r[side] and "error" in r[side]
    ]
    return "\n".join(lines + ([""] + errors if errors else [])) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"))
    parser.add_argument("--results-dir", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    if args.worker:
        json_worker(worker, *args.worker)
        return 0
    idle = check_idle()
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            if CASES[case][1] is not None:
                _data_files(case, Path(tmp))  # the mlmRev export, before any worker reads it
            for op in args.ops.split(","):
                if op == "power" and case != "sleepstudy":
                    continue
                log(f"{case} / {op}")
                runs[f"{case}/{op}"] = {
                    "jaxmixed": run_jaxmixed(case, op, Path(tmp)),
                    "r": run_r(case, op, Path(tmp)),
                }
                log(f"  {runs[f'{case}/{op}']}")
    results = {"environment": environment(), "git": git_state(), "idle": idle, "runs": runs}
    text = report(results)
    write_results(Path(args.results_dir), "inference", results, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
