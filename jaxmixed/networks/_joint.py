"""Joint training: the network and the variance parameters φ trained together.

:func:`train_joint` runs optax on ``_mixed_loss.joint_loss`` (full batch: lme4's
criterion of ``y − f(x)`` with β₀ and σ profiled) or on ``group_loss``
(minibatches of whole groups of one grouping factor; σ is then a parameter
too). Every ``eval_every`` epochs the core's solution at φ gives θ and the
held-out MSE for :func:`~._loop.run_training`'s early stopping.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int

from ..core._fit import FitResult, fit_at
from ..core._mixed_loss import (
    GroupLayout,
    NeuralData,
    group_loss,
    joint_loss,
    joint_statistics,
    network_output,
)
from ..core._options import FitOptions
from ..core._precision import highest_precision
from ._data import TrainingSet, masked_mse, random_part
from ._loop import Check, Schedule, Trained, run_training
from ._options import TrainOptions, optimizer_step

__all__ = ["group_batches", "train_joint"]

# The optimiser states of the network and of φ (with log σ when it is trained).
_States = tuple[optax.OptState, optax.OptState]


def _mse(model: Callable, fit: FitResult, data: TrainingSet) -> Float[Array, ""]:
    """MSE of ``f(x) + β₀ + Zb̂`` on ``data``."""
    return masked_mse(data, network_output(model, data.x) + fit.beta[0] + random_part(fit, data))


@eqx.filter_jit
@highest_precision
def _joint_chunk(
    model: Callable, phi: Float[Array, " n_params"], states: _States, data: NeuralData, options: TrainOptions,
    n_steps: int,
):  # fmt: skip
    """``n_steps`` full-batch Adam steps on the joint loss; returns the losses (n_steps,)."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt_net, opt_phi = options.network_optimizer(), optax.adam(options.phi_learning_rate)

    def loss_fn(p, ph):
        return joint_loss(eqx.combine(p, static), ph, data, options.reml)

    def step(carry, _):
        p, ph, s_net, s_phi = carry
        loss, (g_p, g_phi) = jax.value_and_grad(loss_fn, argnums=(0, 1))(p, ph)
        p, s_net = optimizer_step(opt_net, g_p, s_net, p)
        ph, s_phi = optimizer_step(opt_phi, g_phi, s_phi, ph)
        return (p, ph, s_net, s_phi), loss

    (params, phi, s_net, s_phi), losses = jax.lax.scan(step, (params, phi, *states), None, length=n_steps)
    return eqx.combine(params, static), phi, (s_net, s_phi), losses


@eqx.filter_jit
@highest_precision
def _group_chunk(
    model: Callable, phi: Float[Array, " n_params"], log_sigma: Float[Array, ""], states: _States,
    train: TrainingSet, layout: GroupLayout, batches: Int[Array, "steps B"], options: TrainOptions,
    z_scale: Float[Array, " q"], n_batches: int,
):  # fmt: skip
    """Adam steps over minibatches of whole groups: ``batches`` (steps, B), ``n_batches`` per epoch."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt_net, opt_phi = options.network_optimizer(), optax.adam(options.phi_learning_rate)
    structure = train.model_rows().structures[0]

    def loss_fn(p, ph, ls, groups):
        net = eqx.combine(p, static)
        return group_loss(
            net, ph, ls, train.x, train.y, train.z[0], layout, groups,
            structure=structure, z_scale=z_scale, scale=float(n_batches),
        )  # fmt: skip

    def step(carry, groups):
        p, ph, ls, s_net, s_phi = carry
        loss, (g_p, g_phi, g_ls) = jax.value_and_grad(loss_fn, argnums=(0, 1, 2))(p, ph, ls, groups)
        p, s_net = optimizer_step(opt_net, g_p, s_net, p)
        (ph, ls), s_phi = optimizer_step(opt_phi, (g_phi, g_ls), s_phi, (ph, ls))
        return (p, ph, ls, s_net, s_phi), loss

    carry = (params, phi, log_sigma, *states)
    (params, phi, log_sigma, s_net, s_phi), losses = jax.lax.scan(step, carry, batches)
    return eqx.combine(params, static), phi, log_sigma, (s_net, s_phi), losses


@eqx.filter_jit
@highest_precision
def _joint_check(
    model: Callable, phi: Float[Array, " n_params"], data: NeuralData, valid: TrainingSet, train: TrainingSet,
    reml: bool,
):  # fmt: skip
    """θ, and the held-out and training MSE, of the core's solution at φ (training rows)."""
    fit = fit_at(joint_statistics(model, data), phi, FitOptions(reml=reml))
    return fit.theta, _mse(model, fit, valid), _mse(model, fit, train)


def group_batches(n_groups: int, batch_groups: int, rng: np.random.Generator) -> Int[np.ndarray, "batches B"]:
    """One epoch's minibatches of groups (n_batches, batch_groups); -1 pads the last."""
    n_batches = -(-n_groups // batch_groups)
    order = np.full(n_batches * batch_groups, -1, np.int32)
    order[:n_groups] = rng.permutation(n_groups)
    return order.reshape(n_batches, batch_groups)


class _JointState(eqx.Module):
    """What joint training carries from chunk to chunk."""

    model: Callable
    phi: Float[Array, " n_params"]
    log_sigma: Float[Array, ""]  # trained only with minibatches of groups (else profiled)
    states: _States


def _joint_start(
    model: Callable, data: NeuralData, train: TrainingSet, options: TrainOptions, grouped: bool
) -> _JointState:
    """Λ̃ = I, σ from the response's mean square, fresh optimiser states."""
    n_params = sum(s.n_params for s in train.model_rows().structures)
    phi = jnp.zeros(n_params, data.y.dtype)  # Λ̃ = I on the standardised columns
    log_sigma = 0.5 * jnp.log(jnp.sum(jnp.where(data.mask, data.y**2, 0.0)) / train.n_obs)
    params = eqx.filter(model, eqx.is_inexact_array)
    phi_state = (phi, log_sigma) if grouped else phi
    states = (options.network_optimizer().init(params), optax.adam(options.phi_learning_rate).init(phi_state))
    return _JointState(model, phi, log_sigma, states)


def _joint_epochs(
    state: _JointState, k: int, data: NeuralData, train: TrainingSet, layout: GroupLayout | None,
    options: TrainOptions, rng: np.random.Generator,
) -> tuple[_JointState, float]:  # fmt: skip
    """k epochs of joint training; returns the new state and the last epoch's loss."""
    if layout is None:
        model, phi, states, losses = _joint_chunk(state.model, state.phi, state.states, data, options, k)
        return _JointState(model, phi, state.log_sigma, states), float(losses[-1])
    assert options.batch_groups is not None, "a layout of groups comes with batch_groups"
    n_groups = layout.rows.shape[0]
    batches = np.concatenate([group_batches(n_groups, options.batch_groups, rng) for _ in range(k)])
    n_batches = batches.shape[0] // k
    z_scale = data.design.scaling.z_scale[0]
    model, phi, log_sigma, states, losses = _group_chunk(
        state.model, state.phi, state.log_sigma, state.states, train, layout,
        jnp.asarray(batches), options, z_scale, n_batches,
    )  # fmt: skip
    return _JointState(model, phi, log_sigma, states), float(jnp.mean(losses[-n_batches:]))


def train_joint(
    model: Callable,
    data: NeuralData,
    train: TrainingSet,
    valid: TrainingSet | None,
    options: TrainOptions,
    *,
    layout: GroupLayout | None = None,
    seed: int = 0,
    verbose: bool = True,
) -> Trained:
    """Joint training of the network and φ (σ too with minibatches of groups).

    Every ``eval_every`` epochs the core's solution at φ gives θ and the
    held-out MSE; the state with the best held-out MSE is kept (the last
    without held-out rows). ``layout``: minibatches of whole groups (None:
    full batch); ``seed``: their order.
    """
    state = _joint_start(model, data, train, options, grouped=layout is not None)
    rng = np.random.default_rng(seed)
    check_set = valid if valid is not None else train

    def advance(k: int, epoch: int) -> Check:
        nonlocal state
        state, loss = _joint_epochs(state, k, data, train, layout, options, rng)
        theta, check_mse, train_mse = _joint_check(
            state.model, state.phi, data, check_set, train, options.reml
        )
        record = {"epoch": epoch, "loss": loss, "train_mse": float(train_mse)}
        if valid is not None:
            record["valid_mse"] = float(check_mse)
        return Check(record, loss, record.get("valid_mse"), state.model, theta)

    schedule = Schedule(options.max_epochs, options.eval_every, options.patience)
    trained = run_training(advance, schedule, held_out=valid is not None, verbose=verbose)
    return dataclasses.replace(trained, theta=np.asarray(trained.theta))
