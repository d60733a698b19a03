"""Λ from the log-Cholesky parameters, and lme4's θ."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxmixed.core import lambda_from_phi, phi_from_theta, theta_from_phi
from jaxmixed.core._covariance import structure_for_terms


def test_correlated_term_is_column_major_lower_triangle():
    s = structure_for_terms([3])
    assert list(zip(s.rows, s.cols, strict=True)) == [(0, 0), (1, 0), (2, 0), (1, 1), (2, 1), (2, 2)]
    with jax.enable_x64(True):
        lam = np.asarray(lambda_from_phi(jnp.log(jnp.arange(1.0, 7.0)), s))
    assert np.allclose(np.diag(lam), [1.0, 4.0, 6.0])
    # Off-diagonal entries are the parameters themselves: here log 2, log 3, log 5.
    np.testing.assert_allclose([lam[1, 0], lam[2, 0], lam[2, 1]], np.log([2.0, 3.0, 5.0]), rtol=1e-15)
    assert lam[0, 1] == 0 and lam[0, 2] == 0 and lam[1, 2] == 0


def test_several_terms_make_a_block_diagonal_factor():
    s = structure_for_terms([1, 2])
    assert s.q == 3
    assert s.term_slices == ((0, 1), (1, 3))
    assert list(zip(s.rows, s.cols, strict=True)) == [(0, 0), (1, 1), (2, 1), (2, 2)]


def test_theta_roundtrip_and_zero_boundary():
    structures = [structure_for_terms([2]), structure_for_terms([1])]
    theta = np.array([0.9, -0.3, 0.2, 1.5])
    phi = phi_from_theta(theta, structures)
    np.testing.assert_allclose(theta_from_phi(phi, structures), theta, rtol=1e-15)
    boundary = phi_from_theta(np.array([0.0, 0.1, 0.2, 1.0]), structures)
    assert boundary[0] == -np.inf
    assert theta_from_phi(boundary, structures)[0] == 0.0
    with jax.enable_x64(True):
        lam = lambda_from_phi(jnp.asarray(boundary[:3]), structures[0])
    assert float(lam[0, 0]) == 0.0 and float(lam[1, 0]) == 0.1


def test_theta_from_phi_raises_no_overflow_warning():
    """Off-diagonal entries are not exponentiated, so large ones warn about nothing."""
    import warnings

    s = structure_for_terms([2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        theta = theta_from_phi(np.asarray([0.0, 800.0, -1.0]), [s])
    np.testing.assert_allclose(theta, [1.0, 800.0, np.exp(-1.0)])
