"""The pure layer, ``jaxmixed.core``: one design, many fits, and the criterion.

1. The design statistics of sleepstudy are built once; 100 noisy copies of
   the response are fitted in one ``jax.vmap`` call of ``core.fit`` (each
   copy needs only its own response statistics).
2. The REML criterion ``core.objective`` is profiled over one entry of φ
   (the log-Cholesky parameters of the standardised Λ̃), also in one call.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxmixed as jm
from jaxmixed import core

df = jm.load_dataset("sleepstudy")
formula = "Reaction ~ Days + (Days | Subject)"
design, arrays = jm.design.build_design(formula, df)  # host side: names and checks
options = jm.FitOptions()  # REML, the defaults of fit_reml

with jax.enable_x64(True):  # float64, as fit_reml uses internally
    data = jm.design.prepare(design, arrays)  # ModelData: rows and integer structure
    design_stats = core.design_statistics(data)  # built once for every response below
    y = jnp.asarray(arrays.y)

    def fit_response(ds: core.DesignStatistics, y: jax.Array) -> core.FitResult:
        stats = core.ModelStatistics(ds, core.response_statistics(ds, y))
        return core.fit(stats, options)

    # One fit, the same numbers as jm.fit_reml (θ here in computation order).
    fit = eqx.filter_jit(fit_response)(design_stats, y)
    print(
        f"REML criterion {float(fit.objective):.6f}, θ̂ {np.round(np.asarray(fit.theta), 6)}, "
        f"σ̂ {float(fit.sigma):.4f}, {jm.RESULTS[fit.result]}"
    )

    # ---- 1. 100 noisy responses over one design, in one vmapped fit -------------------
    rng = np.random.default_rng(0)
    noisy = y[None, :] + jnp.asarray(rng.normal(scale=25.0, size=(100, y.shape[0])))
    fit_many = eqx.filter_jit(jax.vmap(fit_response, in_axes=(None, 0)))
    fits = fit_many(design_stats, noisy)
    theta, sigma = np.asarray(fits.theta), np.asarray(fits.sigma)
    print(
        f"\n100 responses y + N(0, 25²): {int(np.sum(np.asarray(fits.converged)))} converged, "
        f"{int(np.sum(np.asarray(fits.singular)))} singular"
    )
    print(
        f"  σ̂: mean {sigma.mean():.2f} (sd {sigma.std():.2f}); "
        f"√(σ̂₀² + 25²) = {np.hypot(float(fit.sigma), 25.0):.2f}"
    )
    for k, name in enumerate(["θ₁ (intercept)", "θ₂ (slope, intercept)", "θ₃ (slope)"]):
        print(f"  {name:<22} mean {theta[:, k].mean():+.4f}  sd {theta[:, k].std():.4f}")
    sd_intercept = sigma * theta[:, 0]  # the SD of the random intercepts, in ms
    print(
        f"  SD of the random intercepts: mean {sd_intercept.mean():.2f} ms "
        f"(original fit {float(fit.sigma * fit.theta[0]):.2f} ms)"
    )

    # ---- 2. A profile of the criterion over one φ entry --------------------------------
    stats = core.model_statistics(data, y)  # design and response statistics together
    phi_hat = fit.phi  # φ̂: the optimum, standardised units
    value, grad = jax.jit(jax.value_and_grad(lambda p: core.objective(p, stats, True)))(phi_hat)
    print(
        f"\nat φ̂ = {np.round(np.asarray(phi_hat), 5)}: criterion {float(value):.6f}, "
        f"max |gradient| {float(jnp.max(jnp.abs(grad))):.1e}"
    )
    grid = phi_hat[0] + jnp.linspace(-1.5, 1.5, 7)  # log of the first diagonal entry of Λ̃
    phis = jnp.tile(phi_hat, (grid.shape[0], 1)).at[:, 0].set(grid)
    profile = jax.vmap(lambda p: core.objective(p, stats, True))(phis)
    print("profile over φ₁ (the other entries held at φ̂):")
    for g, v in zip(np.asarray(grid), np.asarray(profile), strict=True):
        print(f"  φ₁ = {g:+.3f}: {float(v):10.3f}   (+{float(v - value):.3f})")
