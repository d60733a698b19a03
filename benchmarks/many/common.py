"""What the many-fits cases share: sizes, worker processes, lme4 through many_benchmark.R, report lines.

A case's parent side (``case_*``) starts its measurements as fresh worker
processes (``many_benchmark.py --worker KIND SPEC OUT``) and turns their JSON
answers into its section of ``results/many.md``. The worker side helpers
(:func:`start_jax`, :func:`versions`, :func:`table_summary`) import JAX only
when called.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._common import HERE, fmt_s, git_state, library_versions, md_table, no_compilation_cache, timed
from ..measure import run_measured

ENTRY = HERE / "many_benchmark.py"
R_SCRIPT = HERE / "many_benchmark.R"
REL_TOL = 1e-6  # an objective worse than the reference by more than this (relative) is a miss

SIZES = {  # (with --quick, without)
    "w4_k": (40, 1_000),  # W4 responses
    "w4_sm": (20, 1_000),  # of which statsmodels fits
    "w4_steady": (2, 3),  # steady calls
    "gen_k": (200, 20_000),  # genomics responses
    "gen_lme4": (20, 200),  # of which lme4 fits
    "boot_n": (200, 10_000),  # bootstrap replicates
    "boot_r": (50, 1_000),  # bootMer replicates
    "big_n": (100_000, 10_000_000),  # big rows
    "big_groups": (1_000, 100_000),
    "timeout": (5 * 60, 30 * 60),  # seconds, one process
}


def sizes(quick: bool) -> dict:
    """Responses, replicates and rows of every case, and the timeout of one process (seconds)."""
    return {key: pair[0] if quick else pair[1] for key, pair in SIZES.items()}


@dataclass(frozen=True)
class Context:
    """What every case gets: the command line, the sizes, a scratch folder, whether lme4 runs."""

    args: argparse.Namespace  # the command line: quick, statsmodels, formula_design, ...
    sz: dict
    workdir: Path
    r_ok: bool
    r_note: str

    @property
    def timeout(self) -> float:
        return self.sz["timeout"]


def start_jax() -> dict:
    """Imports jaxmixed and starts JAX's backend, persistent compilation caches off; returns both times."""
    t0 = time.perf_counter()
    no_compilation_cache()  # a first call includes its compilation, not a load from disk
    import jax.numpy as jnp

    import jaxmixed  # noqa: F401

    import_s = time.perf_counter() - t0
    backend_s, _ = timed(lambda: jnp.zeros(1).block_until_ready())
    return {"import_s": import_s, "backend_s": backend_s}


def versions() -> dict:
    """jax's and jaxmixed's versions and the number of JAX devices."""
    import jax

    return {**library_versions(), "devices": len(jax.devices())}


def table_summary(tab) -> dict:
    """The numbers of a ``fit_reml_many`` table: objectives, flags, iterations, messages."""
    return {
        "objective": [float(v) for v in tab["objective"]],
        "singular": [bool(v) for v in tab["singular"]],
        "converged": [bool(v) for v in tab["converged"]],
        "n_iter_median": float(np.median(tab["n_iter"])),
        "n_iter_max": int(np.max(tab["n_iter"])),
        "messages": {str(k): int(v) for k, v in tab["message"].value_counts().items()},
    }


def run_worker(kind: str, spec: dict, ctx: Context, xla_devices: int | None = None):
    """The worker ``kind`` in a fresh process: (its answer, None) or (None, what went wrong)."""
    label = f"{kind}-{xla_devices}"
    spec_path = ctx.workdir / f"{label}.spec.json"
    out_path = ctx.workdir / f"{label}.result.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    if xla_devices:
        flag = f"--xla_force_host_platform_device_count={xla_devices}"
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flag).strip()
    cmd = [sys.executable, str(ENTRY), "--worker", kind, str(spec_path), str(out_path)]
    run = run_measured(cmd, ctx.timeout, ctx.workdir, label, env=env)
    if run.returncode != 0 or not out_path.exists():
        return None, run.failure(kind, ctx.timeout)
    return json.loads(out_path.read_text()), None


def run_r(args: list[str], ctx: Context, what: str, out: Path):
    """``Rscript many_benchmark.R args`` writing out: (its KEY value lines, None) or (None, the error)."""
    run = run_measured(["Rscript", str(R_SCRIPT), *args], ctx.timeout, ctx.workdir, out.stem)
    if run.returncode != 0 or not out.exists():
        return None, run.failure(what, ctx.timeout)
    info = {}
    for line in run.stdout.splitlines():
        key, _, rest = line.partition(" ")
        if key.isupper():
            info[key] = rest.strip()
    return info, None


def lme4_fits(
    ctx: Context, label: str, design: pd.DataFrame, ys: np.ndarray, formula: str, factors: list[str]
):
    """A fresh lmer per response (column of ys): (per-response table, info, None) or (None, None, error)."""
    wide = pd.concat([design, pd.DataFrame(ys, columns=[f"r_{j}" for j in range(ys.shape[1])])], axis=1)
    csv = ctx.workdir / f"{label}.csv"
    res = ctx.workdir / f"{label}-lme4.csv"
    wide.to_csv(csv, index=False)  # shortest round-trip repr: R reads the same doubles
    info, err = run_r(["fits", str(csv), formula, ",".join(factors), str(res)], ctx, f"lme4 ({label})", res)
    if err:
        return None, None, err
    table = pd.read_csv(res)
    table["singular"] = table["singular"].astype(str).str.upper() == "TRUE"
    info = {"total_s": float(info["TOTAL"]), "loop_s": float(info["LOOP"]), "versions": info["VERSIONS"]}
    return table, info, None


def lme4_check(jm_obj, jm_singular, lme: pd.DataFrame) -> dict:
    """jaxmixed's REML criteria and singular flags against lme4's (the reference), per response."""
    a = np.asarray(jm_obj, float)
    b = lme["objective"].to_numpy(float)
    ok = np.isfinite(a) & np.isfinite(b)
    rel = (a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), 1e-12)
    js, rs = np.asarray(jm_singular), lme["singular"].to_numpy()
    return {
        "compared": int(ok.sum()),
        "jm_worse": int((rel > REL_TOL).sum()),
        "jm_better": int((rel < -REL_TOL).sum()),
        "max_abs_rel": float(np.max(np.abs(rel))) if rel.size else float("nan"),
        "max_worse_rel": float(np.max(rel)) if rel.size else float("nan"),
        "missing": int((~ok).sum()),
        "worst": int(np.flatnonzero(ok)[np.argmax(rel)]) if rel.size else -1,
        "singular_agree": int((js == rs).sum()),
        "jm_singular": int(js.sum()),
        "lme4_singular": int(rs.sum()),
        "lme4_warned": int((lme["n_messages"] > 0).sum()),  # other than the singular-fit note
    }


def iterations(jm: dict) -> str:
    """The L-BFGS iterations of a worker's fits (``table_summary``)."""
    return f"L-BFGS iterations median {jm['n_iter_median']:.0f}, max {jm['n_iter_max']}"


def target(value: float, limit: float) -> str:
    return f"target < {fmt_s(limit)} s: **{'met' if value < limit else 'missed'}**"


def header_line(ctx: Context, jm_result: dict | None) -> str:
    """When, at which commit, on what machine (and jax's version when a worker answered)."""
    state = git_state()
    dirty = " (working tree of jaxmixed/ modified)" if state["jaxmixed_dirty"] else ""
    mode = "**--quick (small sizes: a smoke test, not a benchmark)**; " if ctx.args.quick else ""
    jax = f", jax {jm_result.get('versions', {}).get('jax', '?')}" if jm_result else ""
    return (
        f"{time.strftime('%Y-%m-%d %H:%M')}; {mode}jaxmixed at {state['git_commit']}{dirty}; "
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}{jax}."
    )


def section_head(title: str, ctx: Context, jm_result: dict | None, about: str) -> list[str]:
    """A case section's first lines: its title, the header line, what it measures."""
    return [title, "", header_line(ctx, jm_result), "", about, ""]


def results_block(columns: str | list[str], rows: list, summary: str, warnings: list[str]) -> list[str]:
    """A case's table of times, the paragraph under it and jaxmixed's warnings."""
    return [*md_table(columns, rows), "", summary, "", *warned("jaxmixed", warnings)]


def failed(what: str, err: str) -> list[str]:
    """Report lines for a measurement that gave no answer."""
    return [f"{what} failed:", "", "```", err, "```", ""]


def warned(what: str, warnings: list[str]) -> list[str]:
    """Report lines for a worker's warnings (none when there were none)."""
    return [f"{what} warnings: " + "; ".join(warnings), ""] if warnings else []
