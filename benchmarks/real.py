"""The real-models suite: models of mlmRev's multilevel datasets, jaxmixed against lme4.

The data come from R's mlmRev package, exported at run time by
``export_mlmrev.R`` into ``benchmarks/.data/`` (a cache, git-ignored; the
export is skipped for models already there). Each model is fitted by
jaxmixed (first ``fit_reml`` call in a fresh process, compilation included,
then the steady state) and by lme4 in the same run (two ``lmer`` fits in one
R process: the first is a warm-up, the median of the five after it is lme4's
steady state; jaxmixed's steady state is likewise the median of five further calls).
Writes ``results/real.json``
and ``results/real.md`` (also printed).
"""

from __future__ import annotations

import dataclasses
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import real_report
from ._common import HERE, RESULTS, check_idle, log, run_environment
from .lme4 import Repeats, r_packages_available, run_lme4
from .measure import DEFAULT_TIMEOUT, brief, run_python_worker

DATA_DIR = HERE / ".data"
# Both sides' steady state: the median of this many whole calls after a warm-up (lme4's
# second call alone overstated the ratio 2-3x on small models).
STEADY_REPEATS = 5
EXPORT_SCRIPT = HERE / "export_mlmrev.R"


@dataclass(frozen=True)
class RealModel:
    """A model of an mlmRev dataset, as lme4's or mlmRev's documentation fits it."""

    key: str
    dataset: str
    formula: str
    about: str


REAL_MODELS: tuple[RealModel, ...] = (
    RealModel(
        "chem97",
        "Chem97",
        "score ~ gcsecnt + (1 | school) + (1 | lea)",
        "A-level chemistry scores; 2,410 schools nested in 131 education authorities",
    ),
    RealModel(
        "star",
        "star",
        "math ~ gr + sx + eth + cltype + (yrs | id) + (1 | tch) + (1 | sch)",
        "Tennessee STAR: ~10,700 students (slope on years in the study) crossed with 1,387 teachers",
    ),
    RealModel(
        "exam",
        "Exam",
        "normexam ~ standLRT + sex + schgend + (standLRT | school)",
        "London exam scores; random intercept and slope for 65 schools",
    ),
    RealModel(
        "scotssec",
        "ScotsSec",
        "attain ~ verbal * sex + (1 | primary) + (1 | second)",
        "Scottish secondary attainment; 148 primary crossed with 19 secondary schools",
    ),
    RealModel(
        "hsb82",
        "Hsb82",
        "mAch ~ meanses * cses + (cses | school)",
        "High School and Beyond; random intercept and slope for 160 schools",
    ),
    RealModel(
        "egsingle",
        "egsingle",
        "math ~ year * size + female + black + hispanic + (1 | childid) + (1 | schoolid)",
        "Chicago mathematics achievement; 1,721 children nested in 60 schools",
    ),
    RealModel(
        "bdf",
        "bdf",
        "langPOST ~ IQ.ver.cen + avg.IQ.ver.cen + (IQ.ver.cen | schoolNR)",
        "Dutch language scores; random intercept and slope for 131 schools",
    ),
)


def select_models(keys: str | None) -> list[RealModel]:
    """The models named in keys (comma-separated; None: all), in REAL_MODELS' order."""
    if not keys:
        return list(REAL_MODELS)
    wanted = {k.strip() for k in keys.split(",") if k.strip()}
    unknown = wanted - {m.key for m in REAL_MODELS}
    if unknown:
        raise ValueError(f"unknown models {sorted(unknown)}; choose from {[m.key for m in REAL_MODELS]}")
    return [m for m in REAL_MODELS if m.key in wanted]


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


def data_paths(model: RealModel, data_dir: Path = DATA_DIR) -> tuple[Path, Path]:
    """The model's data and its factor levels (written by export_mlmrev.R)."""
    return data_dir / f"{model.key}.csv", data_dir / f"{model.key}.levels.csv"


def export_data(models: list[RealModel], refresh: bool, data_dir: Path = DATA_DIR) -> None:
    """Exports the models' data from mlmRev (those not in the cache, or all with refresh)."""
    todo = [m for m in models if refresh or not all(p.exists() for p in data_paths(m, data_dir))]
    if not todo:
        return
    args = [str(x) for m in todo for x in (m.key, m.dataset, m.formula)]
    proc = subprocess.run(
        ["Rscript", str(EXPORT_SCRIPT), str(data_dir), *args], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise RuntimeError("export_mlmrev.R failed:\n" + proc.stderr.strip()[-2000:])
    log(proc.stdout.strip())


def load_data(model: RealModel, data_dir: Path = DATA_DIR) -> pd.DataFrame:
    """The exported data with every factor a categorical in mlmRev's level order."""
    csv, levels_csv = data_paths(model, data_dir)
    levels = pd.read_csv(levels_csv, dtype=str, keep_default_na=False)
    order = {col: list(g["level"]) for col, g in levels.groupby("column", sort=False)}
    df = pd.read_csv(csv, dtype={c: str for c in order}, keep_default_na=False)
    for col, cats in order.items():
        values = pd.Categorical(df[col], categories=cats)
        if values.isna().any():
            raise ValueError(f"{model.key}: column {col} has values outside its exported levels")
        df[col] = values
    return df


def factor_levels(df: pd.DataFrame) -> dict[str, int]:
    """Number of levels of each categorical column (grouping factors included)."""
    return {c: len(df[c].cat.categories) for c in df.columns if isinstance(df[c].dtype, pd.CategoricalDtype)}


def check_designs(models: list[RealModel], data_dir: Path = DATA_DIR) -> int:
    """Builds each model's design in jaxmixed without fitting; prints its sizes. 1 if any fails."""
    from jaxmixed.design import build_design

    failed = 0
    for model in models:
        df = load_data(model, data_dir)
        t0 = time.perf_counter()
        try:
            _, arrays = build_design(model.formula, df)
        except Exception as exc:  # report every model, then fail
            failed = 1
            print(f"{model.key}: design failed: {type(exc).__name__}: {exc}", flush=True)
            continue
        q = sum(z.shape[1] * (int(c.max()) + 1) for z, c in zip(arrays.Z, arrays.codes, strict=True))
        print(
            f"{model.key}: {len(arrays.y):,} rows, {arrays.X.shape[1]} fixed effects, "
            f"{q:,} random effects over {len(arrays.Z)} factor(s) {factor_levels(df)}, "
            f"design built in {time.perf_counter() - t0:.2f} s",
            flush=True,
        )
    return failed


# --------------------------------------------------------------------------------------
# Fits
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RealResult:
    """One model's fits: each tool's answer (worker JSON) and the comparison."""

    key: str
    dataset: str
    formula: str
    n_obs: int
    levels: dict[str, int]
    jaxmixed: dict
    lme4: dict
    objective_rel_diff: float | None  # |jaxmixed − lme4| / |lme4|, REML criterion
    lme4_over_jaxmixed: float | None  # lme4's steady state over jaxmixed's (medians of 5 after a warm-up)


def _compare(jm: dict, r4: dict) -> tuple[float | None, float | None]:
    if jm.get("status") != "ok" or r4.get("status") != "ok":
        return None, None
    rel = abs(jm["objective"] - r4["objective"]) / abs(r4["objective"])
    return rel, lme4_steady(r4) / jm["fit_reml_s"]


def lme4_steady(r4: dict) -> float:
    """lme4's steady state: the median of its fits after the first (a warm-up)."""
    times = r4["fit_times"]
    return statistics.median(times[1:] if len(times) > 1 else times)


def fit_model(model: RealModel, workdir: Path, data_dir: Path = DATA_DIR) -> RealResult:
    """jaxmixed (fresh process) then lme4 (two fits in one R process) on the model's data."""
    df = load_data(model, data_dir)
    pkl = workdir / f"{model.key}.pkl"
    df.to_pickle(pkl)
    spec = {"formula": model.formula, "data": str(pkl), "reml": True}
    log(f"  [{model.key}] jaxmixed ...")
    jm = run_python_worker("jaxmixed-fit", spec, workdir, f"{model.key}-jaxmixed", DEFAULT_TIMEOUT)
    log(f"  [{model.key}] jaxmixed: {brief(jm, 'fit_reml_s')}")
    log(f"  [{model.key}] lme4 ...")
    csv, levels_csv = data_paths(model, data_dir)
    r4 = run_lme4(
        model.formula,
        tuple(factor_levels(df)),
        csv,
        workdir,
        f"{model.key}-lme4",
        DEFAULT_TIMEOUT,
        levels_csv=levels_csv,
        repeats=Repeats(least=STEADY_REPEATS + 1, most=STEADY_REPEATS + 1, budget_s=0.0),
    )
    log(f"  [{model.key}] lme4: {brief(r4, 'fit_s')}")
    pkl.unlink(missing_ok=True)
    rel, ratio = _compare(jm, r4)
    return RealResult(model.key, model.dataset, model.formula, len(df), factor_levels(df), jm, r4, rel, ratio)


def run_real(keys: str | None, refresh: bool, designs_only: bool, out_dir: Path = RESULTS) -> int:
    """The real-models suite (or, with designs_only, the design check); outputs in out_dir."""
    models = select_models(keys)
    ok, note = r_packages_available("lme4", "mlmRev")
    if not ok:
        print(f"note: the real-models suite is skipped ({note})", flush=True)
        return 0
    export_data(models, refresh)
    if designs_only:
        return check_designs(models)
    check_idle()
    results: dict = {"environment": run_environment(), "models": []}
    with tempfile.TemporaryDirectory(prefix="jaxmixed-real-") as tmp:
        for model in models:
            log(f"model {model.key}: {model.dataset}, {model.formula}")
            result = fit_model(model, Path(tmp))
            results["models"].append(dataclasses.asdict(result))
            if result.lme4.get("status") == "ok":
                results["lme4_versions"] = result.lme4["versions"]
            real_report.save(results, out_dir)
    text = real_report.markdown(results)
    print(text, flush=True)
    log(f"wrote {out_dir / 'real.json'} and {out_dir / 'real.md'}")
    return 0
