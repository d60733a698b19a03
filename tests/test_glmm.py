"""The pure GLMM fit (Laplace, nAGQ = 1) against lme4's glmer.

References: tests/data/glmm_reference.json (tests/data/glmm_reference.R, lme4 1.1-31,
its own datasets), "converged" values: PIRLS iterated to the mode, which lme4's
reported values miss by up to 5e-6 in -2 log L.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import GLMM_GROUP
from test_laplace import REF, _cbpp

import jaxmixed as jm
from jaxmixed.core._family import Binomial, Poisson
from jaxmixed.core._glmm import _Problem, fit_glmm_data

pytestmark = GLMM_GROUP


def _problem(key: str):
    """(data, y, family, offset) of a reference model (call inside enable_x64)."""
    data, y = _cbpp()
    if key == "cbpp_offset_poisson":  # incidence ~ period + offset(log(size)): counts, unit weights
        size = np.asarray(data.weights)
        data = eqx.tree_at(lambda d: d.weights, data, np.ones_like(size))
        return data, y * size, Poisson(), np.log(size)
    link = {"cbpp_laplace": "logit", "cbpp_cloglog": "cloglog", "cbpp_probit": "probit"}[key]
    return data, y, Binomial(link), None


@pytest.mark.parametrize("key", ["cbpp_laplace", "cbpp_offset_poisson"])
def test_fit_matches_lme4(key, request):
    """The pure fit behind jm.fit_glmm (its ``fit_result``: one compiled fit shared with
    test_glmm_api) on cbpp's binomial and offset Poisson models."""
    ref = REF["models"][key]
    conv = ref["converged"]
    fixture = {"cbpp_laplace": "cbpp_logit_fit", "cbpp_offset_poisson": "cbpp_offset_fit"}[key]
    fit = request.getfixturevalue(fixture).fit_result
    assert bool(fit.converged) and not bool(jnp.any(fit.at_boundary))
    assert float(fit.deviance) == pytest.approx(conv["minus2logLik"], abs=1e-6)
    np.testing.assert_allclose(fit.theta, conv["theta"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fit.beta, conv["fixef"], rtol=1e-5, atol=1e-6)
    # lme4's standard errors come from a finite-difference Hessian at its own optimum
    np.testing.assert_allclose(np.sqrt(np.diag(fit.vcov_beta)), ref["se"], rtol=1e-3)


def test_lme4s_cloglog_optimum_is_the_deviances_stationary_point():
    """cloglog (not canonical: Newton steps with the observed information): at lme4's
    converged optimum the deviance is its −2 log L and the exact gradient vanishes to
    lme4's accuracy; 1% away from it, it does not. (The probit fit is tested whole in
    test_glmm_api, and its Hessian in test_laplace.)"""
    conv = REF["models"]["cbpp_cloglog"]["converged"]
    with jax.enable_x64(True):
        data, y, family, _ = _problem("cbpp_cloglog")
        problem = _Problem(data, jnp.asarray(y), family, jnp.zeros(len(y)), None, 1)
        x = jnp.asarray(conv["theta"] + conv["fixef"])
        value_grad = jax.jit(jax.value_and_grad(lambda z: problem.deviance(z, newton_steps=1)))
        value, grad = value_grad(x)
        _, grad_away = value_grad(1.01 * x)
    assert float(value) == pytest.approx(conv["minus2logLik"], abs=1e-6)
    assert np.max(np.abs(np.asarray(grad))) < 1e-3 < np.max(np.abs(np.asarray(grad_away)))


def test_three_crossed_factors_match_lme4(grouse_fit):
    """grouseticks: Poisson counts with INDEX, BROOD and LOCATION (the dense block and
    its Schur complement); the Hessian through two Newton steps gives lme4's SEs. The pure
    fit behind jm.fit_glmm (θ in lme4's order: factors by number of levels)."""
    ref = REF["models"]["grouseticks_poisson"]
    conv = ref["converged"]
    fit = grouse_fit.fit_result
    assert bool(fit.converged) and not bool(jnp.any(fit.at_boundary))
    assert float(fit.deviance) == pytest.approx(conv["minus2logLik"], abs=1e-6)
    np.testing.assert_allclose(fit.theta, conv["theta"], rtol=2e-5)
    np.testing.assert_allclose(fit.beta, conv["fixef"], rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(np.sqrt(np.diag(fit.vcov_beta)), ref["se"], rtol=1e-3)
    # lme4's Hessian (finite differences, at its optimum) in (θ, β)
    np.testing.assert_allclose(fit.hessian, ref["hessian"], rtol=2e-3, atol=0.05)


def test_a_response_with_no_herd_variation_is_at_the_boundary(cbpp_frame):
    """Binomial responses drawn with no herd effect: θ is reported as exactly 0."""
    rng = np.random.default_rng(3)
    frame = cbpp_frame.assign(k=rng.binomial(cbpp_frame["size"], 0.2))
    # cbpp's design: the program of cbpp_logit_fit (the persistent compilation cache)
    user = jm.fit_glmm("cbind(k, size - k) ~ period + (1 | herd)", frame)
    assert user.singular and user.converged
    fit = user.fit_result
    assert bool(fit.converged)
    assert float(fit.theta[0]) == 0.0 and bool(fit.at_boundary[0])
    se = np.sqrt(np.diag(fit.vcov_beta))  # from the Hessian without the held θ
    assert np.all(np.isfinite(se)) and np.all(se > 0)


def test_gradients_through_the_fit_match_refits():
    """d(θ̂, β̂, deviance)/dy by the implicit function theorem against central differences
    of whole refits (Poisson counts with an offset: y enters the deviance smoothly)."""
    with jax.enable_x64(True):
        data, y, family, offset = _problem("cbpp_offset_poisson")
        off = jnp.asarray(offset)
        weights = jnp.asarray(np.linspace(-1.0, 1.0, 6))

        def summary(yy):
            fit = fit_glmm_data(data, yy, family, offset=off, standard_errors=False)
            return jnp.concatenate([fit.theta, fit.beta]) @ weights[:5] + 1e-3 * fit.deviance

        grad = np.asarray(jax.jit(jax.grad(summary))(jnp.asarray(y)))
        value = jax.jit(summary)
        rows = [int(i) for i in np.flatnonzero(np.asarray(y) > 0)[[0, 3, -1]]]  # y − h stays a count ≥ 0
        fd = []
        for i in rows:
            e = jnp.zeros(len(y)).at[i].set(1e-4)
            fd.append((float(value(jnp.asarray(y) + e)) - float(value(jnp.asarray(y) - e))) / 2e-4)
    np.testing.assert_allclose(grad[rows], fd, rtol=1e-4, atol=1e-7)


def test_vmap_over_responses_equals_separate_fits(cbpp_frame):
    """Three binomial responses on cbpp's design as one vmapped fit, against one at a time
    (jm.fit_glmm: the program of cbpp_logit_fit; the estimates: the vmapped Hessian is
    checked through fit_glmm_many in test_glmm_many)."""
    rng = np.random.default_rng(11)
    with jax.enable_x64(True):
        data, _ = _cbpp()
        size = np.asarray(data.weights).astype(int)
        herd = rng.normal(scale=0.7, size=(3, data.index.n_levels))
        p = 1.0 / (1.0 + np.exp(1.5 - herd[:, np.asarray(data.index.codes)]))
        ys = jnp.asarray(rng.binomial(size[None, :], p) / size[None, :])
        fit = lambda yy: fit_glmm_data(data, yy, Binomial(), standard_errors=False)  # noqa: E731
        batched = eqx.filter_jit(eqx.filter_vmap(fit))(ys)
    for k in range(3):
        frame = cbpp_frame.assign(k=np.round(np.asarray(ys[k]) * size))
        one = jm.fit_glmm("cbind(k, size - k) ~ period + (1 | herd)", frame).fit_result
        assert bool(one.converged) and bool(batched.converged[k])
        np.testing.assert_allclose(batched.deviance[k], one.deviance, rtol=1e-12)
        np.testing.assert_allclose(batched.beta[k], one.beta, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(batched.theta[k], one.theta, rtol=1e-9, atol=1e-12)
