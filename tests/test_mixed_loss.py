"""The losses of a network fixed part (``_mixed_loss``) against dense algebra and the core."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import dense_criterion

from jaxmixed import core
from jaxmixed.core._padding import bucket

N_GROUPS, Q = 12, 2


def _problem(seed=0, n_groups=N_GROUPS):
    """A random-slope design (uneven groups) and a small network."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 9, n_groups)
    codes = np.repeat(np.arange(n_groups), sizes)
    n = len(codes)
    x = rng.normal(size=(n, 3))
    z = np.column_stack([np.ones(n), x[:, 0]])
    b = rng.normal(size=(n_groups, Q)) * [1.0, 0.5]
    y = 1.0 + np.sin(x[:, 1]) + x[:, 2] + np.einsum("nq,nq->n", z, b[codes]) + 0.5 * rng.normal(size=n)
    structure = core.structure_for_terms([Q])
    net = eqx.nn.MLP(3, "scalar", 8, 1, activation=jax.nn.tanh, key=jax.random.key(seed))
    net = jax.tree.map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, net)
    phi = jnp.asarray(rng.normal(size=structure.n_params) * 0.3)
    return {"x": x, "y": y, "z": z, "codes": codes, "structure": structure, "net": net, "phi": phi}


def _neural_data(p, pad_to=None):
    n = len(p["y"])
    size = n if pad_to is None else pad_to

    def pad(a):
        return np.concatenate([a, np.zeros((size - n,) + a.shape[1:], a.dtype)])

    mask = np.arange(size) < n
    rows = core.model_data(
        mask.astype(float)[:, None], [pad(p["z"])], [pad(p["codes"])], [N_GROUPS], [p["structure"]]
    )
    design = core.design_statistics(rows, n)
    return core.NeuralData(jnp.asarray(pad(p["x"])), jnp.asarray(pad(p["y"])), jnp.asarray(mask), design)


def _dense(p, f, reml):
    lam = np.asarray(core.lambda_from_phi(p["phi"], p["structure"]))
    data = _neural_data(p)
    lam_user = np.asarray(data.design.scaling.z_scale[0])[:, None] * lam
    X = np.ones((len(p["y"]), 1))
    return dense_criterion(p["y"] - f, X, [p["codes"]], [p["z"]], [lam_user], reml)


@pytest.mark.parametrize("reml", [True, False])
def test_joint_loss_matches_dense_criterion_of_the_residual(reml):
    with jax.enable_x64(True):
        p = _problem()
        data = _neural_data(p)
        value = float(core.joint_loss(p["net"], p["phi"], data, reml))
        f = np.asarray(core.network_output(p["net"], jnp.asarray(p["x"])))
        expected = _dense(p, f, reml)
    assert value == pytest.approx(expected, rel=1e-10)


def test_padding_changes_nothing():
    """Rows of zeros (masked) and extra empty levels leave the loss and the fit unchanged."""
    with jax.enable_x64(True):
        p = _problem()
        n = len(p["y"])
        plain, padded = _neural_data(p), _neural_data(p, pad_to=bucket(n) + 16)
        for reml in (True, False):
            a = float(core.joint_loss(p["net"], p["phi"], plain, reml))
            b = float(core.joint_loss(p["net"], p["phi"], padded, reml))
            assert b == pytest.approx(a, rel=1e-12)
        size = len(padded.y)
        rows = core.model_data(
            np.asarray(padded.mask, float)[:, None],
            [np.asarray(padded.design.rows.Z[0]) / np.asarray(padded.design.scaling.z_scale[0])],
            [np.concatenate([p["codes"], np.zeros(size - n, int)])],
            [N_GROUPS + 5],  # five levels without rows
            [p["structure"]],
        )
        fit_pad = core.fit_data(rows, padded.y, n_obs=n)
        rows0 = core.model_data(np.ones((n, 1)), [p["z"]], [p["codes"]], [N_GROUPS], [p["structure"]])
        fit0 = core.fit_data(rows0, jnp.asarray(p["y"]))
    assert float(fit_pad.objective) == pytest.approx(float(fit0.objective), rel=1e-10)
    np.testing.assert_allclose(fit_pad.theta, fit0.theta, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(fit_pad.b[0][:N_GROUPS], fit0.b[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(fit_pad.b[0][N_GROUPS:]), 0.0)


def _group_args(p):
    data = _neural_data(p)
    layout = core.group_layout(p["codes"], N_GROUPS)
    args = (jnp.asarray(p["x"]), jnp.asarray(p["y"]), jnp.asarray(p["z"]), layout)
    return data, args, {"structure": p["structure"], "z_scale": data.design.scaling.z_scale[0]}


def test_group_loss_over_all_groups_is_the_ml_deviance():
    """At the profiled σ̂ and β̂₀, the summed group deviance is the core's ML criterion."""
    with jax.enable_x64(True):
        p = _problem()
        data, args, kw = _group_args(p)
        stats = core.joint_statistics(p["net"], data)
        at = core.fit_at(stats, p["phi"], core.FitOptions(reml=False))
        shifted = eqx.tree_at(lambda m: m.layers[-1].bias, p["net"], p["net"].layers[-1].bias + at.beta[0])
        groups = jnp.arange(N_GROUPS)
        value = core.group_loss(shifted, p["phi"], jnp.log(at.sigma), *args, groups, **kw)
        expected = core.joint_loss(p["net"], p["phi"], data, reml=False)
    assert float(value) == pytest.approx(float(expected), rel=1e-10)
    assert float(at.objective) == pytest.approx(float(expected), rel=1e-10)


def test_minibatch_gradient_averages_to_the_full_gradient():
    """One epoch of minibatches of groups (scaled by the number of batches): its
    mean gradient is the full-batch gradient, with the same parameters."""
    from jaxmixed.networks._joint import group_batches

    with jax.enable_x64(True):
        p = _problem()
        _, args, kw = _group_args(p)
        log_sigma = jnp.asarray(-0.3)
        batches = group_batches(N_GROUPS, 5, np.random.default_rng(3))  # 3 batches, the last padded
        n_batches = batches.shape[0]

        params, static = eqx.partition(p["net"], eqx.is_inexact_array)

        def grad(groups, scale):
            def loss(prm):
                net = eqx.combine(prm[0], static)
                return core.group_loss(net, prm[1], prm[2], *args, groups, scale=scale, **kw)

            return jax.grad(loss)((params, p["phi"], log_sigma))

        full = grad(jnp.arange(N_GROUPS), 1.0)
        parts = [grad(jnp.asarray(b), float(n_batches)) for b in batches]
        mean = jax.tree.map(lambda *g: sum(g) / n_batches, *parts)
    for a, b in zip(jax.tree.leaves(mean), jax.tree.leaves(full), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10 * float(np.max(np.abs(b)) + 1))


def test_joint_loss_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        p = _problem()
        data = _neural_data(p)
        params, static = eqx.partition(p["net"], eqx.is_inexact_array)

        def loss(w, phi):
            net = eqx.tree_at(lambda m: m.layers[0].weight, eqx.combine(params, static), w)
            return core.joint_loss(net, phi, data, True)

        w0 = p["net"].layers[0].weight
        g_w, g_phi = jax.jit(jax.grad(loss, argnums=(0, 1)))(w0, p["phi"])
        h = 1e-6
        e = jnp.zeros_like(w0).at[1, 2].set(h)
        fd_w = (loss(w0 + e, p["phi"]) - loss(w0 - e, p["phi"])) / (2 * h)
        d = jnp.zeros_like(p["phi"]).at[1].set(h)
        fd_phi = (loss(w0, p["phi"] + d) - loss(w0, p["phi"] - d)) / (2 * h)
    assert float(g_w[1, 2]) == pytest.approx(float(fd_w), rel=1e-5)
    assert float(g_phi[1]) == pytest.approx(float(fd_phi), rel=1e-5)


def test_joint_loss_jit_and_vmap_match_eager():
    with jax.enable_x64(True):
        p = _problem()
        data = _neural_data(p)
        phis = jnp.stack([p["phi"], p["phi"] + 0.1, p["phi"] - 0.2])
        eager = [float(core.joint_loss(p["net"], ph, data)) for ph in phis]
        jitted = eqx.filter_jit(core.joint_loss)(p["net"], phis[1], data)
        batched = jax.vmap(lambda ph: core.joint_loss(p["net"], ph, data))(phis)
    assert float(jitted) == pytest.approx(eager[1], rel=1e-12)
    np.testing.assert_allclose(batched, eager, rtol=1e-12)


def test_group_layout_lists_each_groups_rows():
    codes = np.asarray([2, 0, 2, 1, 0, 2])
    layout = core.group_layout(codes, 4)
    rows, mask = np.asarray(layout.rows), np.asarray(layout.mask)
    assert rows.shape == (4, 3)
    for level in range(4):
        assert sorted(rows[level][mask[level]]) == list(np.flatnonzero(codes == level))
