"""Profile likelihood traces and intervals against lme4's ``profile`` / ``confint``.

References: tests/data/profile_reference.json, made by profile_reference.R
(lme4 1.1-31, a grid about four times finer than lme4's default).
"""

from __future__ import annotations

import json
import shutil
import subprocess

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DATA

import jaxmixed
from jaxmixed.core._profile import COR, SD, profile_point
from jaxmixed.linear._profile import _jit_points, profile_problem

REFS = json.loads((DATA / "profile_reference.json").read_text())
MODELS = {
    "sleepstudy": "Reaction ~ Days + (Days | Subject)",
    "Penicillin": "diameter ~ 1 + (1 | plate) + (1 | sample)",
    "Pastes": "strength ~ 1 + (1 | batch/cask)",
    "Dyestuff2": "Yield ~ 1 + (1 | Batch)",
    "nlschools": "lang ~ IQ + (1 | class)",
}


def r_name(name: str) -> str:
    """A parameter name in lme4's spelling, whichever spelling the fit uses."""
    if name in ("Intercept", "(Intercept)"):
        return "(Intercept)"
    return name.replace("_Intercept|", "_(Intercept)|").replace(".Intercept|", ".(Intercept)|")


def r_value(v) -> float:
    return np.nan if v is None else float(v)


@pytest.fixture(scope="module")
def fits():
    return {k: jaxmixed.fit_reml(f, jaxmixed.load_dataset(k)) for k, f in MODELS.items()}


@pytest.fixture(scope="module")
def profiles(fits):
    return {k: m.profile() for k, m in fits.items()}


@pytest.mark.parametrize("model", list(MODELS))
def test_limits_match_lme4(profiles, model):
    ref = REFS[model]
    ci = profiles[model].conf_int(0.95)
    assert list(ci.columns) == ["2.5%", "97.5%"]
    assert sorted(r_name(n) for n in ci.index) == sorted(ref["names"])
    for name, (lo, hi) in ci.iterrows():
        i = ref["names"].index(r_name(str(name)))
        r_lo, r_hi = r_value(ref["lower"][i]), r_value(ref["upper"][i])
        width = r_hi - r_lo if np.isfinite(r_hi - r_lo) else hi - lo
        for mine, theirs in ((lo, r_lo), (hi, r_hi)):
            if np.isfinite(theirs):
                assert abs(mine - theirs) <= 2e-3 * width, (name, mine, theirs)
            else:
                assert mine == theirs, (name, mine, theirs)


def test_conf_int_method_profile(fits, profiles):
    m = fits["sleepstudy"]
    ci = m.conf_int(method="profile")
    names = jaxmixed.design._names.parameter_names(m.design) + list(m.fixed_effects.index)
    assert list(ci.index) == names
    np.testing.assert_allclose(ci.to_numpy(), profiles["sleepstudy"].conf_int().to_numpy(), rtol=1e-6)
    wider = m.conf_int(level=0.99, method="profile")
    assert np.all(wider.iloc[:, 0] < ci.iloc[:, 0]) and np.all(wider.iloc[:, 1] > ci.iloc[:, 1])


def test_zeta_zero_at_optimum_and_monotone(profiles):
    for prof in profiles.values():
        frame = prof.to_frame()
        assert list(frame.columns) == [".zeta", *prof.names, ".par"]
        for name, rows in frame.groupby(".par", observed=True):
            at_opt = np.isclose(rows[name], prof.estimate[name], rtol=0, atol=0)
            assert np.all(rows[".zeta"][at_opt] == 0.0)
            zeta = rows[".zeta"].to_numpy()
            assert np.all(np.diff(zeta) >= -1e-6), name  # rows are in the parameter's order
            assert zeta.max() >= 2.0 and (zeta.min() <= -2.0 or prof.kinds[prof.names.index(name)] == SD)
        assert prof.converged


def test_reml_fit_profiled_on_ml_deviance(fits, profiles):
    """lme4's devfun2 refits a REML fit by ML: the profile of the REML fit is the ML fit's."""
    ml = jaxmixed.fit_reml(MODELS["sleepstudy"], jaxmixed.load_dataset("sleepstudy"), reml=False)
    prof = profiles["sleepstudy"]
    assert prof.deviance == pytest.approx(REFS["sleepstudy"]["ml_deviance"], abs=1e-6)
    np.testing.assert_allclose(prof.estimate["sigma"], ml.sigma, rtol=1e-6)
    np.testing.assert_allclose(prof.estimate.iloc[-2:], ml.fixed_effects, rtol=1e-6)


def test_vmapped_point_matches_direct_refit(fits, profiles):
    """ζ² of a traced point equals a refit of that one point, not vmapped."""
    prof = profiles["sleepstudy"]
    k = int(np.flatnonzero((prof.trace.which == prof.kinds.tolist().index(COR)) & (prof.trace.zeta > 1.0))[0])
    w = int(prof.trace.which[k])
    with jax.enable_x64(True):
        problem = profile_problem(fits["sleepstudy"])
        value = jnp.asarray(prof.trace.params[k, w])
        single = eqx.filter_jit(profile_point)(problem.stats, problem.layout, problem.x0, jnp.asarray(w), value)
        batch = _jit_points(problem.stats, problem.layout, jnp.stack([problem.x0, problem.x0]), jnp.asarray([w, 0], jnp.int32), jnp.stack([value, value]))
    zeta2 = prof.trace.zeta[k] ** 2
    assert float(single.deviance) - prof.deviance == pytest.approx(zeta2, abs=1e-6)
    assert float(batch.deviance[0]) - prof.deviance == pytest.approx(zeta2, abs=1e-6)


def test_trace_matches_lme4_points(fits):
    """ζ re-evaluated at lme4's own grid values agrees with lme4's ζ where intervals
    are read (|ζ| < 3.5). Further out lme4's re-optimisation (warm-started from
    its previous point) stops short: at sd_(Intercept) = 12.2 it reports
    ζ = −4.107 where the minimum found here is lower (ζ = −4.085)."""
    ref = REFS["sleepstudy"]["traces"]
    m = fits["sleepstudy"]
    names = [r_name(n) for n in jaxmixed.design._names.parameter_names(m.design) + list(m.fixed_effects.index)]
    with jax.enable_x64(True):
        problem = profile_problem(m)
        for par in ("sd_(Intercept)|Subject", "cor_Days.(Intercept)|Subject", "Days"):
            values = np.asarray([r_value(v) for v in ref[par]["value"]])[::8]
            zeta_r = np.asarray([r_value(v) for v in ref[par]["zeta"]])[::8]
            keep = np.abs(zeta_r) < 3.5
            values, zeta_r = values[keep], zeta_r[keep]
            w = names.index(par)
            pts = problem.evaluate(np.full(len(values), w), values)
            dev = np.maximum(np.asarray(pts.deviance) - problem.deviance, 0.0)
            zeta = np.sign(values - problem.psi_hat[w]) * np.sqrt(dev)
            np.testing.assert_allclose(zeta, zeta_r, atol=2e-3, err_msg=par)


def test_boundary_fit(profiles):
    """Dyestuff2: the sd is 0 at the optimum; its lower limit is 0 (lme4's), no ζ < 0."""
    prof = profiles["Dyestuff2"]
    sd = prof.names[0]
    assert prof.estimate[sd] == 0.0
    frame = prof.to_frame()
    rows = frame[frame[".par"] == sd]
    assert rows[".zeta"].min() >= 0.0
    ci = prof.conf_int()
    assert ci.loc[sd].iloc[0] == 0.0
    assert ci.loc[sd].iloc[1] == pytest.approx(2.084048, rel=1e-3)


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="needs R with lme4")
def test_live_r_dyestuff(tmp_path):
    """lme4 run now on Dyestuff, its default profile settings."""
    csv = tmp_path / "d.csv"
    data = jaxmixed.load_dataset("Dyestuff")
    data.to_csv(csv, index=False)
    script = (
        "suppressMessages(library(lme4));"
        f"d <- read.csv('{csv}'); d$Batch <- factor(d$Batch);"
        "m <- lmer(Yield ~ 1 + (1 | Batch), d);"
        "ci <- confint(m, method = 'profile', oldNames = FALSE, quiet = TRUE, delta = 0.1);"
        "write.csv(ci, stdout())"
    )
    out = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True, check=True, timeout=300)
    lines = [ln.split(",") for ln in out.stdout.strip().splitlines()[1:]]
    r = {ln[0].strip('"'): (float(ln[1]), float(ln[2])) for ln in lines}
    ci = jaxmixed.fit_reml("Yield ~ 1 + (1 | Batch)", data).conf_int(method="profile")
    for name, (lo, hi) in ci.iterrows():
        r_lo, r_hi = r[r_name(str(name))]
        assert abs(lo - r_lo) <= 2e-3 * (r_hi - r_lo) and abs(hi - r_hi) <= 2e-3 * (r_hi - r_lo), name
