"""The objective as a pure JAX function: jit, grad and vmap over it.

A profile of the REML criterion over a grid of one variance parameter, and
the criterion for many simulated responses over one design in one call.
"""

import jax
import jax.numpy as jnp
import numpy as np

import jaxmixed as jm

df = jm.load_dataset("sleepstudy")
formula = "Reaction ~ Days + (Days | Subject)"
fit = jm.fit_reml(formula, data=df)
design, arrays = jm.build_design(formula, df)

with jax.enable_x64(True):  # float64, as the library uses internally
    stats = jm.model_statistics(design, arrays)
    phi_hat = jnp.asarray(fit.optimizer_params)

    # The criterion and its gradient at the optimum (the gradient is ~0).
    value, grad = jax.jit(jax.value_and_grad(lambda p: jm.objective(p, stats, True)))(phi_hat)
    print(f"REML criterion {float(value):.6f}, gradient {np.asarray(grad)}")

    # Profile along the log of the first diagonal entry of Λ: one vmapped call.
    grid = jnp.linspace(-1.0, 0.8, 7)
    phis = jnp.tile(phi_hat, (len(grid), 1)).at[:, 0].set(grid)
    profile = jax.vmap(lambda p: jm.objective(p, stats, True))(phis)
    for g, v in zip(np.asarray(grid), np.asarray(profile), strict=True):
        print(f"  log θ₁ = {g:+.2f}: {float(v):.3f}")

    # Many responses over one design: only Zᵀy, Xᵀy, yᵀy change.
    rng = np.random.default_rng(0)
    responses = arrays.y[None, :] + rng.normal(scale=25.0, size=(100, len(arrays.y)))
    per_response = [
        jm.compute_statistics(y, arrays.X, arrays.codes, arrays.Z, design.structures, [18]) for y in responses
    ]
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *per_response)
    values = jax.vmap(lambda s: jm.objective(phi_hat, s, True))(stacked)
    print(f"criterion at θ̂ for 100 noisy responses: mean {float(values.mean()):.1f}")
