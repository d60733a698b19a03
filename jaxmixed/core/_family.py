"""Response families and link functions of generalized linear mixed models (lme4's glmer).

A family gives the conditional distribution of yᵢ given the linear predictor
ηᵢ: its mean μᵢ = g⁻¹(ηᵢ) through a :class:`Link`, its variance function
V(μ), and its log-likelihood with every constant. Penalised iteratively
reweighted least squares (PIRLS) needs, per row,

    working weight    wᵢ = aᵢ (dμ/dη)² / V(μᵢ)        (aᵢ the prior weight)
    working response  zᵢ = ηᵢ + (yᵢ − μᵢ) / (dμ/dη)

and the Laplace deviance needs the log-likelihood, split into the terms that
depend on μ (:meth:`Family.log_kernel`, all PIRLS compares) and the constants
(:meth:`Family.log_constant`, computed once per deviance).

Conventions are R's ``glm`` families, which lme4 uses:

- **Binomial.** y is the proportion of successes in [0, 1] and the prior
  weight aᵢ the number of trials (a 0/1 response has aᵢ = 1; lme4's
  ``cbind(k, n − k)`` becomes y = k/n with a = n). Log-likelihood
  ``Σ log C(aᵢ, aᵢyᵢ) + aᵢ[yᵢ log μᵢ + (1 − yᵢ) log(1 − μᵢ)]``.
- **Poisson.** y counts, aᵢ prior weights multiplying each row's
  log-likelihood ``yᵢ log μᵢ − μᵢ − log yᵢ!``.

The links keep μ and dμ/dη inside R's bounds (``.Machine$double.eps`` of
the interval's ends, η clipped where R clips it), so that PIRLS meets the
same numbers as lme4 at extreme η. Everything here is pure JAX, elementwise,
differentiable and vmappable; :meth:`Family.check_response` is the host-side
validation a user-level fit calls first.
"""

from __future__ import annotations

import abc
from typing import cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erfinv, gammaln, ndtr, xlogy
from jaxtyping import Array, Float

__all__ = ["Binomial", "CLogLog", "Family", "Link", "Log", "Logit", "Poisson", "Probit", "family_from_name"]

# R's .Machine$double.eps: how far μ is kept from the ends of its range.
_EPS = float(np.finfo(np.float64).eps)
# R's logit keeps η within ±30 for μ (plogis is then within eps of 0 or 1).
_LOGIT_THRESH = 30.0
# R's cloglog clips η at 700 for dμ/dη (exp(700) is near the largest double).
_CLOGLOG_MAX_ETA = 700.0


def _eps(x: Array) -> float:
    """R's bound in ``x``'s precision (float32 cannot hold 1 − 2.2e-16)."""
    return max(_EPS, float(jnp.finfo(x.dtype).eps))


class Link(eqx.Module):
    """A link function g: μ = g⁻¹(η). Subclasses are stateless."""

    name: str = eqx.field(static=True, init=False)

    @abc.abstractmethod
    def link(self, mu: Float[Array, "*n"]) -> Float[Array, "*n"]:
        """η = g(μ)."""

    @abc.abstractmethod
    def inverse(self, eta: Float[Array, "*n"]) -> Float[Array, "*n"]:
        """μ = g⁻¹(η)."""

    @abc.abstractmethod
    def mu_eta(self, eta: Float[Array, "*n"]) -> Float[Array, "*n"]:
        """dμ/dη at η."""


class Logit(Link):
    """g(μ) = log(μ/(1 − μ)), binomial's default."""

    name: str = eqx.field(default="logit", static=True, init=False)

    def link(self, mu):
        return jnp.log(mu) - jnp.log1p(-mu)

    def inverse(self, eta):
        eps = _eps(eta)
        a = jnp.exp(-jnp.abs(eta))  # no overflow on either side (nor in its derivative)
        mu = jnp.where(eta >= 0, 1.0 / (1.0 + a), a / (1.0 + a))
        return jnp.where(eta < -_LOGIT_THRESH, eps, jnp.where(eta > _LOGIT_THRESH, 1.0 - eps, mu))

    def mu_eta(self, eta):
        a = jnp.exp(-jnp.abs(eta))  # symmetric in η; no overflow
        deriv = a / (1.0 + a) ** 2
        return jnp.where(jnp.abs(eta) > _LOGIT_THRESH, _eps(eta), deriv)


class Probit(Link):
    """g(μ) = Φ⁻¹(μ), the standard normal quantile."""

    name: str = eqx.field(default="probit", static=True, init=False)

    def link(self, mu):
        return jnp.sqrt(2.0) * erfinv(2.0 * mu - 1.0)

    def inverse(self, eta):
        # R clips η at ±qnorm(eps) so that μ stays in (eps, 1 − eps)
        thresh = -_normal_quantile(_eps(eta))
        return ndtr(jnp.clip(eta, -thresh, thresh))

    def mu_eta(self, eta):
        density = jnp.exp(-0.5 * eta * eta) / jnp.sqrt(2.0 * jnp.pi)
        return jnp.maximum(density, _eps(eta))


class CLogLog(Link):
    """g(μ) = log(−log(1 − μ)), the complementary log-log."""

    name: str = eqx.field(default="cloglog", static=True, init=False)

    def link(self, mu):
        return jnp.log(-jnp.log1p(-mu))

    def inverse(self, eta):
        eps = _eps(eta)
        return jnp.clip(-jnp.expm1(-jnp.exp(eta)), eps, 1.0 - eps)

    def mu_eta(self, eta):
        e = jnp.minimum(eta, _CLOGLOG_MAX_ETA)
        return jnp.maximum(jnp.exp(e) * jnp.exp(-jnp.exp(e)), _eps(eta))


class Log(Link):
    """g(μ) = log μ, Poisson's default."""

    name: str = eqx.field(default="log", static=True, init=False)

    def link(self, mu):
        return jnp.log(mu)

    def inverse(self, eta):
        return jnp.maximum(jnp.exp(eta), _eps(eta))

    def mu_eta(self, eta):
        return jnp.maximum(jnp.exp(eta), _eps(eta))


def _normal_quantile(p: float) -> float:
    """Φ⁻¹(p) for a Python float (host; the probit link's clipping bound)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(p)


_LINKS: dict[str, type[Link]] = {"logit": Logit, "probit": Probit, "cloglog": CLogLog, "log": Log}


def _make_link(link: str | Link, allowed: tuple[str, ...], family: str) -> Link:
    """The link named ``link`` (or given), checked against the family's ``allowed``."""
    if isinstance(link, Link):
        chosen = link
    elif isinstance(link, str) and link in _LINKS:
        chosen = _LINKS[link]()
    else:
        raise ValueError(f"unknown link {link!r} for the {family} family; choose one of {list(allowed)}")
    if chosen.name not in allowed:
        raise ValueError(f"the {family} family takes the links {list(allowed)}, not {chosen.name!r}")
    return chosen


class Family(eqx.Module):
    """A response distribution with its link (see the module docstring)."""

    link: Link
    name: str = eqx.field(static=True, init=False)
    # the canonical link's name ("": none known; newton_working's general formula is exact anyway)
    canonical: str = eqx.field(default="", static=True, init=False)

    @abc.abstractmethod
    def variance(self, mu: Float[Array, "*n"]) -> Float[Array, "*n"]:
        """V(μ): the variance of y at mean μ per unit prior weight."""

    @abc.abstractmethod
    def log_kernel(self, y, mu, weights) -> Float[Array, "*n"]:
        """The terms of each row's log-likelihood that depend on μ (y, μ and the prior
        weights of one shape (*n)): what PIRLS compares, without the constants."""

    @abc.abstractmethod
    def log_constant(self, y, weights) -> Float[Array, "*n"]:
        """The terms of each row's log-likelihood free of μ (log C(a, ay), −log y!)."""

    def log_likelihood(self, y, mu, weights) -> Float[Array, "*n"]:
        """Each row's log-likelihood at μ, with every constant: ``log_constant + log_kernel``."""
        return self.log_constant(y, weights) + self.log_kernel(y, mu, weights)

    def saturated_log_likelihood(self, y, weights) -> Float[Array, "*n"]:
        """Each row's log-likelihood at μ = y (the saturated model), shape of y."""
        return self.log_likelihood(y, y, weights)

    @abc.abstractmethod
    def check_response(self, y: np.ndarray, weights: np.ndarray) -> None:
        """Host-side: raises ValueError naming the problem when ``y`` (with its prior
        ``weights``) is not a response of this family."""

    def deviance_residuals(self, y, mu, weights) -> Float[Array, "*n"]:
        """Each row's squared deviance residual: 2(saturated − log-likelihood) ≥ 0 (the
        constants cancel)."""
        return 2.0 * (self.log_kernel(y, y, weights) - self.log_kernel(y, mu, weights))

    def working(self, y, eta, weights) -> tuple[Float[Array, "*n"], Float[Array, "*n"]]:
        """(working weights aᵢ(dμ/dη)²/V(μ), working response η + (y − μ)/(dμ/dη)) at η."""
        mu = self.link.inverse(eta)
        d = self.link.mu_eta(eta)
        return weights * d * d / self.variance(mu), eta + (y - mu) / d

    def newton_working(self, y, eta, weights) -> tuple[Float[Array, "*n"], Float[Array, "*n"]]:
        """(observed information hᵢ = −∂²ℓᵢ/∂ηᵢ², η + sᵢ/hᵢ with the score sᵢ = ∂ℓᵢ/∂ηᵢ) at η:
        the weighted least squares problem of a Newton step on the log-likelihood.

        With r(η) = (dμ/dη)/V(μ): sᵢ = aᵢ(yᵢ − μᵢ)r and hᵢ = wᵢ − aᵢ(yᵢ − μᵢ)r′(η), wᵢ the
        working weight. For the canonical link r = 1 and this is :meth:`working`. The
        families here are log-concave in η (h ≥ 0); a round-off h ≤ 0 falls back to w.
        """
        w, z = self.working(y, eta, weights)
        if self.link.name == self.canonical:
            return w, z
        mu = self.link.inverse(eta)

        def ratio(e):
            return self.link.mu_eta(e) / self.variance(self.link.inverse(e))

        r, dr = cast(tuple[Array, Array], jax.jvp(ratio, (eta,), (jnp.ones_like(eta),)))
        resid = weights * (y - mu)
        h = w - resid * dr
        # padded rows (prior weight 0) have w = h = 0: 1 keeps the division finite (their
        # residual is 0); a round-off h ≤ 0 elsewhere falls back to w
        h = cast(Array, jnp.where(h > 0, h, jnp.where(w > 0, w, 1.0)))
        return h, eta + resid * r / h


class Binomial(Family):
    """Binomial proportions y ∈ [0, 1] with trials as prior weights; links logit
    (default), probit, cloglog."""

    name: str = eqx.field(default="binomial", static=True, init=False)
    canonical: str = eqx.field(default="logit", static=True, init=False)

    def __init__(self, link: str | Link = "logit"):
        self.link = _make_link(link, ("logit", "probit", "cloglog"), "binomial")

    def variance(self, mu):
        return mu * (1.0 - mu)

    def log_kernel(self, y, mu, weights):
        k = weights * y
        return xlogy(k, mu) + xlogy(weights - k, 1.0 - mu)

    def log_constant(self, y, weights):
        k = weights * y  # log C(a, k)
        return gammaln(weights + 1.0) - gammaln(k + 1.0) - gammaln(weights - k + 1.0)

    def check_response(self, y, weights):
        y, weights = np.asarray(y, float), np.asarray(weights, float)
        if not np.all(np.isfinite(y)) or np.any((y < 0) | (y > 1)):
            bad = int(np.sum(~np.isfinite(y) | (y < 0) | (y > 1)))
            raise ValueError(
                f"a binomial response is a proportion in [0, 1] (or 0/1, or cbind(successes, failures)); "
                f"{bad} row(s) are outside it"
            )
        k = y * weights
        if np.any(weights != np.round(weights)):
            bad = int(np.sum(weights != np.round(weights)))
            raise ValueError(f"binomial weights are numbers of trials: {bad} row(s) are not whole numbers")
        off = ~np.isclose(k, np.round(k), rtol=0.0, atol=1e-7 * np.maximum(1.0, weights))
        if np.any(off):
            raise ValueError(
                f"binomial successes (proportion × weights, the trials) must be whole numbers; "
                f"{int(np.sum(off))} row(s) are not (first: {k[off][0]:g})"
            )


class Poisson(Family):
    """Counts y ≥ 0 (whole numbers); link log (the only one lme4's default
    poisson offers besides identity and sqrt, which are not supported)."""

    name: str = eqx.field(default="poisson", static=True, init=False)
    canonical: str = eqx.field(default="log", static=True, init=False)

    def __init__(self, link: str | Link = "log"):
        self.link = _make_link(link, ("log",), "poisson")

    def variance(self, mu):
        return mu

    def log_kernel(self, y, mu, weights):
        return weights * (xlogy(y, mu) - mu)

    def log_constant(self, y, weights):
        return -weights * gammaln(y + 1.0)

    def check_response(self, y, weights):
        y = np.asarray(y, float)
        if not np.all(np.isfinite(y)) or np.any(y < 0):
            bad = int(np.sum(~np.isfinite(y) | (y < 0)))
            raise ValueError(f"a Poisson response counts events: {bad} row(s) are negative or not finite")
        off = y != np.round(y)
        if np.any(off):
            raise ValueError(
                f"a Poisson response counts events: {int(np.sum(off))} row(s) are not whole numbers "
                f"(first: {y[off][0]:g})"
            )


def family_from_name(family: str | Family) -> Family:
    """A :class:`Family` from ``"binomial"`` or ``"poisson"`` (default links), or as given."""
    if isinstance(family, Family):
        return family
    named = {"binomial": Binomial, "poisson": Poisson}
    if not isinstance(family, str) or family not in named:
        raise ValueError(f"family must be 'binomial', 'poisson' or a Family instance, got {family!r}")
    return named[family]()
