"""Adaptive Gauss–Hermite quadrature against lme4's nAGQ fits of cbpp.

References: tests/data/glmm_reference.json (tests/data/glmm_reference.R). lme4 1.1-31's
nAGQ > 1 log-likelihood leaves out the saturated model's; "logLik_full" adds it back,
and at nAGQ = 25 equals direct integration per herd to 1e-12 (the R script checks).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import GLMM_GROUP
from test_laplace import REF, _cbpp, _grouseticks

from jaxmixed.core._agq import agq_deviance, check_agq
from jaxmixed.core._family import Binomial
from jaxmixed.core._glmm import fit_glmm_data

pytestmark = GLMM_GROUP


def test_quadrature_at_lme4s_optima_gives_its_full_log_likelihood():
    with jax.enable_x64(True):
        data, y = _cbpp()
        for k in (2, 5, 10, 25):
            conv = REF["models"][f"cbpp_agq{k}"]["converged"]
            dev, lap = jax.jit(
                lambda th, b, k=k: agq_deviance(th, b, data, jnp.asarray(y), Binomial(), k)
            )(jnp.asarray(conv["theta"]), jnp.asarray(conv["fixef"]))
            assert bool(lap.converged)
            assert float(dev) == pytest.approx(-2.0 * conv["logLik_full"], abs=1e-6), k


def test_one_node_is_laplace_and_more_nodes_converge():
    with jax.enable_x64(True):
        data, y = _cbpp()
        theta, beta = jnp.asarray([0.65]), jnp.asarray([-1.4, -1.0, -1.1, -1.6])
        devs = {
            k: float(jax.jit(lambda th, b, k=k: agq_deviance(th, b, data, jnp.asarray(y), Binomial(), k)[0])(theta, beta))
            for k in (1, 3, 9, 15, 25)
        }
        _, lap = agq_deviance(theta, beta, data, jnp.asarray(y), Binomial(), 2)
    assert devs[1] == pytest.approx(float(lap.deviance), abs=1e-10)
    steps = [abs(devs[a] - devs[b]) for a, b in ((3, 9), (9, 15), (15, 25))]
    assert steps[0] > steps[1] > steps[2] and steps[2] < 1e-8
    assert abs(devs[1] - devs[25]) > 1e-3  # the Laplace error on cbpp (0.09 at the optima)


def test_fit_with_25_nodes_matches_lme4():
    ref = REF["models"]["cbpp_agq25"]
    conv = ref["converged"]
    with jax.enable_x64(True):
        data, y = _cbpp()
        fit = eqx.filter_jit(fit_glmm_data)(data, jnp.asarray(y), Binomial(), nagq=25)
    assert bool(fit.converged)
    assert float(fit.deviance) == pytest.approx(-2.0 * conv["logLik_full"], abs=1e-6)
    np.testing.assert_allclose(fit.theta, conv["theta"], rtol=1e-5)
    np.testing.assert_allclose(fit.beta, conv["fixef"], rtol=1e-5)
    np.testing.assert_allclose(np.sqrt(np.diag(fit.vcov_beta)), ref["se"], rtol=2e-3)


def test_quadrature_is_refused_where_lme4_refuses_it():
    with jax.enable_x64(True):
        data, _, _ = _grouseticks()
    with pytest.raises(ValueError, match="single grouping factor with one random effect"):
        check_agq(data, 5)
    with pytest.raises(ValueError, match="from 1 to 25, got 26"):
        check_agq(data, 26)
    check_agq(data, 1)  # Laplace takes any random part
