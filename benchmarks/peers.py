"""The peer comparison: jaxmixed, statsmodels MixedLM and lme4 on the cases a–d, and the scaling runs.

Each tool fits each case in its own subprocess on the same data. Writes
``results/latest.json`` (every number) and ``results/latest.md`` (the tables,
also printed) after every case, and ``results/scaling.png``.
"""

from __future__ import annotations

import dataclasses
import platform
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from . import report
from ._common import RESULTS, check_idle, environment, git_state, log, write_results
from .cases import Case, case_specs, make_data, slopes_case
from .lme4 import lme4_available, run_lme4
from .measure import DEFAULT_TIMEOUT, brief, run_python_worker
from .plot import plot_scaling

INSTEVAL_SM_TIMEOUT = 15 * 60  # seconds; statsmodels on InstEval may not finish
PEER_EXTRAPOLATION_LIMIT = 60.0  # scaling: skip a peer whose extrapolated time exceeds this


@dataclasses.dataclass(frozen=True)
class PeerPlan:
    """Which peers fit a data set: True, or the reason it is skipped; statsmodels' timeout."""

    statsmodels: bool | str
    lme4: bool | str
    sm_timeout: float = DEFAULT_TIMEOUT


def write_case_data(df: pd.DataFrame, workdir: Path, label: str, need_csv: bool) -> tuple[Path, Path | None]:
    """The data as a pickle for the Python workers and, for lme4, a CSV."""
    pkl = workdir / f"{label}.pkl"
    df.to_pickle(pkl)
    csv = None
    if need_csv:
        csv = workdir / f"{label}.csv"
        df.to_csv(csv, index=False)  # shortest round-trip repr: R reads the same doubles
    return pkl, csv


def _skipped(reason: bool | str) -> dict:
    return {"status": "skipped", "error": reason or "skipped"}


def run_tools(case: Case, df: pd.DataFrame, workdir: Path, label: str, plan: PeerPlan) -> dict:
    """Fits one data set with each tool; compares each peer's estimates with jaxmixed's."""
    pkl, csv = write_case_data(df, workdir, label, plan.lme4 is True)
    spec = {**case.to_json(), "data": str(pkl)}
    out: dict = {"n_obs": len(df)}
    log(f"  [{label}] jaxmixed ...")
    out["jaxmixed"] = run_python_worker("jaxmixed", spec, workdir, f"{label}-jaxmixed", DEFAULT_TIMEOUT)
    log(f"  [{label}] jaxmixed: {brief(out['jaxmixed'], 'fit_reml_s')}")
    if plan.statsmodels is True:
        log(f"  [{label}] statsmodels ...")
        out["statsmodels"] = run_python_worker(
            "statsmodels", spec, workdir, f"{label}-statsmodels", plan.sm_timeout
        )
        log(f"  [{label}] statsmodels: {brief(out['statsmodels'], 'fit_s')}")
    else:
        out["statsmodels"] = _skipped(plan.statsmodels)
    if plan.lme4 is True:
        log(f"  [{label}] lme4 ...")
        out["lme4"] = run_lme4(case.formula, case.factors, csv, workdir, f"{label}-lme4", DEFAULT_TIMEOUT)
        log(f"  [{label}] lme4: {brief(out['lme4'], 'fit_s')}")
    else:
        out["lme4"] = _skipped(plan.lme4)
    for peer in ("statsmodels", "lme4"):
        out[f"vs_{peer}"] = report.compare(case.sm.groups, out["jaxmixed"], out[peer], peer)
    for path in (pkl, csv):
        if path is not None:
            path.unlink(missing_ok=True)
    return out


def peer_environment(r_ok: bool, r_note: str) -> dict:
    """The machine, the versions, the jaxmixed commit and the command line."""
    import jax
    import statsmodels

    return {
        **environment(),
        **git_state(),
        "processor": platform.processor() or platform.machine(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "jax": jax.__version__,
        "statsmodels": statsmodels.__version__,
        "lme4": "available" if r_ok else f"skipped: {r_note}",
    }


def scaling_sizes(quick: bool) -> list[int]:
    return [1_000, 10_000] if quick else [1_000, 10_000, 100_000, 1_000_000]


def _scaling_plan(n: int, last: dict, r_ok: bool, r_note: str) -> PeerPlan:
    """A peer runs unless its time at the previous size, extrapolated linearly in n, passes the limit."""
    decide: dict[str, bool | str] = {}
    for peer, available in (("statsmodels", True), ("lme4", r_ok)):
        if not available:
            decide[peer] = r_note
        elif last[peer] is not None and last[peer][1] * n / last[peer][0] > PEER_EXTRAPOLATION_LIMIT:
            decide[peer] = f"extrapolated time over {PEER_EXTRAPOLATION_LIMIT:.0f} s"
        else:
            decide[peer] = True
    return PeerPlan(decide["statsmodels"], decide["lme4"])


def _scaling_row(n: int, out: dict, reused: bool, last: dict) -> dict:
    """One row of the scaling table; updates last[peer] = (n, seconds) for the peers that ran."""
    row = {"n": n, "groups": n // 100, "reused_case_c": reused}
    jm = out["jaxmixed"]
    if jm.get("status") == "ok":
        row.update(
            jaxmixed_first_s=jm["first_call_s"],
            jaxmixed_steady_s=jm["fit_reml_s"],
            jaxmixed_core_s=jm["fit_statistics_s"],
            jaxmixed_onepass_s=jm["model_statistics_s"],
            jaxmixed_maxrss_bytes=jm["maxrss_bytes"],
        )
    for peer in ("statsmodels", "lme4"):
        r = out[peer]
        if r.get("status") == "ok":
            row[f"{peer}_s"] = r["fit_s"]
            row[f"{peer}_maxrss_bytes"] = r["maxrss_bytes"]
            last[peer] = (n, r["fit_s"])
        else:
            row[f"{peer}_note"] = r.get("error", r.get("status"))
    return row


def run_scaling(results: dict, quick: bool, workdir: Path, r_ok: bool, r_note: str) -> list[dict]:
    """Model (c) at n rows in n/100 groups; peers stop once their extrapolated time passes ~60 s."""
    rows = []
    last: dict = {"statsmodels": None, "lme4": None}  # (n, seconds) of the previous size
    case_c = results["cases"].get("c")
    for n in scaling_sizes(quick):
        case = slopes_case(n, n // 100)
        reused = case_c is not None and tuple(case_c["spec"]["make"]) == case.make
        if reused:
            log(f"scaling n={n:,}: reusing case (c)")
            out = case_c
        else:
            log(f"scaling n={n:,} ({n // 100:,} groups)")
            plan = _scaling_plan(n, last, r_ok, r_note)
            out = run_tools(case, make_data(case.make, quick), workdir, f"scale{n}", plan)
        rows.append(_scaling_row(n, out, reused, last))
    return rows


def save(results: dict, out_dir: Path) -> None:
    write_results(out_dir, "latest", results, report.markdown(results))


def _case_plan(key: str, r_ok: bool, r_note: str, skip_insteval_sm: bool) -> PeerPlan:
    if key != "d":
        return PeerPlan(True, True if r_ok else r_note)
    sm: bool | str = "--skip-insteval-statsmodels" if skip_insteval_sm else True
    return PeerPlan(sm, True if r_ok else r_note, INSTEVAL_SM_TIMEOUT)


def run_peers(
    wanted: list[str], quick: bool, no_plot: bool, skip_insteval_sm: bool, out_dir: Path = RESULTS
) -> int:
    """The peer comparison on the cases ``wanted`` (keys of ``case_specs``); outputs in out_dir."""
    specs = case_specs(quick)
    check_idle()
    r_ok, r_note = lme4_available()
    if not r_ok:
        print(f"note: lme4 is skipped ({r_note})", flush=True)
    results: dict = {"environment": peer_environment(r_ok, r_note), "quick": quick, "cases": {}}
    with tempfile.TemporaryDirectory(prefix="jaxmixed-bench-") as tmp:
        workdir = Path(tmp)
        for key in wanted:
            case = specs[key]
            log(f"case ({key}) {case.title}")
            plan = _case_plan(key, r_ok, r_note, skip_insteval_sm)
            out = run_tools(case, make_data(case.make, quick), workdir, key, plan)
            out["spec"] = case.to_json()
            results["cases"][key] = out
            if out["lme4"].get("status") == "ok":
                results["lme4_versions"] = out["lme4"]["versions"]
            save(results, out_dir)
        if not no_plot:
            results["scaling"] = run_scaling(results, quick, workdir, r_ok, r_note)
            plot_scaling(results["scaling"], out_dir / "scaling.png")
            results["scaling_plot"] = "scaling.png"
    save(results, out_dir)
    print(report.markdown(results), flush=True)
    log(f"wrote {out_dir / 'latest.json'} and {out_dir / 'latest.md'}")
    return 0
