"""Families and links of the GLMMs against scipy's distributions and R's conventions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxmixed.core._family import Binomial, CLogLog, Log, Logit, Poisson, Probit, family_from_name

EPS = np.finfo(np.float64).eps
LINKS = [Logit(), Probit(), CLogLog(), Log()]


@pytest.mark.parametrize("link", LINKS, ids=lambda k: k.name)
def test_inverse_and_derivative(link):
    """g(g⁻¹(η)) = η inside the clipping, and dμ/dη against autodiff of g⁻¹."""
    with jax.enable_x64(True):
        eta = jnp.linspace(-4.0, 3.0, 29)
        mu = link.inverse(eta)
        # atol: cloglog's μ is 1 − 2e-9 at η = 3, where 1 − μ keeps 7 digits
        np.testing.assert_allclose(link.link(mu), eta, rtol=1e-10, atol=1e-8)
        auto = jax.vmap(jax.grad(link.inverse))(eta)
        # atol: autodiff of cloglog's expm1 forms exp(x) as expm1(x) + 1 (2e-9 at η = 3)
        np.testing.assert_allclose(link.mu_eta(eta), auto, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("link", [Logit(), Probit(), CLogLog()], ids=lambda k: k.name)
def test_probability_links_stay_inside_the_interval(link):
    """R's bounds: μ within eps of 0 and 1 and dμ/dη at least eps, at any η."""
    with jax.enable_x64(True):
        eta = jnp.asarray([-1e4, -800.0, -40.0, 40.0, 800.0, 1e4])
        mu = np.asarray(link.inverse(eta))
        d = np.asarray(link.mu_eta(eta))
    assert np.all(mu >= EPS) and np.all(mu <= 1.0 - EPS) and np.all(np.isfinite(mu))
    assert np.all(d >= EPS) and np.all(np.isfinite(d))


def test_probit_is_the_normal_cdf():
    with jax.enable_x64(True):
        eta = jnp.linspace(-3.0, 3.0, 13)
        np.testing.assert_allclose(Probit().inverse(eta), stats.norm.cdf(np.asarray(eta)), rtol=1e-13)


def test_binomial_log_likelihood_is_scipys():
    """Proportions with trials as weights give scipy's binomial log-pmf, constants included."""
    rng = np.random.default_rng(0)
    n = rng.integers(1, 20, size=50).astype(float)
    k = rng.binomial(n.astype(int), 0.3).astype(float)
    mu = rng.uniform(0.05, 0.95, size=50)
    with jax.enable_x64(True):
        fam = Binomial()
        ll = np.asarray(fam.log_likelihood(jnp.asarray(k / n), jnp.asarray(mu), jnp.asarray(n)))
        dev = np.asarray(fam.deviance_residuals(jnp.asarray(k / n), jnp.asarray(mu), jnp.asarray(n)))
    np.testing.assert_allclose(ll, stats.binom.logpmf(k, n, mu), rtol=1e-11)
    expected = 2.0 * (stats.binom.logpmf(k, n, k / n) - stats.binom.logpmf(k, n, mu))
    np.testing.assert_allclose(dev, expected, rtol=1e-9, atol=1e-12)
    assert np.all(dev >= 0.0)


def test_poisson_log_likelihood_is_scipys():
    rng = np.random.default_rng(1)
    y = rng.poisson(3.0, size=50).astype(float)
    mu = rng.uniform(0.5, 6.0, size=50)
    w = rng.uniform(0.5, 2.0, size=50)
    with jax.enable_x64(True):
        fam = Poisson()
        ll = np.asarray(fam.log_likelihood(jnp.asarray(y), jnp.asarray(mu), jnp.asarray(w)))
        sat = np.asarray(fam.saturated_log_likelihood(jnp.asarray(y), jnp.asarray(w)))
    np.testing.assert_allclose(ll, w * stats.poisson.logpmf(y, mu), rtol=1e-11)
    np.testing.assert_allclose(sat, w * stats.poisson.logpmf(y, y), rtol=1e-11, atol=1e-14)  # y = 0 included


def test_working_weights_and_response():
    """PIRLS's w = a(dμ/dη)²/V(μ) and z = η + (y − μ)/(dμ/dη): for the canonical logit,
    w = aμ(1 − μ)."""
    with jax.enable_x64(True):
        eta = jnp.asarray([-1.0, 0.0, 0.5, 2.0])
        y = jnp.asarray([0.0, 1.0, 0.25, 0.5])
        a = jnp.asarray([1.0, 1.0, 4.0, 2.0])
        w, z = Binomial().working(y, eta, a)
        mu = 1.0 / (1.0 + np.exp(-np.asarray(eta)))
    np.testing.assert_allclose(w, np.asarray(a) * mu * (1 - mu), rtol=1e-12)
    np.testing.assert_allclose(z, np.asarray(eta) + (np.asarray(y) - mu) / (mu * (1 - mu)), rtol=1e-12)


def test_bad_responses_are_named():
    with pytest.raises(ValueError, match="proportion in \\[0, 1\\].*1 row"):
        Binomial().check_response(np.array([0.0, 1.5, 1.0]), np.ones(3))
    with pytest.raises(ValueError, match="whole numbers; 1 row.*first: 1.5"):
        Binomial().check_response(np.array([0.5, 0.5]), np.array([2.0, 3.0]))
    with pytest.raises(ValueError, match="negative or not finite"):
        Poisson().check_response(np.array([1.0, -1.0]), np.ones(2))
    with pytest.raises(ValueError, match="not whole numbers.*first: 2.5"):
        Poisson().check_response(np.array([1.0, 2.5]), np.ones(2))
    Binomial().check_response(np.array([0.0, 0.5, 1.0]), np.array([1.0, 2.0, 3.0]))  # fine
    Poisson().check_response(np.array([0.0, 3.0]), np.ones(2))


def test_families_and_links_by_name():
    assert family_from_name("binomial").link.name == "logit"
    assert family_from_name("poisson").link.name == "log"
    assert Binomial("cloglog").link.name == "cloglog"
    with pytest.raises(ValueError, match="takes the links"):
        Poisson("logit")
    with pytest.raises(ValueError, match="unknown link 'identity'"):
        Binomial("identity")
    with pytest.raises(ValueError, match="family must be"):
        family_from_name("gaussian")


def test_vmap_and_jit_equal_eager():
    with jax.enable_x64(True):
        fam = Binomial("probit")
        y = jnp.asarray([[0.0, 0.5], [1.0, 0.25]])
        eta = jnp.asarray([[0.3, -0.2], [1.1, 0.0]])
        a = jnp.asarray([[1.0, 2.0], [1.0, 4.0]])
        eager = [fam.working(y[i], eta[i], a[i]) for i in range(2)]
        batched = jax.jit(jax.vmap(fam.working))(y, eta, a)
    for i in range(2):
        np.testing.assert_allclose(batched[0][i], eager[i][0], rtol=1e-13)
        np.testing.assert_allclose(batched[1][i], eager[i][1], rtol=1e-13)
