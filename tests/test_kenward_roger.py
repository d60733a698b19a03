"""Kenward–Roger against pbkrtest and lmerTest (tests/data/kr_reference.json, made by
tests/data/kr_reference.R) and against a dense n × n version of pbkrtest's algebra.

lme4's optimum (bobyqa, rhoend 1e-10) and this one differ in about the 6th
digit of θ, and the KR quantities are smooth in θ: the df are compared to
1e-3 relative (the issue's tolerance), standard errors and Φ_A to 1e-5, F to
1e-4 relative and p-values to 1e-4 relative. Coefficients are compared by
position (R's order is the fit's order).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

import jaxmixed as jm
from jaxmixed.core._kenward_roger import KRModel, kenward_roger
from jaxmixed.linear._kenward_roger import _random_columns, kr_model

DATA = Path(__file__).parent / "data"
REFS = json.loads((DATA / "kr_reference.json").read_text())


def _data(key: str) -> pd.DataFrame:
    """The data set of a reference entry, cut as kr_reference.R cuts it."""
    if key.startswith("sleepstudy"):
        ss = jm.load_dataset("sleepstudy")
        return ss if key == "sleepstudy" else ss.drop(index=range(0, len(ss), 7)).reset_index(drop=True)
    if key == "insteval120_crossed":
        ie = pd.read_csv(DATA / "insteval_first300.csv")
        ie = ie[ie["s"] <= 120].reset_index(drop=True)
        for col in ("s", "d", "studage", "service"):
            ie[col] = pd.Categorical(ie[col], categories=sorted(ie[col].unique()))
        return ie
    return jm.load_dataset({"cake": "cake", "nlschools": "nlschools", "penicillin": "Penicillin"}[key])


@pytest.fixture(scope="module")
def fits():
    return {key: jm.fit_reml(ref["formula"], _data(key)) for key, ref in REFS.items()}


@pytest.mark.parametrize("key", sorted(REFS))
def test_coefficient_table_matches_lmertest(key, fits):
    ref, fit = REFS[key], fits[key]
    table = fit.coef_table(ddf="kenward-roger")
    assert fit.objective == pytest.approx(ref["REMLcrit"], rel=1e-7)
    np.testing.assert_allclose(table["Estimate"], ref["estimate"], rtol=1e-5)
    np.testing.assert_allclose(table["Std. Error"], ref["se"], rtol=1e-5)
    np.testing.assert_allclose(table["df"], ref["df"], rtol=1e-3)
    np.testing.assert_allclose(table["t value"], ref["t"], rtol=1e-5)
    np.testing.assert_allclose(table["Pr(>|t|)"], ref["p"], rtol=1e-4)
    cov = fit._kenward_roger
    np.testing.assert_allclose(
        cov.vcov_adjusted, np.asarray(ref["vcov_adjusted"]).reshape(cov.vcov.shape), rtol=1e-5, atol=1e-12
    )
    np.testing.assert_allclose(cov.vcov, fit.vcov.to_numpy(), rtol=1e-8)


@pytest.mark.parametrize("key", [k for k in sorted(REFS) if REFS[k]["contests"]])
def test_contest_matches_lmertest(key, fits):
    for name, ref in REFS[key]["contests"].items():
        row = fits[key].contest(np.asarray(ref["L"]), ddf="kenward-roger").iloc[0]
        assert row["NumDF"] == ref["NumDF"], name
        assert row["DenDF"] == pytest.approx(ref["DenDF"], rel=1e-3), name
        assert row["F value"] == pytest.approx(ref["F"], rel=1e-4), name
        assert row["Mean Sq"] == pytest.approx(ref["MeanSq"], rel=1e-4), name
        assert row["Pr(>F)"] == pytest.approx(ref["p"], rel=1e-4), name


def test_balanced_design_needs_no_adjustment(fits):
    """sleepstudy is balanced: KR's df are the exact 17 and Φ_A = Φ."""
    table = fits["sleepstudy"].coef_table(ddf="kenward-roger")
    np.testing.assert_allclose(table["df"], 17.0, rtol=1e-8)
    cov = fits["sleepstudy"]._kenward_roger
    np.testing.assert_allclose(cov.vcov_adjusted, cov.vcov, rtol=1e-8)


def _dense_phi_a(fit) -> np.ndarray:
    """pbkrtest's algorithm with n × n matrices: V = Σ τₖ Gₖ, Pᵢ, Qᵢⱼ, the expected
    information from traces, U and Φ_A (an independent reference for the exact derivatives)."""
    model = kr_model(fit)
    idx, val, q = _random_columns(fit)
    n = idx.shape[0]
    z = np.zeros((n, q))
    np.add.at(z, (np.repeat(np.arange(n), idx.shape[1]), idx.ravel()), val.ravel())
    x = np.asarray(fit.arrays.X, float)
    k = len(model.tau)
    w = np.ones(n) if fit.arrays.weights is None else np.asarray(fit.arrays.weights, float)
    gs = [z @ (np.asarray(model.sigma_index) == i).astype(float) @ z.T for i in range(k - 1)] + [np.diag(1.0 / w)]
    v = sum(t * g for t, g in zip(model.tau, gs, strict=True))
    vi = np.linalg.inv(v)
    phi = np.linalg.inv(x.T @ vi @ x)
    p_mats = [-x.T @ vi @ g @ vi @ x for g in gs]
    q_mats = [[x.T @ vi @ gi @ vi @ gj @ vi @ x for gj in gs] for gi in gs]
    info = np.array(
        [
            [
                np.trace(vi @ gs[i] @ vi @ gs[j])
                - 2 * np.trace(phi @ q_mats[i][j])
                + np.trace(phi @ p_mats[i] @ phi @ p_mats[j])
                for j in range(k)
            ]
            for i in range(k)
        ]
    )
    w = 2 * np.linalg.inv(info)
    u = sum(w[i, j] * (q_mats[i][j] - p_mats[i] @ phi @ p_mats[j]) for i in range(k) for j in range(k))
    return phi + 2 * phi @ u @ phi


@pytest.mark.parametrize("key", ["sleepstudy_unbalanced", "sleepstudy_unbalanced_uncorrelated", "penicillin"])
def test_exact_derivatives_equal_the_dense_algebra(key, fits):
    np.testing.assert_allclose(fits[key]._kenward_roger.vcov_adjusted, _dense_phi_a(fits[key]), rtol=1e-9)


def test_weights_enter_as_the_residual_covariance():
    """With prior weights the residual component is σ²W⁻¹: Φ (KR's unadjusted covariance)
    equals the weighted fit's vcov, and Φ_A the dense algebra's with G = W⁻¹ (pbkrtest,
    which uses G = I there, has no reference)."""
    ss = jm.load_dataset("sleepstudy").assign(w=lambda d: 1.0 + (np.arange(len(d)) % 3))
    fit = jm.fit_reml("Reaction ~ Days + (Days | Subject)", ss.drop(index=range(0, 180, 7)), weights="w")
    np.testing.assert_allclose(fit._kenward_roger.vcov, fit.vcov.to_numpy(), rtol=1e-8)
    np.testing.assert_allclose(fit._kenward_roger.vcov_adjusted, _dense_phi_a(fit), rtol=1e-9)


def test_a_variance_at_zero_is_an_ordinary_point():
    """Dyestuff2's batch variance is 0 (a singular fit): the adjustment is the dense
    algebra's there too (no inverse of Σ is needed)."""
    fit = jm.fit_reml("Yield ~ 1 + (1 | Batch)", jm.load_dataset("Dyestuff2"))
    assert fit.singular
    np.testing.assert_allclose(fit._kenward_roger.vcov_adjusted, _dense_phi_a(fit), rtol=1e-9)
    assert np.isfinite(fit.coef_table(ddf="kenward-roger")["df"]).all()


def test_too_many_random_effects_is_a_clear_error(monkeypatch):
    import jaxmixed.linear._kenward_roger as host

    monkeypatch.setattr(host, "MAX_RANDOM_EFFECTS", 10)
    fit = jm.fit_reml("Reaction ~ Days + (1 | Subject)", jm.load_dataset("sleepstudy"))
    with pytest.raises(ValueError, match="dense 18 x 18"):
        fit.coef_table(ddf="kenward-roger")


def test_ml_fits_are_refused():
    ss = jm.load_dataset("sleepstudy")
    fit = jm.fit_reml("Reaction ~ Days + (Days | Subject)", ss, reml=False)
    with pytest.raises(ValueError, match="REML"):
        fit.coef_table(ddf="kenward-roger")
    with pytest.raises(ValueError, match="ddf must be one of"):
        fit.coef_table(ddf="kr")


def test_vmap_equals_one_at_a_time(fits):
    """kenward_roger is a pure function of its KRModel: vmapped over perturbed variance
    components it gives what each call gives alone."""
    base = kr_model(fits["sleepstudy_unbalanced"])
    taus = np.stack([base.tau * s for s in (1.0, 1.3, 0.7)])
    with jax.enable_x64(True):
        def one_call(t):
            return kenward_roger(KRModel(base.xtwx, base.ztwx, base.ztwz, base.sigma_index, t, base.n))

        single = jax.jit(one_call)  # compiled once (op by op the three calls took 15 s)
        one = [single(t) for t in taus]
        batched = jax.jit(jax.vmap(one_call))(taus)
    for i, out in enumerate(one):
        np.testing.assert_allclose(batched.vcov_adjusted[i], out.vcov_adjusted, rtol=1e-10)


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="R is not installed")
def test_live_r_agrees(fits, tmp_path):
    """pbkrtest run now (when R is here) on the unbalanced sleepstudy gives the stored df."""
    script = tmp_path / "kr.R"
    script.write_text(
        "suppressMessages(library(lmerTest))\n"
        f"ss <- read.csv('{Path(jm.__file__).parent / 'data' / 'sleepstudy.csv'}'); ss$Subject <- factor(ss$Subject)\n"
        "ss <- ss[-seq(1, nrow(ss), by = 7), ]\n"
        "m <- lmer(Reaction ~ Days + (Days | Subject), ss)\n"
        "cat(summary(m, ddf = 'Kenward-Roger')$coefficients[, 'df'], sep = '\\n')\n"
    )
    run = subprocess.run(["Rscript", str(script)], capture_output=True, text=True, timeout=300, check=True)
    df = np.asarray([float(v) for v in run.stdout.split()])
    np.testing.assert_allclose(
        fits["sleepstudy_unbalanced"].coef_table(ddf="kenward-roger")["df"], df, rtol=1e-3
    )


ANOVA_REFS = json.loads((DATA / "kr_anova_reference.json").read_text())


@pytest.mark.parametrize("key", sorted(ANOVA_REFS))
def test_anova_with_kenward_roger_matches_lmertest(key):
    """lmerTest's anova(m, type = 3 | 1, ddf = "Kenward-Roger"): pbkrtest's scaled F, its
    df and the unscaled mean square, per term (tests/data/kr_anova_reference.R)."""
    ref = ANOVA_REFS[key]
    fit = jm.fit_reml(ref["formula"], jm.load_dataset(key))
    for kind, type_ in (("type3", 3), ("type1", 1)):
        table = fit.anova(type=type_, ddf="kenward-roger")
        assert list(table.index) == ref[kind]["terms"]
        cols = ref[kind]["columns"]
        np.testing.assert_array_equal(table["NumDF"], cols["NumDF"])
        np.testing.assert_allclose(table["DenDF"], cols["DenDF"], rtol=1e-3)
        np.testing.assert_allclose(table["F value"], cols["F value"], rtol=1e-4)
        np.testing.assert_allclose(table["Mean Sq"], cols["Mean Sq"], rtol=1e-4)
        np.testing.assert_allclose(table["Pr(>F)"], cols["Pr(>F)"], rtol=1e-4)
