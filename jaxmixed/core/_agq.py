"""Adaptive Gauss–Hermite quadrature of a GLMM's likelihood: one scalar random effect.

With a single grouping factor and one random effect per level (``(1 | g)``),
the levels are independent given (θ, β) and the marginal likelihood is a
product of one-dimensional integrals

    L_j = ∫ Π_{i∈j} f(yᵢ | ηᵢ = η⁰ᵢ + θu) φ(u) du,    η⁰ = offset + Xβ.

Each is centred at its conditional mode ũⱼ (from PIRLS, ``_laplace``) and
scaled by sⱼ = Aⱼ^(−1/2), Aⱼ = 1 + θ² Σ_{i∈j} wᵢzᵢ² the level's block of the
PIRLS matrix at the mode (wᵢ the working weights): with the K Gauss–Hermite
nodes xₖ and weights ωₖ (∫ e^(−x²) h(x) dx ≈ Σ ωₖ h(xₖ)),

    L_j ≈ √2 sⱼ Σₖ ωₖ e^(xₖ²) Π_{i∈j} f(yᵢ | ũⱼ + √2 sⱼ xₖ) φ(ũⱼ + √2 sⱼ xₖ).

With K = 1 (node 0, weight √π) this is the Laplace approximation exactly.
(zᵢ the random effect's column of Z). The deviance is −2 Σⱼ log Lⱼ with every
constant of the density; lme4 1.1-31's nAGQ > 1 deviance leaves out the
saturated model's log-likelihood (its ``logLik`` is this one's minus
Σ log f(yᵢ | μᵢ = yᵢ)); see the README of ``tests/data``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._family import Family
from ._laplace import LaplaceDeviance, laplace_deviance
from ._precision import highest_precision
from ._statistics import ModelData

__all__ = ["MAX_NODES", "agq_deviance", "check_agq", "check_nagq"]

MAX_NODES = 25  # lme4's limit


def check_nagq(n_nodes: object) -> None:
    """Raises ValueError unless ``n_nodes`` is an integer from 1 to 25 (2.7 and True are
    errors, not 2 and 1); nAGQ = 0 is named."""
    if not isinstance(n_nodes, bool) and n_nodes == 0:
        raise ValueError("nAGQ = 0 (lme4's fast first stage alone) is not supported: use nAGQ = 1 (Laplace) to 25")
    if isinstance(n_nodes, bool) or not isinstance(n_nodes, int | np.integer) or not 1 <= n_nodes <= MAX_NODES:
        raise ValueError(f"nAGQ must be an integer from 1 to {MAX_NODES}, got {n_nodes!r}")


def check_agq(data: ModelData, n_nodes: int) -> None:
    """Raises ValueError unless ``n_nodes`` is 1–25 (:func:`check_nagq`) and, above 1, the
    model has one grouping factor with one random effect per level (as lme4 requires)."""
    check_nagq(n_nodes)
    if n_nodes > 1 and (len(data.structures) != 1 or data.structures[0].q != 1):
        raise ValueError(
            "nAGQ > 1 needs a single grouping factor with one random effect per level, such as "
            "(1 | g) (as lme4); use nAGQ = 1 (Laplace) for this model"
        )


@highest_precision
def agq_deviance(
    theta: Float[Array, " 1"],
    beta: Float[Array, " p"],
    data: ModelData,
    y: Float[Array, " n"],
    family: Family,
    n_nodes: int,
    *,
    offset: Float[Array, " n"] | None = None,
    n_obs: jax.Array | int | None = None,
    newton_steps: int = 2,
    u_start: tuple[Float[Array, "J q"], ...] | None = None,
) -> tuple[Float[Array, ""], LaplaceDeviance]:
    """(−2 log L by ``n_nodes``-point adaptive quadrature, the Laplace result whose modes
    centre it); ``n_nodes`` = 1 returns the Laplace deviance. See the module docstring.
    Derivatives as :func:`~jaxmixed.core._laplace.laplace_deviance`'s (``newton_steps``):
    the quadrature depends on (θ, β) directly and through the modes. ``u_start``: PIRLS's
    warm start (``laplace_deviance``)."""
    lap = laplace_deviance(
        theta, beta, data, y, family, offset=offset, n_obs=n_obs, newton_steps=newton_steps, u_start=u_start
    )
    if n_nodes == 1:
        return lap.deviance, lap
    x = jnp.asarray(data.X)
    eta0 = x @ beta + (0.0 if offset is None else offset)
    codes = jnp.asarray(data.index.codes)
    n_levels = data.index.n_levels
    z = jnp.asarray(data.Z[0])[:, 0]
    mode = lap.u[0][:, 0]  # (J,)
    weights, _ = family.working(y, lap.eta, data.weights)
    a = 1.0 + jax.ops.segment_sum(weights * (theta[0] * z) ** 2, codes, n_levels)
    scale = jnp.sqrt(2.0 / a)  # √2 sⱼ
    nodes, omegas = (jnp.asarray(v, x.dtype) for v in np.polynomial.hermite.hermgauss(n_nodes))
    u = mode[:, None] + scale[:, None] * nodes[None, :]  # (J, K)
    eta = eta0[:, None] + theta[0] * z[:, None] * u[codes]  # (n, K)
    # the constants of the log-likelihood once per row, not once per node
    real = data.weights > 0
    kernel = family.log_kernel(y[:, None], family.link.inverse(eta), data.weights[:, None])
    ll = jnp.where(real[:, None], kernel, 0.0) + jnp.where(real, family.log_constant(y, data.weights), 0.0)[:, None]
    log_g = jax.ops.segment_sum(ll, codes, n_levels) - 0.5 * u * u - 0.5 * jnp.log(2.0 * jnp.pi)
    terms = log_g + nodes[None, :] ** 2 + jnp.log(omegas)[None, :]
    log_lj = jnp.log(scale) + jax.scipy.special.logsumexp(terms, axis=1)
    return -2.0 * jnp.sum(log_lj), lap
