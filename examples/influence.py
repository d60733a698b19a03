"""Influence of each observation on the variance components, by differentiating the fit.

sleepstudy, ``Reaction ~ Days + (Days | Subject)`` by REML. The function
y ↦ (θ̂, σ̂) goes through the whole optimisation; ``jax.jacrev`` of it gives
∂θ̂/∂yᵢ and ∂σ̂/∂yᵢ for all 180 observations at once (implicit
differentiation at the optimum, reverse mode). The derivatives are checked
against refits with one yᵢ moved by ±h (central differences), and the
observations are ranked by how much (θ̂, σ̂) would move, to first order, if
yᵢ were replaced by its fitted value.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxmixed as jm
from jaxmixed import core

df = jm.load_dataset("sleepstudy")
design, arrays = jm.design.build_design("Reaction ~ Days + (Days | Subject)", df)
names = ["θ₁", "θ₂", "θ₃", "σ"]  # θ: Λ's entries (lme4's order, one factor); σ in ms

with jax.enable_x64(True):
    data = jm.design.prepare(design, arrays)
    design_stats = core.design_statistics(data)  # the design's part, computed once
    y = jnp.asarray(arrays.y)

    def fit_y(y: jax.Array) -> core.FitResult:
        return core.fit(core.ModelStatistics(design_stats, core.response_statistics(design_stats, y)))

    def components(y: jax.Array) -> jax.Array:
        res = fit_y(y)
        return jnp.concatenate([res.theta, res.sigma[None]])

    fit = eqx.filter_jit(fit_y)(y)
    value = np.asarray(components(y))
    jac = np.asarray(jax.jit(jax.jacrev(components))(y))  # (4, 180): ∂(θ̂, σ̂)/∂y
    print("estimates: " + ", ".join(f"{n} = {v:.6f}" for n, v in zip(names, value, strict=True)))
    print(f"Jacobian ∂(θ̂, σ̂)/∂y: shape {jac.shape}, singular fit: {bool(fit.singular)}\n")

    # Residuals y − Xβ̂ − Zb̂ (one grouping factor: Subject).
    b = np.asarray(fit.b[0])
    fitted = arrays.X @ np.asarray(fit.beta) + np.einsum("nq,nq->n", arrays.Z[0], b[arrays.codes[0]])
    resid = arrays.y - fitted

    # First-order change if yᵢ were replaced by its fitted value: −J[:, i]·rᵢ. θ is
    # already relative to σ (unitless); σ's change is taken relative to σ̂.
    change = -jac * resid[None, :]
    relative = change / np.array([1.0, 1.0, 1.0, value[3]])[:, None]
    score = np.sqrt(np.sum(relative**2, axis=0))
    top = np.argsort(score)[::-1][:5]

    # ---- Check: reverse-mode derivatives against central differences ------------------
    h = 0.5  # ms; y is in ms, residual SD ≈ 26 ms
    run = eqx.filter_jit(components)
    checked = [int(top[0]), 0, 100]
    print(f"∂/∂yᵢ by jax.jacrev and by central differences (refits at yᵢ ± {h} ms):")
    for i in checked:
        up = np.asarray(run(y.at[i].add(h)))
        down = np.asarray(run(y.at[i].add(-h)))
        fd = (up - down) / (2 * h)
        row = df.iloc[i]
        print(f"  row {i:3d} (Subject {row.Subject}, Days {row.Days}):")
        print("    jacrev  " + "  ".join(f"{n} {v:+.6e}" for n, v in zip(names, jac[:, i], strict=True)))
        print("    central " + "  ".join(f"{n} {v:+.6e}" for n, v in zip(names, fd, strict=True)))
        print(
            f"    largest difference relative to the largest entry: "
            f"{np.max(np.abs(fd - jac[:, i])) / np.max(np.abs(jac[:, i])):.1e}"
        )

    print("\nThe 5 most influential observations: first-order change of θ̂ and σ̂ (ms) if yᵢ")
    print("were replaced by its fitted value; score = ‖(Δθ, Δσ/σ̂)‖:")
    print(
        f"  {'row':>4} {'Subject':>7} {'Days':>4} {'Reaction':>9} {'resid':>8}   "
        + "  ".join(f"Δ{n:<8}" for n in names)
        + "   score"
    )
    for i in top:
        row = df.iloc[i]
        print(
            f"  {i:4d} {row.Subject:>7} {row.Days:4d} {row.Reaction:9.2f} {resid[i]:8.2f}   "
            + "  ".join(f"{c:+9.4f}" for c in change[:, i])
            + f"   {score[i]:.4f}"
        )

    # How far the linear prediction goes: refit with the most influential yᵢ replaced.
    i = int(top[0])
    refit = np.asarray(run(y.at[i].set(fitted[i])))
    print(
        f"\nrow {i} set to its fitted value and refitted: change "
        + "  ".join(f"{n} {v:+.4f}" for n, v in zip(names, refit - value, strict=True))
    )
    print(
        "  first-order prediction:                "
        + "  ".join(f"{n} {v:+.4f}" for n, v in zip(names, change[:, i], strict=True))
    )
