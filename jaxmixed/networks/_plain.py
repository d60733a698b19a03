"""The fixed part alone, trained on the mean squared error.

Two fixed parts with one interface: :class:`NetworkFixed` (Adam on the MSE,
warm-started from call to call) and :class:`EstimatorFixed` (any regressor
with ``fit``/``predict``, refitted). EM trains either on ``y − Zb̂`` each
round (``_em``); :func:`train_plain` trains a network alone with early
stopping (``sklearn.NNRegressor``: the fixed part without random effects).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from ..core._mixed_loss import jit_network_output, network_output
from ..core._precision import highest_precision
from ._data import TrainingSet, masked_mse
from ._loop import Check, Schedule, Trained, run_training
from ._options import TrainOptions, optimizer_step

__all__ = ["EstimatorFixed", "NetworkFixed", "train_plain"]


@eqx.filter_jit
@highest_precision
def _plain_mse(model: Callable, data: TrainingSet) -> Float[Array, ""]:
    """MSE of ``f(x)`` alone on ``data``."""
    return masked_mse(data, network_output(model, data.x))


@eqx.filter_jit
@highest_precision
def _mse_chunk(
    model: Callable, state: optax.OptState, data: TrainingSet, target: Float[Array, " n"], options: TrainOptions,
    n_steps: int,
):  # fmt: skip
    """``n_steps`` full-batch Adam steps on the mean of ``(target − f(x))²`` (target (n,)) over
    the real rows of ``data``; returns the network, the optimiser state and the losses (n_steps,)."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt = options.network_optimizer()

    def loss_fn(p):
        return masked_mse(data, network_output(eqx.combine(p, static), data.x), target)

    def step(carry, _):
        p, s = carry
        loss, g = jax.value_and_grad(loss_fn)(p)
        p, s = optimizer_step(opt, g, s, p)
        return (p, s), loss

    (params, state), losses = jax.lax.scan(step, (params, state), None, length=n_steps)
    return eqx.combine(params, static), state, losses


def _last_layer(model: Any) -> Callable[[Any], eqx.nn.Linear]:
    """Where a network's output layer is: the model itself (an ``eqx.nn.Linear``) or an
    ``eqx.nn.MLP``'s last layer."""
    return (lambda m: m) if isinstance(model, eqx.nn.Linear) else (lambda m: m.layers[-1])


def _last_linear(model: Any) -> eqx.nn.Linear | None:
    """The network's output layer when it is one linear map to a scalar (an
    ``eqx.nn.Linear``, or an ``eqx.nn.MLP``'s last layer), else None."""
    if isinstance(model, eqx.nn.Linear):
        layer = model
    elif isinstance(model, eqx.nn.MLP) and isinstance(model.layers[-1], eqx.nn.Linear):
        layer = model.layers[-1]
    else:
        return None
    return layer if layer.weight.shape[0] == 1 else None


def _with_last(model: Any, weight: jax.Array, bias: jax.Array | None) -> Any:
    """``model`` with its output layer's weight (and bias) replaced."""
    where = _last_layer(model)
    if bias is None:
        return eqx.tree_at(lambda m: where(m).weight, model, weight)
    return eqx.tree_at(lambda m: (where(m).weight, where(m).bias), model, (weight, bias))


@eqx.filter_jit
@highest_precision
def _solve_last_layer(model: Any, data: TrainingSet, target: Float[Array, " n"]):
    """The network with its output layer (:func:`_last_linear`) at the least-squares fit
    of ``target`` (n,) on the real rows, and (the old MSE, the new MSE). The hidden features are the gradient of
    the output with respect to the layer's weight (the output is ``w·h(x) + b`` when the
    final activation is the identity; otherwise the new MSE is not lower and the caller
    keeps the old layer)."""
    layer = _last_layer(model)(model)
    bias = layer.bias

    def output(w, x):
        return jnp.sum(_with_last(model, w, bias)(x))

    h = jax.vmap(jax.grad(output), in_axes=(None, 0))(layer.weight, data.x).reshape(data.x.shape[0], -1)
    mask = data.mask.astype(h.dtype)
    cols = h if bias is None else jnp.concatenate([h, jnp.ones_like(h[:, :1])], axis=1)
    coef = jnp.linalg.lstsq(cols * mask[:, None], target * mask)[0]
    d = h.shape[1]
    dtype = layer.weight.dtype
    new = _with_last(model, coef[:d][None, :].astype(dtype), None if bias is None else coef[d:].astype(dtype))
    before = masked_mse(data, network_output(model, data.x), target)
    return new, before, masked_mse(data, network_output(new, data.x), target)


class NetworkFixed:
    """A network fixed part: Adam on the mean squared error, warm-started from round to round.

    One of the two fixed parts of EM (the other is :class:`EstimatorFixed`,
    with the same interface), and the whole model in :func:`train_plain`.
    """

    limit = "max_rounds or max_epochs"  # the settings that bound its EM rounds

    def __init__(self, model: Callable, options: TrainOptions):
        self.model, self.options = model, options
        self.state = options.network_optimizer().init(eqx.filter(model, eqx.is_inexact_array))
        self.epochs_per_round = options.epochs_per_round

    def rounds(self) -> int:
        """The limit on EM rounds: ``max_rounds``, and ``max_epochs`` in rounds."""
        return min(self.options.max_rounds, -(-self.options.max_epochs // self.epochs_per_round))

    def steps(self, data: TrainingSet, target: Float[Array, " n"], k: int) -> float:
        """``k`` epochs on ``target`` (n,); returns the last epoch's loss."""
        self.model, self.state, losses = _mse_chunk(self.model, self.state, data, target, self.options, k)
        return float(losses[-1])

    def train(self, data: TrainingSet, target: Float[Array, " n"]) -> float:
        """One EM round on ``target`` (n,): ``epochs_per_round`` epochs, then the output
        layer's least-squares solve (``TrainOptions.solve_last_layer``) when it lowers
        the MSE; returns the round's MSE."""
        loss = self.steps(data, target, self.epochs_per_round)
        if self.options.solve_last_layer and _last_linear(self.model) is not None:
            solved, before, after = _solve_last_layer(self.model, data, target)
            if float(after) < float(before):
                self.model, loss = solved, float(after)
        return loss

    def predict(self, data: TrainingSet) -> Float[Array, " n"]:
        """f(x) (n,) on the real rows, 0 on padding."""
        return jnp.where(data.mask, jit_network_output(self.model, data.x), 0.0)

    def snapshot(self) -> Callable:
        return self.model  # an immutable pytree: training replaces it, never changes it


class EstimatorFixed:
    """Any regressor with ``fit(X, y)`` and ``predict(X)`` as EM's fixed part, refitted each round."""

    limit = "max_rounds"
    epochs_per_round = 1  # one refit counts as one epoch

    def __init__(self, model: Any, options: TrainOptions):
        self.model, self.options = model, options

    def rounds(self) -> int:
        return self.options.max_rounds

    def train(self, data: TrainingSet, target: Float[Array, " n"]) -> float:
        """Refits on ``target`` (n,) over the real rows; returns the training MSE."""
        real = np.asarray(data.mask)
        self.model.fit(np.asarray(data.x)[real], np.asarray(target)[real])
        err = np.asarray(target - self.predict(data))[real]
        return float(np.mean(err**2))

    def predict(self, data: TrainingSet) -> Float[Array, " n"]:
        """f(x) (n,) on the real rows, 0 on padding."""
        real = np.asarray(data.mask)
        out = np.asarray(self.model.predict(np.asarray(data.x)[real]), dtype=float)
        if out.shape != (int(real.sum()),):
            raise ValueError(
                f"the estimator's predict returned shape {out.shape}; expected ({int(real.sum())},)"
            )
        full = np.zeros(real.shape)
        full[real] = out
        return jnp.asarray(full, data.y.dtype)

    def snapshot(self) -> Any:
        return copy.deepcopy(self.model)  # refitting changes the estimator in place


def train_plain(
    model: Callable,
    train: TrainingSet,
    valid: TrainingSet | None,
    options: TrainOptions,
    *,
    verbose: bool = False,
) -> Trained:
    """The network alone by Adam on the mean squared error, with early stopping.

    ``train`` and ``valid`` (see ``_data.plain_rows``) need no random part;
    ``options``: ``learning_rate`` (or ``optimizer``), ``max_epochs``,
    ``patience``, ``eval_every``. A run whose loss becomes non-finite keeps
    the best earlier network (the initial one at worst) with ``result``
    ``nonfinite``. ``theta`` of the result is None.
    """
    fixed = NetworkFixed(model, options)

    def advance(k: int, epoch: int) -> Check:
        loss = fixed.steps(train, train.y, k)
        record = {"epoch": epoch, "train_mse": loss}
        if valid is not None:
            record["valid_mse"] = float(_plain_mse(fixed.model, valid))
        return Check(record, loss, record.get("valid_mse"), fixed.model)

    schedule = Schedule(options.max_epochs, options.eval_every, options.patience, shown="train_mse")
    return run_training(advance, schedule, held_out=valid is not None, verbose=verbose, initial=model)
