"""Hypothesis strategies: small random mixed-model designs."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

from jaxmixed import core
from jaxmixed.core import structure_for_terms
from jaxmixed.core._covariance import lambda_from_phi, split_params


@st.composite
def designs(draw, max_factors: int = 1, nested: bool | None = None, weighted: bool = False):
    """A random design: y, X, per factor (codes, Z), structures and φ.

    Factors may be crossed (independent codes) or nested (codes of factor k
    refine those of factor k−1); each has q = 1 or 2 effects (intercept, and
    a slope on a random covariate), correlated or not.
    """
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(12, 40))
    p = draw(st.integers(1, 3))
    n_factors = draw(st.integers(1, max_factors))
    is_nested = draw(st.booleans()) if nested is None else nested
    X = np.column_stack([np.ones(n)] + [rng.normal(size=n) for _ in range(p - 1)])
    codes, Zs, structures, phis = [], [], [], []
    previous = None
    for _ in range(n_factors):
        j = draw(st.integers(2, 5))
        if is_nested and previous is not None:
            c = previous * j + rng.integers(0, j, size=n)
        else:
            c = rng.integers(0, j, size=n)
        c = np.unique(c, return_inverse=True)[1].reshape(-1).astype(np.int32)  # only used levels
        if c.max() == 0:
            c[0] = 1
            c = np.unique(c, return_inverse=True)[1].reshape(-1).astype(np.int32)
        previous = c
        q = draw(st.integers(1, 2))
        z = np.column_stack([np.ones(n)] + [rng.normal(size=n) for _ in range(q - 1)])
        correlated = draw(st.booleans())
        if correlated:
            s = structure_for_terms([q])
        else:
            s = structure_for_terms([1] * q)
        codes.append(c)
        Zs.append(z)
        structures.append(s)
        phis.append(rng.normal(scale=0.7, size=s.n_params))
    y = X @ rng.normal(size=p) + rng.normal(size=n)
    for c, z in zip(codes, Zs, strict=True):
        b = rng.normal(size=(int(c.max()) + 1, z.shape[1]))
        y = y + np.einsum("nq,nq->n", z, b[c])
    weights = rng.uniform(0.3, 3.0, size=n) if weighted and draw(st.booleans()) else None
    return {
        "weights": weights,
        "y": y,
        "X": X,
        "codes": codes,
        "Z": Zs,
        "structures": structures,
        "n_levels": [int(c.max()) + 1 for c in codes],
        "phi": np.concatenate(phis),
    }


def data_of(design, dtype=jnp.float64):
    """The pure layer's ModelData of a drawn design (call inside enable_x64)."""
    return core.model_data(
        design["X"],
        design["Z"],
        design["codes"],
        design["n_levels"],
        design["structures"],
        weights=design.get("weights"),
        dtype=dtype,
    )


def statistics_of(design, y=None):
    """The statistics of a drawn design (call inside enable_x64)."""
    return _model_statistics(data_of(design), jnp.asarray(design["y"] if y is None else y))


_model_statistics = eqx.filter_jit(core.model_statistics)


def user_lambdas(phi, stats) -> list[np.ndarray]:
    """Each factor's Λ in the user's units from the standardised φ: Λ = S Λ̃."""
    out = []
    for p, s, scale in zip(
        split_params(phi, stats.structures), stats.structures, stats.design.scaling.z_scale, strict=True
    ):
        out.append(np.asarray(scale)[:, None] * np.asarray(lambda_from_phi(p, s)))
    return out
