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
from jaxmixed.core._profile import (
    COR,
    SD,
    ProfileLayout,
    _Constraint,
    _constraint,
    _deviance_and_beta,
    _positive_definite,
    _side_limit,
    _user_params,
    optimum_x,
    profile_point,
    to_solver,
)
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
        eye = jnp.eye(problem.x0.shape[0], dtype=problem.x0.dtype)
        single = eqx.filter_jit(profile_point)(
            problem.stats, problem.layout, problem.x0, jnp.asarray(w), value, eye
        )
        batch = _jit_points(
            problem.stats,
            problem.layout,
            jnp.stack([problem.x0, problem.x0]),
            jnp.asarray([w, 0], jnp.int32),
            jnp.stack([value, value]),
            jnp.stack([eye, eye]),
        )
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
    names = [
        r_name(n) for n in jaxmixed.design._names.parameter_names(m.design) + list(m.fixed_effects.index)
    ]
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


def _point_hessian(problem, w: int, x: jax.Array) -> np.ndarray:
    """The Hessian in x (n_x, n_x) of one point's objective: ψ_w held at ψ̂_w (β profiled)."""
    layout, n_x = problem.layout, problem.layout.n_x
    value = jnp.asarray(problem.psi_hat[w])
    is_var = w < n_x
    con = _constraint(problem.stats, jnp.asarray(max(w - n_x, 0)), value, jnp.asarray(not is_var))
    # compiled (op by op the six Hessians took 19 s); the layout is static
    hess = jax.jit(jax.jacrev(jax.grad(lambda v, s, c: _deviance_and_beta(v, s, layout, c)[0])))
    return np.asarray(hess(x, problem.stats, con))


def test_preconditioner_whitens_each_point(fits):
    """PᵀH_wP = I on the free coordinates: P from the joint quadratic approximation (the
    conditional covariance), H_w the exact Hessian of the point's own objective."""
    with jax.enable_x64(True):
        problem = profile_problem(fits["sleepstudy"])
        n_x, kinds = problem.layout.n_x, problem.layout.kinds
        x_hat = jnp.asarray(optimum_x(problem.psi_hat, problem.layout))
        factors = problem.quadratic.factors(n_x)
        for w in range(len(kinds)):
            p = factors[w]
            free = np.arange(n_x) != w
            whitened = (p.T @ _point_hessian(problem, w, x_hat) @ p)[np.ix_(free, free)]
            np.testing.assert_allclose(whitened, np.eye(int(free.sum())), atol=1e-6, err_msg=str(w))


def test_slopes_are_the_implicit_derivative(fits):
    """The quadratic's dx*/dψ_w against central differences of re-optimised points."""
    with jax.enable_x64(True):
        problem = profile_problem(fits["sleepstudy"])
        n_x, layout = problem.layout.n_x, problem.layout
        slopes = problem.quadratic.slopes(n_x)
        se = problem.quadratic.se
        for w in (0, 2, n_x):  # an sd, the correlation, a fixed effect
            h = 0.05 * se[w]
            values = problem.psi_hat[w] + np.array([-h, h])
            if layout.kinds[w] == COR:  # the quadratic is in asin(cor)
                values = np.sin(np.arcsin(problem.psi_hat[w]) + np.array([-h, h]))
            pts = problem.evaluate(np.array([w, w]), values)
            x = np.asarray(to_solver(np.asarray(pts.params)[:, :n_x], layout.kinds[:n_x]))
            free = np.arange(n_x) != w
            np.testing.assert_allclose(((x[1] - x[0]) / (2 * h))[free], slopes[w][free], rtol=2e-3, atol=1e-6)


def test_negative_sd_is_a_flipped_correlation(fits):
    """x with an sd negated is the same Σ with that sd's correlations negated: equal D,
    and reported as |sd| with the correlation's sign flipped."""
    with jax.enable_x64(True):
        problem = profile_problem(fits["sleepstudy"])
        layout, stats = problem.layout, problem.stats
        none = _Constraint(jnp.zeros(layout.n_fixed), jnp.zeros(()), jnp.zeros((), bool))
        x = jnp.asarray([0.9, 0.25, 0.3, 3.2])  # sd, sd, asin cor, log σ
        flipped = x.at[1].set(-0.25)
        mirrored = x.at[2].set(-0.3)
        d, beta = _deviance_and_beta(flipped, stats, layout, none)
        assert float(d) == pytest.approx(
            float(_deviance_and_beta(mirrored, stats, layout, none)[0]), rel=1e-12
        )
        np.testing.assert_allclose(
            _user_params(flipped, beta, stats, layout),
            _user_params(mirrored, beta, stats, layout),
            rtol=1e-12,
        )


def test_side_limit_reads_the_monotone_stretch():
    """A limit before ζ turns back is read; one beyond it is NaN (not monotone)."""
    u = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    zeta = np.array([0.0, 1.0, 2.0, 3.0, 2.5, 2.6])
    at, turned = _side_limit(u, zeta, 1.5)
    assert at == pytest.approx(1.5, abs=1e-9) and not turned
    at, turned = _side_limit(u, zeta, 3.2)
    assert at is None and turned
    at, turned = _side_limit(u[:4], zeta[:4], 3.2)
    assert at is None and not turned  # short of the target: the bound, not a failure
    # Near-duplicate points (the same ζ up to round-off) do not bend the interpolation.
    u2, z2 = np.array([0.0, 1.0, 1.0001, 2.0]), np.array([0.0, 1.0, 1.00001, 2.0])
    assert _side_limit(u2, z2, 1.5)[0] == pytest.approx(1.5, abs=1e-6)
    at, _ = _side_limit(-u[:4], -zeta[:4], -1.5)  # the lower side, ζ < 0 outward
    assert at == pytest.approx(-1.5, abs=1e-9)


def test_starts_made_positive_definite():
    """A 3 × 3 term's start whose correlations are not a correlation matrix gets its free
    correlations shrunk until they are; the held one is kept."""
    layout = ProfileLayout(terms=((0, 0, 3),), n_fixed=1)
    x = np.array([[1.0, 1.0, 1.0, np.arcsin(0.9), np.arcsin(-0.9), np.arcsin(0.9), 0.0]])
    out = _positive_definite(x, np.array([4]), layout)
    r = np.sin(out[0, 3:6])
    corr = np.array([[1, r[0], r[1]], [r[0], 1, r[2]], [r[1], r[2], 1]])
    assert np.linalg.eigvalsh(corr)[0] > 0
    assert r[1] == pytest.approx(-0.9, abs=1e-12)
    assert abs(r[0]) < 0.9 and abs(r[2]) < 0.9
    ok = np.array([[1.0, 1.0, 1.0, 0.1, 0.2, 0.3, 0.0]])
    np.testing.assert_array_equal(_positive_definite(ok, np.array([3]), layout), ok)


def test_covariate_units_do_not_change_the_profile(fits, profiles):
    """Days in thousandths of a day: the intervals are the same, scaled (the starts'
    floor for an sd is in the fit's standardised units, not σ's)."""
    data = jaxmixed.load_dataset("sleepstudy").assign(Days=lambda d: d.Days * 1000.0)
    ci = jaxmixed.fit_reml(MODELS["sleepstudy"], data).profile().conf_int()
    ref = profiles["sleepstudy"].conf_int()
    scale = np.ones(len(ref))
    scale[[list(ref.index).index("sd_Days|Subject"), list(ref.index).index("Days")]] = 1e-3
    width = (ref.iloc[:, 1] - ref.iloc[:, 0]).to_numpy() * scale
    for col in ref.columns:
        assert np.all(np.abs(ci[col].to_numpy() - ref[col].to_numpy() * scale) <= 2e-3 * width), col


def test_unknown_curvature_is_left_unscaled():
    """A parameter the deviance does not depend on (a zero row of H: NaN in Σ) gets no
    slope and an identity row in every preconditioner; the others keep theirs."""
    from jaxmixed.core._profile import QuadraticApproximation

    cov = np.array([[2.0, 0.5, np.nan, 0.1], [0.5, 1.0, np.nan, 0.2], [np.nan] * 4, [0.1, 0.2, np.nan, 3.0]])
    quad = QuadraticApproximation(covariance=jnp.asarray(cov))
    slopes = quad.slopes(3)
    assert np.all(np.isfinite(slopes)) and np.all(slopes[:, 2] == 0.0)
    assert np.isnan(quad.se[2]) and np.all(np.isfinite(quad.se[[0, 1, 3]]))
    factors = quad.factors(3)
    for w in (0, 1, 3):
        p = factors[w]
        assert np.all(np.isfinite(p)) and p[2, 2] == 1.0 and p[2, 0] == p[2, 1] == 0.0
    cond = 0.5 * (cov[:2, :2] - np.outer(cov[:2, 3], cov[3, :2]) / cov[3, 3])  # β held: x's conditional
    np.testing.assert_allclose((factors[3] @ factors[3].T)[:2, :2], cond, rtol=1e-6)  # float32 Σ


def test_a_flat_hessian_row_is_unknown_and_the_rest_exact(fits):
    """With the slope's sd at exactly 0 the correlation enters D only through sd·cor: its
    second derivative is 0 (its mixed one with the sd is not), its entries of the
    approximation are NaN, and the others are the inverse of the Hessian without that row
    and column (a dense reference), not NaN."""
    from jaxmixed.core._profile import _joint_deviance, quadratic_approximation

    with jax.enable_x64(True):
        problem = profile_problem(fits["sleepstudy"])
        layout, stats = problem.layout, problem.stats
        n_x = layout.n_x
        x = optimum_x(problem.psi_hat, layout)
        x[1] = 0.0  # sleepstudy's x: sd(Intercept), sd(Days), asin(cor), log σ
        beta = jnp.asarray(problem.psi_hat[n_x:])
        approx = jax.jit(lambda s, x_, b: quadratic_approximation(s, layout, x_, b))(stats, jnp.asarray(x), beta)
        z = jnp.concatenate([jnp.asarray(x), beta])
        hess = np.asarray(jax.jit(jax.jacrev(jax.grad(lambda v: _joint_deviance(v, stats, layout))))(z))
    cov = np.asarray(approx.covariance)
    cor = int(np.flatnonzero(layout.kinds == COR)[0])
    assert abs(hess[cor, cor]) <= 1e-12 * np.abs(hess).max() and np.abs(hess[cor]).max() > 1.0
    assert np.all(np.isnan(cov[cor])) and np.all(np.isnan(cov[:, cor]))
    rest = np.arange(len(z)) != cor
    expected = 2.0 * np.linalg.inv(0.5 * (hess + hess.T)[np.ix_(rest, rest)])
    np.testing.assert_allclose(cov[np.ix_(rest, rest)], expected, rtol=1e-8, atol=1e-12)
