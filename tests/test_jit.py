"""Jitted and eager evaluations agree."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from strategies import designs, statistics_of

import jaxmixed as jm


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(designs(max_factors=2))
def test_jit_equals_eager(design):
    with jax.enable_x64(True):
        stats = statistics_of(design)
        phi = jnp.asarray(design["phi"])
        for reml in (True, False):
            eager = float(jm.objective(phi, stats, reml))
            jitted = float(eqx.filter_jit(jm.objective)(phi, stats, reml))
            assert jitted == np.float64(eager) or abs(jitted - eager) <= 1e-12 * abs(eager)
        sol_eager = jm.solve_mixed_model(phi, stats, True)
        sol_jit = eqx.filter_jit(jm.solve_mixed_model)(phi, stats, True)
        for a, b in zip(
            jax.tree_util.tree_leaves(sol_eager), jax.tree_util.tree_leaves(sol_jit), strict=True
        ):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)


def test_fit_statistics_is_one_compiled_call_reused_across_data():
    """A second dataset with the same shapes reuses the compiled fit."""
    df = jm.load_dataset("sleepstudy")
    formula = "Reaction ~ Days + (Days | Subject)"
    design, arrays = jm.build_design(formula, df)
    with jax.enable_x64(True):
        stats = jm.model_statistics(design, arrays)
        phi0 = jnp.zeros(stats.n_params)
        first = jm.fit_statistics(stats, phi0, True)
        compiled = jm.fit_statistics._cached._cache_size()
        shifted = jm.compute_statistics(
            arrays.y * 2.0,
            arrays.X,
            arrays.codes,
            arrays.Z,
            design.structures,
            [f.n_levels for f in design.factors],
        )
        second = jm.fit_statistics(shifted, phi0, True)
        assert jm.fit_statistics._cached._cache_size() == compiled
    # Scaling y scales σ but leaves θ (relative to σ) unchanged.
    np.testing.assert_allclose(np.asarray(first.params), np.asarray(second.params), rtol=1e-5, atol=1e-6)
