"""The custom reverse rules of logdet_and_quadratic and pair_sum against plain autodiff."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import jaxmixed.core._linalg as linalg
from jaxmixed.core._linalg import (
    PairSum,
    batched_cholesky,
    batched_solve_lower,
    inverse_from_chol,
    logdet_and_quadratic,
    pair_sum,
)


def _plain(s, t):
    chol = jnp.linalg.cholesky(s)
    r = jax.scipy.linalg.solve_triangular(chol, t, lower=True)
    return 2 * jnp.sum(jnp.log(jnp.diag(chol))), r.T @ r


def test_values_and_gradients_match_autodiff_through_cholesky():
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        a = rng.normal(size=(7, 7))
        s = jnp.asarray(a @ a.T + 7 * np.eye(7))
        t = jnp.asarray(rng.normal(size=(7, 3)))
        w = jnp.asarray(rng.normal(size=(3, 3)))

        def loss(f, s, t):
            ld, quad = f(s, t)
            return 1.3 * ld + jnp.sum(w * quad)

        for fa, fb in zip(_plain(s, t), logdet_and_quadratic(s, t), strict=True):
            np.testing.assert_allclose(np.asarray(fa), np.asarray(fb), rtol=1e-12)
        # Symmetric perturbations: S enters the objective as a symmetric matrix.
        g_plain = jax.grad(lambda s, t: loss(_plain, 0.5 * (s + s.T), t), argnums=(0, 1))(s, t)
        g_custom = jax.grad(lambda s, t: loss(logdet_and_quadratic, 0.5 * (s + s.T), t), argnums=(0, 1))(s, t)
        for a_, b_ in zip(g_plain, g_custom, strict=True):
            np.testing.assert_allclose(np.asarray(a_), np.asarray(b_), rtol=1e-9, atol=1e-12)


def test_only_the_lower_triangle_is_read_and_gets_a_cotangent():
    rng = np.random.default_rng(4)
    with jax.enable_x64(True):
        a = rng.normal(size=(6, 6))
        s = jnp.asarray(a @ a.T + 6 * np.eye(6))
        t = jnp.asarray(rng.normal(size=(6, 2)))
        junk = s + jnp.triu(jnp.asarray(rng.normal(size=(6, 6))), 1)
        for fa, fb in zip(logdet_and_quadratic(s, t), logdet_and_quadratic(junk, t), strict=True):
            np.testing.assert_array_equal(np.asarray(fa), np.asarray(fb))
        g = jax.grad(lambda s: logdet_and_quadratic(s, t)[0] + jnp.sum(logdet_and_quadratic(s, t)[1]))(junk)
        assert np.all(np.asarray(jnp.triu(g, 1)) == 0.0)
        # Against autodiff through the Cholesky factor of the lower triangle mirrored.
        low = jnp.tril(junk)
        g_plain = jax.grad(lambda low: sum(jnp.sum(x) for x in _plain(low + jnp.tril(low, -1).T, t)))(low)
        np.testing.assert_allclose(
            np.asarray(jnp.tril(g)), np.asarray(jnp.tril(g_plain)), rtol=1e-10, atol=1e-12
        )


def test_second_derivatives_match_autodiff_through_cholesky():
    rng = np.random.default_rng(6)
    with jax.enable_x64(True):
        a = rng.normal(size=(5, 5))
        base = jnp.asarray(a @ a.T + 5 * np.eye(5))
        dirs = jnp.asarray(rng.normal(size=(2, 5, 5)))
        dirs = dirs + dirs.transpose(0, 2, 1)
        t0 = jnp.asarray(rng.normal(size=(5, 2)))

        junk = jnp.triu(jnp.asarray(rng.normal(size=(5, 5))), 1)

        def loss(f, x, upper):
            # The upper triangle moves with x too: only the lower one may count.
            s = base + 0.1 * jnp.tensordot(x, dirs, 1) + upper * x[1] * junk
            ld, quad = f(s, t0 * (1.0 + x[0]))
            return 0.7 * ld + jnp.sum(quad)

        x = jnp.asarray([0.2, -0.3])
        h_plain = jax.jacrev(jax.grad(lambda x: loss(_plain, x, 0.0)))(x)
        h_custom = jax.jacrev(jax.grad(lambda x: loss(logdet_and_quadratic, x, 1.0)))(x)
        np.testing.assert_allclose(np.asarray(h_custom), np.asarray(h_plain), rtol=1e-9, atol=1e-12)


def test_blocked_inverse_matches_a_dense_inverse(monkeypatch):
    # Small recursion threshold: odd and even splits over several levels.
    monkeypatch.setattr(linalg, "_INVERSE_BLOCK", 3)
    rng = np.random.default_rng(8)
    with jax.enable_x64(True):
        for m in (1, 4, 7, 13):
            a = rng.normal(size=(m, m))
            s = a @ a.T + m * np.eye(m)
            inv = inverse_from_chol(jnp.linalg.cholesky(jnp.asarray(s)))
            np.testing.assert_allclose(np.asarray(inv), np.linalg.inv(s), rtol=1e-11, atol=1e-13)


def test_scalar_blocks_take_the_elementwise_path():
    with jax.enable_x64(True):
        a = jnp.asarray([[[4.0]], [[9.0]]])
        chol = batched_cholesky(a)
        np.testing.assert_allclose(np.asarray(chol).ravel(), [2.0, 3.0])
        x = batched_solve_lower(chol, jnp.asarray([[[2.0, 4.0]], [[3.0, 9.0]]]))
        np.testing.assert_allclose(np.asarray(x), [[[1.0, 2.0]], [[1.0, 3.0]]])


def test_pair_sum_and_its_reverse_rule_match_a_dense_scatter():
    rng = np.random.default_rng(5)
    n_pairs, n_levels, k, size = 40, 6, 4, 9
    target = np.sort(rng.integers(0, size, n_pairs))
    level = rng.integers(0, n_levels, n_pairs)
    products = rng.normal(size=(n_pairs, k))
    order = np.argsort(level, kind="stable")
    with jax.enable_x64(True):
        pairs = PairSum(
            jnp.asarray(target),
            jnp.asarray(level),
            jnp.asarray(products),
            jnp.asarray(level[order]),
            jnp.asarray(target[order]),
            jnp.asarray(products[order]),
        )
        w = jnp.asarray(rng.normal(size=(n_levels, k)))
        cot = jnp.asarray(rng.normal(size=size))

        def dense(w):
            return jnp.zeros(size).at[target].add(jnp.sum(products * w[level], axis=1))

        np.testing.assert_allclose(np.asarray(pair_sum(w, pairs, size)), np.asarray(dense(w)), rtol=1e-12)
        g_custom = jax.grad(lambda w: jnp.vdot(cot, pair_sum(w, pairs, size)))(w)
        g_dense = jax.grad(lambda w: jnp.vdot(cot, dense(w)))(w)
        np.testing.assert_allclose(np.asarray(g_custom), np.asarray(g_dense), rtol=1e-12)


def test_lower_as_symmetric_gives_exact_second_derivatives_whatever_the_upper_triangle_holds():
    """A lower triangle built from t with an upper triangle that moves with t too: the
    Cholesky factor's second derivative (forward over reverse, as jax.hessian) is the
    symmetric matrix's, also through the rule's own primal output."""
    rng = np.random.default_rng(5)
    with jax.enable_x64(True):
        a = rng.normal(size=(5, 5))
        base = jnp.asarray(a @ a.T + 5 * np.eye(5))
        d = jnp.asarray(rng.normal(size=(5, 5)))
        junk = jnp.asarray(rng.normal(size=(5, 5)))
        weights = jnp.asarray(rng.normal(size=(5, 5)))

        def through_rule(t):
            s = jnp.tril(base + t * (d + d.T) + t**2 * jnp.eye(5)) + jnp.triu(junk * jnp.exp(t), 1)
            chol = jnp.linalg.cholesky(linalg.lower_as_symmetric(s), symmetrize_input=False)
            return jnp.sum(weights * chol)

        def symmetric(t):
            return jnp.sum(weights * jnp.linalg.cholesky(base + t * (d + d.T) + t**2 * jnp.eye(5)))

        ours = jax.jit(jax.hessian(through_rule))(0.3)
        plain = jax.jit(jax.hessian(symmetric))(0.3)
    np.testing.assert_allclose(float(ours), float(plain), rtol=1e-10)
