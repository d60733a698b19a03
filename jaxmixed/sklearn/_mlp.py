"""The network of the estimators: an equinox MLP built from their settings, and its pickling.

:func:`_mlp` builds the initial network of :class:`NNRegressor` and
:class:`MixedNNRegressor`; an equinox MLP holds lambdas, which do not pickle,
so the estimators pickle its arrays (:func:`_array_leaves`) and put them back
into a freshly built network (:func:`_with_leaves`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def _pickle_state(state: object) -> dict[str, Any]:
    """A copy of ``BaseEstimator.__getstate__``'s dict (``object.__getstate__`` gives ``__dict__`` itself)."""
    assert isinstance(state, dict), "BaseEstimator.__getstate__ gives a dict"
    return dict(state)


def _activation(activation) -> Callable:
    """A jax.nn function by name (``"relu"``, ``"tanh"``, ``"gelu"``, …) or the callable itself."""
    if callable(activation):
        return activation
    fn = getattr(jax.nn, activation, None) if isinstance(activation, str) else None
    if fn is None or not callable(fn) or activation.startswith("_"):
        raise ValueError(
            f"activation must be the name of a jax.nn function or a callable, got {activation!r}"
        )
    return fn


def _mlp(d: int, width: int, depth: int, activation, seed: int) -> eqx.nn.MLP:
    """The MLP (d,) → scalar, initialised in float32 from ``jax.random.key(seed)``.

    Both :class:`NNRegressor` and :class:`MixedNNRegressor` start from this
    network, cast to float64.
    """
    for name, value, low in (("width", width, 1), ("depth", depth, 0)):
        if not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return eqx.nn.MLP(
        d, "scalar", int(width), int(depth), activation=_activation(activation),
        key=jax.random.key(seed), dtype=jnp.float32,
    )  # fmt: skip


def _to64(tree):
    """``tree`` with its floating-point arrays in float64."""
    with jax.enable_x64(True):
        return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) if eqx.is_inexact_array(a) else a, tree)


def _array_leaves(tree: Any) -> list[np.ndarray]:
    """The arrays of a pytree as numpy (networks keep lambdas, which do not pickle)."""
    return [np.asarray(a) for a in jax.tree.leaves(eqx.filter(tree, eqx.is_array))]


def _with_leaves(skeleton, leaves: list[np.ndarray]):
    """``skeleton`` with its arrays replaced by ``leaves`` (float64)."""
    params, static = eqx.partition(skeleton, eqx.is_array)
    with jax.enable_x64(True):
        arrays = [jnp.asarray(a) for a in leaves]
        params = jax.tree.unflatten(jax.tree.structure(params), arrays)
    return eqx.combine(params, static)
