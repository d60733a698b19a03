"""The objective and its gradient vmap over a batch of parameters and responses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import jaxmixed as jm


def _stats(y=None):
    df = jm.load_dataset("sleepstudy")
    design, arrays = jm.build_design("Reaction ~ Days + (Days | Subject)", df)
    return jm.compute_statistics(
        arrays.y if y is None else y,
        arrays.X,
        arrays.codes,
        arrays.Z,
        design.structures,
        [f.n_levels for f in design.factors],
    ), arrays


def test_objective_vmaps_over_theta():
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        stats, _ = _stats()
        phis = jnp.asarray(rng.normal(scale=0.5, size=(16, stats.n_params)))
        batched = jax.vmap(lambda p: jm.objective(p, stats, True))(phis)
        looped = jnp.stack([jm.objective(p, stats, True) for p in phis])
        np.testing.assert_allclose(np.asarray(batched), np.asarray(looped), rtol=1e-12)
        grads = jax.vmap(jax.grad(lambda p: jm.objective(p, stats, False)))(phis)
        looped_g = jnp.stack([jax.grad(lambda p: jm.objective(p, stats, False))(p) for p in phis])
        np.testing.assert_allclose(np.asarray(grads), np.asarray(looped_g), rtol=1e-10, atol=1e-10)


def test_objective_vmaps_over_responses():
    """Many responses over one design: only the y-dependent statistics change."""
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        stats, arrays = _stats()
        ys = arrays.y[None, :] + rng.normal(scale=20.0, size=(5, len(arrays.y)))
        per_y = [_stats(y)[0] for y in ys]
        stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *per_y)
        phi = jnp.asarray([0.1, 0.02, -1.3])
        batched = jax.vmap(lambda s: jm.objective(phi, s, True))(stacked)
        looped = jnp.stack([jm.objective(phi, s, True) for s in per_y])
        np.testing.assert_allclose(np.asarray(batched), np.asarray(looped), rtol=1e-12)
