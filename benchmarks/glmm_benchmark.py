"""GLMM timings: jaxmixed's ``fit_glmm`` and ``fit_glmm_many`` with lme4's ``glmer`` alongside.

Cases (issue 22): cbpp (binomial, 56 rows, 15 herds; Laplace and nAGQ = 25),
grouseticks (Poisson, 403 rows, three crossed factors), VerbAgg (7,584 Bernoulli
responses, 316 persons crossed with 24 items), and many responses: 1,000 binary
responses over one simulated design (500 rows, 50 groups, two covariates) in one
``fit_glmm_many`` call. Each jaxmixed case runs in a fresh process with the
compilation caches off: the first call includes tracing and compilation; the
steady state is the median of 5 whole calls after it. glmer: the median of 5
whole calls after a warm-up (``benchmarks/glmm.R``); for the many case, glmer fits
20 of the responses one after another (its per-fit median times 1,000 is the
projection in the table).

Run on an idle machine: ``python benchmarks/glmm_benchmark.py``; the results go to
``benchmarks/results/glmm.md`` and ``glmm.json``.
"""

# ruff: noqa: E402  (the imports below need sys.path first, when run as a script)

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pandas as pd

from benchmarks._common import (
    RESULTS,
    check_idle,
    environment,
    fmt_ratio,
    fmt_s,
    git_state,
    log,
    md_table,
    no_compilation_cache,
    timed,
    timed_repeats,
    write_results,
)

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
REPEATS = 5
MANY_K, MANY_N, MANY_GROUPS, GLMER_MANY = 1000, 500, 50, 20

CASES = {
    "cbpp": ("cbind(incidence, size - incidence) ~ period + (1 | herd)", "cbpp.csv", "binomial", 1),
    "cbpp_agq25": ("cbind(incidence, size - incidence) ~ period + (1 | herd)", "cbpp.csv", "binomial", 25),
    "grouseticks": ("TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)", "grouseticks.csv", "poisson", 1),
    "verbagg": ("r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", "VerbAgg.csv.gz", "binomial", 1),
}
FACTORS = {"period", "herd", "YEAR", "BROOD", "INDEX", "LOCATION", "id", "item"}


def _frame(csv: str) -> pd.DataFrame:
    df = pd.read_csv(DATA / csv)
    return df.astype({c: str for c in FACTORS & set(df.columns)})


def many_design(seed: int = 0) -> pd.DataFrame:
    """The many-responses design: MANY_N rows in MANY_GROUPS groups, x1 normal, x2 0/1,
    and MANY_K binary responses y0… from logit P = −0.5 + 0.6 x1 − 0.4 x2 + b_g, b_g ~ N(0, 0.8²)."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(MANY_GROUPS), MANY_N // MANY_GROUPS)
    x1, x2 = rng.normal(size=MANY_N), rng.integers(0, 2, MANY_N).astype(float)
    b = rng.normal(scale=0.8, size=(MANY_K, MANY_GROUPS))
    eta = -0.5 + 0.6 * x1 - 0.4 * x2 + b[:, g]
    ys = (rng.uniform(size=eta.shape) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
    cols = {"x1": x1, "x2": x2, "g": g.astype(str)} | {f"y{k}": ys[k] for k in range(MANY_K)}
    return pd.DataFrame(cols)


def worker(case: str) -> dict:
    """One case in this (fresh) process: import, first call, steady state."""
    no_compilation_cache()
    t0 = time.perf_counter()
    import jaxmixed as jm

    imports = time.perf_counter() - t0
    if case == "many":
        df = many_design()
        names = [f"y{k}" for k in range(MANY_K)]

        def fit():
            return jm.fit_glmm_many("y ~ x1 + x2 + (1 | g)", df, names, "binomial", verbose=False)

        first, table = timed(fit)
        steady = timed_repeats(fit, 3, 3, budget=60.0)
        return {
            "imports_s": imports, "first_s": first, "steady_s": float(np.median(steady)), "times": steady,
            "converged": int(table["converged"].sum()), "n_fits": len(table),
            "singular": int(table["singular"].sum()),
        }  # fmt: skip
    formula, csv, family, nagq = CASES[case]
    df = _frame(csv)
    first, res = timed(jm.fit_glmm, formula, df, family, nAGQ=nagq)
    steady = timed_repeats(lambda: jm.fit_glmm(formula, df, family, nAGQ=nagq), REPEATS, REPEATS, budget=120.0)
    return {
        "imports_s": imports, "first_s": first, "steady_s": float(np.median(steady)), "times": steady,
        "minus2logLik": -2 * res.loglik, "converged": res.converged,
    }  # fmt: skip


def _python_case(case: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.glmm_benchmark", "--worker", case],
        capture_output=True, text=True, check=True, cwd=DATA.parent.parent,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def _glmer(case: str, data: str, repeats: int) -> dict | None:
    if shutil.which("Rscript") is None:
        return None
    script = Path(__file__).resolve().parent / "glmm.R"
    out = subprocess.run(["Rscript", str(script), case, data, str(repeats)], capture_output=True, text=True)
    if out.returncode != 0:
        log(f"glmer {case} failed: {out.stderr[-500:]}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def _report(results: dict) -> str:
    rows = []
    for case in results["jaxmixed"]:
        ours, theirs = results["jaxmixed"][case], results["glmer"].get(case)
        if case == "many":
            glmer_s = None if theirs is None else theirs["median_s"] * MANY_K
            label = f"many: {MANY_K} binary responses (glmer: {GLMER_MANY} fits × {MANY_K // GLMER_MANY})"
        else:
            glmer_s = None if theirs is None else theirs["median_s"]
            label = case
        rows.append([
            label, fmt_s(ours["first_s"]), fmt_s(ours["steady_s"]), fmt_s(glmer_s),
            "" if glmer_s is None else fmt_ratio(glmer_s, ours["steady_s"]),
            "" if theirs is None or case == "many" else f"{ours['minus2logLik'] - theirs['minus2logLik']:+.1e}",
        ])  # fmt: skip
    env = results["environment"]
    lines = [
        "# GLMM timings: jaxmixed against lme4's glmer",
        "",
        f"Run {results['date']} at {results['git']['git_commit']} on {env['platform']} "
        f"({env['cpu_count']} CPUs); "
        f"{results['idle']}. First call: a fresh process, compilation caches off (imports not included). "
        f"Steady: median of {REPEATS} whole calls after it. glmer: median of {REPEATS} after a warm-up.",
        "",
        *md_table(
            "case | jaxmixed first call | jaxmixed steady | glmer | glmer / jaxmixed (steady) | −2 log L, jaxmixed − glmer",
            rows,
        ),
        "",
        "−2 log L differences: lme4's PIRLS stops at a relative change of 1e-7 and its optimiser earlier than "
        "jaxmixed's, so glmer's optimum is slightly worse (positive differences would mean jaxmixed's is). "
        "At nAGQ = 25 lme4's value leaves out the saturated model's log-likelihood (−41.98 on cbpp): "
        "jaxmixed's includes it, so that row differs by that constant.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--cases", default=",".join([*CASES, "many"]))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return
    idle = check_idle()
    results = {"date": datetime.date.today().isoformat(), "git": git_state(), "environment": environment(),
               "idle": f"1-minute load {idle['loadavg'][0]:.2f} at the start", "jaxmixed": {}, "glmer": {}}  # fmt: skip
    cases = args.cases.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        many_csv = Path(tmp) / "many.csv"
        if "many" in cases:
            many_design().iloc[:, : 3 + GLMER_MANY].to_csv(many_csv, index=False)
        for case in cases:
            log(f"jaxmixed {case}")
            results["jaxmixed"][case] = _python_case(case)
            log(f"glmer {case}")
            if case == "many":
                results["glmer"][case] = _glmer("many", str(many_csv), GLMER_MANY)
            else:
                results["glmer"][case] = _glmer(case, str(DATA), REPEATS)
    write_results(args.results_dir, "glmm", results, _report(results))
    log((args.results_dir / "glmm.md").read_text())


if __name__ == "__main__":
    main()
