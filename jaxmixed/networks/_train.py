"""Training a learned fixed part: options, the one training loop, the joint and EM runs.

Every training run goes through :func:`run_training`, one host loop around
compiled steps: ``eval_every`` epochs are one ``lax.scan`` (compiled once per
model structure and data shape), then the loop checks the held-out rows
(early stopping, :class:`_Stopper`), updates the progress bar, records the
history and decides why the run stops, as a ``RESULTS`` item:

- ``max_steps_reached``: the limit on epochs (or EM rounds) was reached;
- ``early_stopped``: the held-out MSE did not improve for ``patience`` epochs;
- ``nonfinite``: the training loss (or the EM variance fit) became NaN/inf;
- ``constant_response``: EM's fixed part left no residual variance (σ̂ = 0);
- ``small_change``: EM's generalised log-likelihood changed by less than ``tol``.

The runs differ only in what one chunk of epochs does (its ``advance``):

- **joint** (:func:`train_joint`): the network and φ trained together with
  optax on ``_mixed_loss.joint_loss`` (full batch) or on ``group_loss``
  (minibatches of whole groups, one grouping factor; σ then a parameter too).
- **em** (:func:`train_em`): mixedML's alternation. Each round trains the
  fixed part (a network warm-started for ``epochs_per_round`` epochs, or an
  estimator refitted) on ``y − Zb̂`` by mean squared error, then fits the
  variance components to ``y − f(x)`` exactly with the core (one profiled
  fit, warm-started at the previous θ; ML or REML), which also gives β₀ and
  b̂; it stops when the generalised log-likelihood changes by less than
  ``tol`` (relative), or on the held-out rows' patience.
- **plain** (:func:`train_plain`): the network alone on the mean squared
  error (``sklearn.NNRegressor``, the fixed part without random effects).

Everything here works in the units the caller chose (``networks._api``
standardises features and response first).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..core._em_step import em_step, theta_of
from ..core._fit import FitResult, fit_at, jit_fit_data
from ..core._mixed_loss import (
    GroupLayout,
    NeuralData,
    group_loss,
    jit_network_output,
    joint_loss,
    joint_statistics,
    network_output,
)
from ..core._options import FitOptions
from ..core._padding import LINEAR_BITS, bucket
from ..core._progress import Progress
from ..core._statistics import ModelData
from ..core._status import RESULTS

__all__ = [
    "Check",
    "Schedule",
    "Stop",
    "TrainOptions",
    "Trained",
    "TrainingSet",
    "plain_rows",
    "run_training",
    "train_em",
    "train_joint",
    "train_plain",
]


class TrainOptions(eqx.Module):
    """Every setting of a network (or estimator) fit, with its default.

    Attributes:
        mode: ``"joint"`` (default) or ``"em"``.
        reml: REML (default) or ML for the variance components.
        learning_rate: the network's Adam step size (default 3e-3; features
            and response are standardised, so it does not depend on units).
        phi_learning_rate: Adam step size of φ (and log σ) in joint mode
            (default 0.02: log-scale parameters).
        optimizer: an optax ``GradientTransformation`` for the network in
            place of Adam(learning_rate).
        max_epochs: limit on passes over the training rows (default 1000;
            in EM mode it bounds the rounds to ``max_epochs / epochs_per_round``).
        patience: stop when the held-out MSE has not improved for this many
            epochs (default 100); the network of the best epoch is kept.
        validation_fraction: share of the rows held out for early stopping
            (default 0.1, drawn at random; 0 turns early stopping off).
        eval_every: epochs between checks of the held-out rows (default 10).
        batch_groups: None (default): full-batch steps; k: minibatches of k
            whole groups of the (single) grouping factor.
        epochs_per_round: EM: network epochs per round (default 20).
        max_rounds: EM: limit on rounds (default 100).
        tol: EM: stop when the generalised log-likelihood changes by less
            than ``tol`` relative (default 1e-4).
        variance_update: EM: ``"profiled"`` (default): each round fits the
            variance components to ``y − f(x)`` exactly with the core;
            ``"em"``: one step of mixedML's ML/REML EM formulas (its Table 1;
            one grouping factor; see ``jaxmixed.core._em_step``).
    """

    mode: str = eqx.field(default="joint", static=True)
    reml: bool = eqx.field(default=True, static=True)
    learning_rate: float = eqx.field(default=3e-3, static=True)
    phi_learning_rate: float = eqx.field(default=0.02, static=True)
    optimizer: Any = eqx.field(default=None, static=True)
    max_epochs: int = eqx.field(default=1000, static=True)
    patience: int = eqx.field(default=100, static=True)
    validation_fraction: float = eqx.field(default=0.1, static=True)
    eval_every: int = eqx.field(default=10, static=True)
    batch_groups: int | None = eqx.field(default=None, static=True)
    epochs_per_round: int = eqx.field(default=20, static=True)
    max_rounds: int = eqx.field(default=100, static=True)
    tol: float = eqx.field(default=1e-4, static=True)
    variance_update: str = eqx.field(default="profiled", static=True)

    def network_optimizer(self) -> optax.GradientTransformation:
        """``optimizer``, or Adam(``learning_rate``) when it is None."""
        return self.optimizer if self.optimizer is not None else optax.adam(self.learning_rate)


class TrainingSet(eqx.Module):
    """Rows for training or validation.

    ``x`` (n, d) features; ``y`` (n,); ``mask`` (n,): real rows (the rest
    pad the arrays to a size shared by similar data sets, with x, y, z = 0);
    ``z`` per factor (n, q_f) and ``codes`` per factor (n,) (level, -1 for a
    level absent from training); ``rows``: the core's :class:`ModelData` of
    ``X = [1]`` and the random part (None for validation rows and for a
    network without random part); ``n_obs``: the number of real rows.
    """

    x: jax.Array
    y: jax.Array
    mask: jax.Array
    z: tuple[jax.Array, ...]
    codes: tuple[jax.Array, ...]
    rows: ModelData | None
    n_obs: jax.Array


def plain_rows(x: np.ndarray, y: np.ndarray, dtype=jnp.float64) -> TrainingSet:
    """Rows with no random part (for :func:`train_plain`): x (n, d), y (n,), padded with
    zero rows to ``bucket(n, LINEAR_BITS)`` (``core._padding``'s rule for rows), so that
    data sets of similar size (cross-validation folds) share compiled steps."""
    n = len(y)
    size = bucket(n, LINEAR_BITS)
    pad = [(0, size - n)]
    return TrainingSet(
        x=jnp.asarray(np.pad(np.asarray(x), pad + [(0, 0)]), dtype),
        y=jnp.asarray(np.pad(np.asarray(y), pad), dtype),
        mask=jnp.asarray(np.arange(size) < n),
        z=(),
        codes=(),
        rows=None,
        n_obs=jnp.asarray(n, dtype),
    )


@dataclasses.dataclass
class Trained:
    """What a training run returns (host side).

    Attributes:
        model: the network (or estimator) of the kept check.
        theta: θ (user units) at the kept state, the start of the final fit;
            None for a network without random part.
        history: one record (dict) per check.
        best_epoch: the epoch of the kept state.
        epochs: the epochs run.
        result: why training stopped, a ``RESULTS`` item.
        message: the same in words, with its numbers (epochs, tolerance).
    """

    model: Any
    theta: np.ndarray | None
    history: list[dict]
    best_epoch: int
    epochs: int
    result: RESULTS
    message: str

    @property
    def stopped(self) -> str:
        """Why training stopped, in words (``message``)."""
        return self.message


# ------------------------------------------------------------------ the training loop


class Stop(NamedTuple):
    """Why a run stops: the ``RESULTS`` item and the detail in words."""

    result: RESULTS
    message: str


class Check(NamedTuple):
    """What one chunk of training (``advance``) reports to :func:`run_training`.

    ``record``: the history row (None: nothing to record, the chunk failed);
    ``loss``: the training criterion (shown; non-finite stops the run);
    ``held_out``: the held-out MSE (None without held-out rows); ``model``
    and ``theta``: the state kept if this check is the best; ``stop``: a
    reason to stop found by the chunk itself (EM's convergence or a failed
    variance fit), else None.
    """

    record: dict | None
    loss: float
    held_out: float | None
    model: Any
    theta: Any = None
    stop: Stop | None = None


class Schedule(NamedTuple):
    """How long a run may go and how it is shown.

    ``max_epochs``: the limit on epochs; ``eval_every``: epochs per chunk
    (between checks); ``patience``: epochs without a better held-out MSE
    that stop the run; ``unit``: what the progress bar counts (``"epoch"``,
    or ``"round"``: one per chunk); ``limit``: the setting(s) that bound the
    run, for the message; ``shown``: the name of ``Check.loss`` on the bar.
    """

    max_epochs: int
    eval_every: int
    patience: int
    unit: str = "epoch"
    limit: str = "max_epochs"
    shown: str = "loss"


# A run that ends in one of these keeps the best earlier state (or raises without one).
_FAILURES = (RESULTS.nonfinite, RESULTS.constant_response)


def _failed(result: RESULTS) -> bool:
    return any(bool(result == item) for item in _FAILURES)


class _Stopper:
    """Early stopping on held-out MSE: remembers the best state and its epoch.

    ``initial``: the state kept if no check is ever better (default None:
    none; a run that keeps nothing raises).
    """

    def __init__(self, patience: int, initial=None):
        self.patience, self.best, self.best_epoch, self.state = patience, np.inf, 0, initial

    def offer(self, epoch: int, loss: float, state) -> bool:
        """Records ``loss`` at ``epoch``; True when training should stop."""
        if loss < self.best:
            self.best, self.best_epoch, self.state = loss, epoch, state
        return epoch - self.best_epoch >= self.patience


def _stop_reason(check: Check, epoch: int, stopper: _Stopper, schedule: Schedule, held_out: bool):
    """The :class:`Stop` after ``check`` at ``epoch`` (None: go on); offers its state to ``stopper``."""
    if check.stop is not None and _failed(check.stop.result):
        return check.stop  # a failed chunk: its state is not offered
    if not np.isfinite(check.loss):
        return Stop(RESULTS.nonfinite, f"the training loss became non-finite at epoch {epoch}")
    # Without held-out rows every check is the best so far: the last state is kept.
    score = check.held_out if held_out else -epoch
    if stopper.offer(epoch, score, (check.model, check.theta)) and held_out:
        return Stop(
            RESULTS.early_stopped,
            f"early stopping: held-out MSE did not improve for {schedule.patience} epochs",
        )
    return check.stop


def _finish(stopper: _Stopper, history: list[dict], epochs: int, stop: Stop) -> Trained:
    """The :class:`Trained` of the kept state; raises when there is none."""
    if stopper.state is None:
        hint = ": lower the learning rate" if bool(stop.result == RESULTS.nonfinite) else ""
        raise RuntimeError(f"{stop.message} (before any usable state{hint})")
    if _failed(stop.result):
        stop = Stop(stop.result, f"{stop.message}; kept the state of epoch {stopper.best_epoch}")
    model, theta = stopper.state
    return Trained(model, theta, history, stopper.best_epoch, epochs, stop.result, stop.message)


def run_training(
    advance: Callable[[int, int], Check],
    schedule: Schedule,
    *,
    held_out: bool,
    verbose: bool,
    initial: Any = None,
) -> Trained:
    """The one training loop: chunks of epochs, checks, early stopping, why it stopped.

    Args:
        advance: ``advance(k, epoch)`` trains ``k`` more epochs (``epoch``: the
            count after them) and returns their :class:`Check`.
        schedule: the limits and the progress bar's units (:class:`Schedule`).
        held_out: whether ``Check.held_out`` holds a held-out MSE: early
            stopping then keeps the best state; without, the last is kept.
        verbose: a progress bar for runs taking more than a second.
        initial: the model kept if no check is usable (default None: such a
            run raises ``RuntimeError``).

    Returns:
        A :class:`Trained` whose ``result`` is ``max_steps_reached``,
        ``early_stopped``, ``nonfinite``, ``constant_response`` or (a chunk's
        own stop) ``small_change``.
    """
    stopper = _Stopper(schedule.patience, None if initial is None else (initial, None))
    per_tick = schedule.eval_every if schedule.unit == "round" else 1
    progress = Progress(schedule.max_epochs // per_tick, schedule.unit, verbose)
    history, epoch, stop = [], 0, None
    while stop is None and epoch < schedule.max_epochs:
        k = min(schedule.eval_every, schedule.max_epochs - epoch)
        epoch += k
        check = advance(k, epoch)
        if check.record is not None:
            history.append(check.record)
        shown = {schedule.shown: check.loss}
        if check.held_out is not None:
            shown["valid_mse"] = check.held_out
        progress.update(k // per_tick, **shown)
        stop = _stop_reason(check, epoch, stopper, schedule, held_out)
    progress.close()
    if stop is None:
        count = epoch // per_tick
        stop = Stop(RESULTS.max_steps_reached, f"{schedule.limit} reached ({count} {schedule.unit}s)")
    return _finish(stopper, history, epoch, stop)


# ------------------------------------------------------------------ shared pieces


def random_part(fit: FitResult, data: TrainingSet) -> jax.Array:
    """``Zb̂`` (n,) of the rows of ``data``; 0 for a level absent from training."""
    total = jnp.zeros(data.y.shape, data.y.dtype)
    for b, z, codes in zip(fit.b, data.z, data.codes, strict=True):
        contrib = jnp.einsum("nq,nq->n", z, b[jnp.maximum(codes, 0)])
        total = total + jnp.where(codes >= 0, contrib, 0.0)
    return total


_random_part = eqx.filter_jit(random_part)


def _masked_mse(data: TrainingSet, pred: jax.Array) -> jax.Array:
    """Mean of ``(y − pred)²`` (scalar) over the real rows of ``data``."""
    return jnp.sum(jnp.where(data.mask, (data.y - pred) ** 2, 0.0)) / data.n_obs


def _mse(model, fit: FitResult, data: TrainingSet) -> jax.Array:
    """MSE of ``f(x) + β₀ + Zb̂`` on ``data``."""
    return _masked_mse(data, network_output(model, data.x) + fit.beta[0] + random_part(fit, data))


@eqx.filter_jit
def _plain_mse(model, data: TrainingSet) -> jax.Array:
    """MSE of ``f(x)`` alone on ``data``."""
    return _masked_mse(data, network_output(model, data.x))


def _adam_update(opt, grads, state, params):
    # optax mixes int32 and int64 counters in 64-bit mode: standard promotion here.
    with jax.numpy_dtype_promotion("standard"):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state


def generalised_loglik(fit, residual: np.ndarray, n_levels) -> float:
    """MERF's and mixedML's generalised log-likelihood (−2 times; smaller is better).

    ``‖e‖²/σ² + n log σ² + Σ_f Σ_j (b̂_jᵀD_f⁺b̂_j + log|D_f|₊)`` with ``e`` the
    residual after fixed and random parts (``residual``, (n,)) and
    ``D_f = σ²ΛΛᵀ`` (pseudo-inverse and pseudo-determinant at a boundary,
    where D is singular); ``fit`` has ``sigma``, ``lambdas`` and ``b`` (a
    FitResult or a :class:`VarianceState`); ``n_levels`` per factor: the real
    levels (the rest pad ``fit.b`` with 0).
    """
    sigma2 = float(fit.sigma) ** 2
    value = float(residual @ residual) / sigma2 + len(residual) * np.log(sigma2)
    for lam, b, n_f in zip(fit.lambdas, fit.b, n_levels, strict=True):
        d = sigma2 * np.asarray(lam) @ np.asarray(lam).T
        vals, vecs = np.linalg.eigh(d)
        keep = vals > 1e-12 * max(vals.max(), 1e-300)
        proj = np.asarray(b) @ vecs[:, keep]
        value += float(np.sum(proj**2 / vals[keep])) + n_f * float(np.sum(np.log(vals[keep])))
    return value


# ------------------------------------------------------------------ joint mode


@eqx.filter_jit
def _joint_chunk(model, phi, states, data: NeuralData, options: TrainOptions, n_steps: int):
    """``n_steps`` full-batch Adam steps on the joint loss; returns the losses (n_steps,)."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt_net, opt_phi = options.network_optimizer(), optax.adam(options.phi_learning_rate)

    def loss_fn(p, ph):
        return joint_loss(eqx.combine(p, static), ph, data, options.reml)

    def step(carry, _):
        p, ph, s_net, s_phi = carry
        loss, (g_p, g_phi) = jax.value_and_grad(loss_fn, argnums=(0, 1))(p, ph)
        p, s_net = _adam_update(opt_net, g_p, s_net, p)
        ph, s_phi = _adam_update(opt_phi, g_phi, s_phi, ph)
        return (p, ph, s_net, s_phi), loss

    (params, phi, s_net, s_phi), losses = jax.lax.scan(step, (params, phi, *states), None, length=n_steps)
    return eqx.combine(params, static), phi, (s_net, s_phi), losses


@eqx.filter_jit
def _group_chunk(
    model, phi, log_sigma, states, train: TrainingSet, layout, batches, options, z_scale, n_batches
):
    """Adam steps over minibatches of whole groups: ``batches`` (steps, B), ``n_batches`` per epoch."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt_net, opt_phi = options.network_optimizer(), optax.adam(options.phi_learning_rate)
    structure = train.rows.structures[0]

    def loss_fn(p, ph, ls, groups):
        net = eqx.combine(p, static)
        return group_loss(
            net, ph, ls, train.x, train.y, train.z[0], layout, groups,
            structure=structure, z_scale=z_scale, scale=float(n_batches),
        )  # fmt: skip

    def step(carry, groups):
        p, ph, ls, s_net, s_phi = carry
        loss, (g_p, g_phi, g_ls) = jax.value_and_grad(loss_fn, argnums=(0, 1, 2))(p, ph, ls, groups)
        p, s_net = _adam_update(opt_net, g_p, s_net, p)
        (ph, ls), s_phi = _adam_update(opt_phi, (g_phi, g_ls), s_phi, (ph, ls))
        return (p, ph, ls, s_net, s_phi), loss

    carry = (params, phi, log_sigma, *states)
    (params, phi, log_sigma, s_net, s_phi), losses = jax.lax.scan(step, carry, batches)
    return eqx.combine(params, static), phi, log_sigma, (s_net, s_phi), losses


@eqx.filter_jit
def _joint_check(model, phi, data: NeuralData, valid: TrainingSet, train: TrainingSet, reml: bool):
    """θ, and the held-out and training MSE, of the core's solution at φ (training rows)."""
    fit = fit_at(joint_statistics(model, data), phi, FitOptions(reml=reml))
    return fit.theta, _mse(model, fit, valid), _mse(model, fit, train)


def group_batches(n_groups: int, batch_groups: int, rng: np.random.Generator) -> np.ndarray:
    """One epoch's minibatches of groups (n_batches, batch_groups); -1 pads the last."""
    n_batches = -(-n_groups // batch_groups)
    order = np.full(n_batches * batch_groups, -1, np.int32)
    order[:n_groups] = rng.permutation(n_groups)
    return order.reshape(n_batches, batch_groups)


class _JointState(eqx.Module):
    """What joint training carries from chunk to chunk."""

    model: Any
    phi: jax.Array
    log_sigma: jax.Array  # trained only with minibatches of groups (else profiled)
    states: tuple  # optax states of the network and of φ (and log σ)


def _joint_start(model, data: NeuralData, train: TrainingSet, options: TrainOptions, grouped: bool):
    """Λ̃ = I, σ from the response's mean square, fresh optimiser states."""
    n_params = sum(s.n_params for s in train.rows.structures)
    phi = jnp.zeros(n_params, data.y.dtype)  # Λ̃ = I on the standardised columns
    log_sigma = 0.5 * jnp.log(jnp.sum(jnp.where(data.mask, data.y**2, 0.0)) / train.n_obs)
    params = eqx.filter(model, eqx.is_inexact_array)
    phi_state = (phi, log_sigma) if grouped else phi
    states = (options.network_optimizer().init(params), optax.adam(options.phi_learning_rate).init(phi_state))
    return _JointState(model, phi, log_sigma, states)


def _joint_epochs(state: _JointState, k: int, data, train, layout, options, rng) -> tuple[_JointState, float]:
    """k epochs of joint training; returns the new state and the last epoch's loss."""
    if layout is None:
        model, phi, states, losses = _joint_chunk(state.model, state.phi, state.states, data, options, k)
        return _JointState(model, phi, state.log_sigma, states), float(losses[-1])
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
    model,
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


# ------------------------------------------------------------------ the fixed part alone


@eqx.filter_jit
def _mse_chunk(model, state, data: TrainingSet, target: jax.Array, options: TrainOptions, n_steps: int):
    """``n_steps`` full-batch Adam steps on the mean of ``(target − f(x))²`` (target (n,)) over
    the real rows of ``data``; returns the network, the optimiser state and the losses (n_steps,)."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt = options.network_optimizer()

    def loss_fn(p):
        err = jnp.where(data.mask, target - network_output(eqx.combine(p, static), data.x), 0.0)
        return jnp.sum(err * err) / data.n_obs

    def step(carry, _):
        p, s = carry
        loss, g = jax.value_and_grad(loss_fn)(p)
        p, s = _adam_update(opt, g, s, p)
        return (p, s), loss

    (params, state), losses = jax.lax.scan(step, (params, state), None, length=n_steps)
    return eqx.combine(params, static), state, losses


class _NetworkFixed:
    """A network fixed part: Adam on the mean squared error, warm-started from round to round.

    One of the two fixed parts of EM (the other is :class:`_EstimatorFixed`,
    with the same interface), and the whole model in :func:`train_plain`.
    """

    limit = "max_rounds or max_epochs"  # the settings that bound its EM rounds

    def __init__(self, model, options: TrainOptions):
        self.model, self.options = model, options
        self.state = options.network_optimizer().init(eqx.filter(model, eqx.is_inexact_array))
        self.epochs_per_round = options.epochs_per_round

    def rounds(self) -> int:
        """The limit on EM rounds: ``max_rounds``, and ``max_epochs`` in rounds."""
        return min(self.options.max_rounds, -(-self.options.max_epochs // self.epochs_per_round))

    def steps(self, data: TrainingSet, target: jax.Array, k: int) -> float:
        """``k`` epochs on ``target`` (n,); returns the last epoch's loss."""
        self.model, self.state, losses = _mse_chunk(self.model, self.state, data, target, self.options, k)
        return float(losses[-1])

    def train(self, data: TrainingSet, target: jax.Array) -> float:
        """One EM round (``epochs_per_round`` epochs) on ``target`` (n,); returns the loss."""
        return self.steps(data, target, self.epochs_per_round)

    def predict(self, data: TrainingSet) -> jax.Array:
        """f(x) (n,) on the real rows, 0 on padding."""
        return jnp.where(data.mask, jit_network_output(self.model, data.x), 0.0)

    def snapshot(self):
        return self.model  # an immutable pytree: training replaces it, never changes it


class _EstimatorFixed:
    """Any regressor with ``fit(X, y)`` and ``predict(X)`` as EM's fixed part, refitted each round."""

    limit = "max_rounds"
    epochs_per_round = 1  # one refit counts as one epoch

    def __init__(self, model, options: TrainOptions):
        self.model, self.options = model, options

    def rounds(self) -> int:
        return self.options.max_rounds

    def train(self, data: TrainingSet, target: jax.Array) -> float:
        """Refits on ``target`` (n,) over the real rows; returns the training MSE."""
        real = np.asarray(data.mask)
        self.model.fit(np.asarray(data.x)[real], np.asarray(target)[real])
        err = np.asarray(target - self.predict(data))[real]
        return float(np.mean(err**2))

    def predict(self, data: TrainingSet) -> jax.Array:
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

    def snapshot(self):
        return copy.deepcopy(self.model)  # refitting changes the estimator in place


def train_plain(
    model, train: TrainingSet, valid: TrainingSet | None, options: TrainOptions, *, verbose: bool = False
) -> Trained:
    """The network alone by Adam on the mean squared error, with early stopping.

    ``train`` and ``valid`` (see :func:`plain_rows`) need no random part;
    ``options``: ``learning_rate`` (or ``optimizer``), ``max_epochs``,
    ``patience``, ``eval_every``. A run whose loss becomes non-finite keeps
    the best earlier network (the initial one at worst) with ``result``
    ``nonfinite``. ``theta`` of the result is None.
    """
    fixed = _NetworkFixed(model, options)

    def advance(k: int, epoch: int) -> Check:
        loss = fixed.steps(train, train.y, k)
        record = {"epoch": epoch, "train_mse": loss}
        if valid is not None:
            record["valid_mse"] = float(_plain_mse(fixed.model, valid))
        return Check(record, loss, record.get("valid_mse"), fixed.model)

    schedule = Schedule(options.max_epochs, options.eval_every, options.patience, shown="train_mse")
    return run_training(advance, schedule, held_out=valid is not None, verbose=verbose, initial=model)


# ------------------------------------------------------------------ EM mode


def _start_theta(rows: ModelData) -> jax.Array:
    """lme4's start, θ = 1 on the diagonals (user units) and 0 elsewhere."""
    pieces = [np.asarray(s.rows) == np.asarray(s.cols) for s in rows.structures]
    return jnp.asarray(np.concatenate(pieces), rows.X.dtype)


class VarianceState(eqx.Module):
    """The random part during EM: θ (user units), Λ per factor, β₀, σ, b̂ per
    factor and the criterion (NaN when the EM formulas made it)."""

    theta: jax.Array
    lambdas: tuple[jax.Array, ...]
    beta: jax.Array
    sigma: jax.Array
    b: tuple[jax.Array, ...]
    objective: jax.Array


def _profiled_variance(train: TrainingSet, f, current: VarianceState, options) -> VarianceState:
    """The core's exact fit of ``y − f(x)`` (``X = [1]``), warm-started at θ."""
    start = FitOptions(reml=options.reml, start=jnp.asarray(current.theta))
    fit = jit_fit_data(train.rows, train.y, start, offset=f, n_obs=train.n_obs)
    fit = jax.tree.map(np.asarray, fit)
    return VarianceState(fit.theta, fit.lambdas, fit.beta, fit.sigma, fit.b, fit.objective)


@eqx.filter_jit
def _em_update(lam, sigma2, r, train: TrainingSet, reml: bool):
    rows = train.rows
    return em_step(
        lam, sigma2, r, train.z[0], train.codes[0], train.mask,
        n_levels=rows.index.n_levels, structure=rows.structures[0], reml=reml,
    )  # fmt: skip


def _formula_variance(train: TrainingSet, f, current: VarianceState, options) -> VarianceState:
    """One EM step of mixedML's Table 1 (ML or REML; one grouping factor)."""
    lam, sigma = jnp.asarray(current.lambdas[0]), jnp.asarray(current.sigma)
    step = jax.tree.map(np.asarray, _em_update(lam, sigma**2, train.y - f, train, options.reml))
    theta = theta_of(step.lam, train.rows.structures[0])
    nan = np.asarray(np.nan)
    return VarianceState(theta, (step.lam,), step.beta[None], np.sqrt(step.sigma2), (step.b,), nan)


def _initial_variance(train: TrainingSet, n_levels) -> VarianceState:
    """lme4's start (Λ = I in user units) and σ² = the response's variance; b̂ = 0.

    Only θ (profiled update) or Λ and σ (EM formulas) start the first round.
    """
    theta = np.asarray(_start_theta(train.rows))
    lams = tuple(np.eye(s.q) for s in train.rows.structures)
    y = np.asarray(train.y)[np.asarray(train.mask)]
    b = tuple(np.zeros((n_f, s.q)) for n_f, s in zip(n_levels, train.rows.structures, strict=True))
    return VarianceState(theta, lams, np.zeros(1), np.asarray(y.std()), b, np.asarray(np.nan))


def _usable(fit: VarianceState) -> bool:
    values = [fit.sigma, fit.theta, *fit.b]
    return bool(all(np.all(np.isfinite(v)) for v in values) and fit.sigma > 0)


def _unusable(fit: VarianceState, rnd: int) -> Stop:
    """Why the variance fit of round ``rnd`` cannot be used."""
    if not fit.sigma > 0:  # 0, or NaN: the core flags a response with nothing left to fit
        return Stop(
            RESULTS.constant_response,
            f"EM round {rnd}: the fixed part reproduces the training response exactly, so no "
            "residual variance is left to split between random effects and noise (σ̂ = 0); "
            "regularise the estimator (it interpolates the training data)",
        )
    return Stop(
        RESULTS.nonfinite,
        f"EM round {rnd}: the variance fit gave non-finite values (σ̂ = {float(fit.sigma):.3g})",
    )


class _EMRounds:
    """EM rounds as :func:`run_training`'s chunks (one round per chunk): the
    fixed part on ``y − Zb̂``, then the variance components on ``y − f(x)``."""

    def __init__(self, fixed, train: TrainingSet, valid, options: TrainOptions, n_levels):
        self.fixed, self.train, self.valid = fixed, train, valid
        self.options, self.n_levels = options, n_levels
        self.update = _formula_variance if options.variance_update == "em" else _profiled_variance
        self.fit, self.zb = _initial_variance(train, n_levels), jnp.zeros_like(train.y)
        self.round, self.previous = 0, None  # previous: the last round's generalised log-likelihood

    def __call__(self, k: int, epoch: int) -> Check:
        self.round += 1
        loss = self.fixed.train(self.train, self.train.y - self.zb)
        f = self.fixed.predict(self.train)
        fit = self.update(self.train, f, self.fit, self.options)
        if not _usable(fit):
            return Check(None, np.nan, None, None, stop=_unusable(fit, self.round))
        self.fit, self.zb = fit, _random_part(fit, self.train)
        record = {"round": self.round, "epoch": epoch, "loss": loss, **self._scores(f)}
        gll, stop = record["gll"], None
        if self.previous is not None and abs(gll - self.previous) <= self.options.tol * abs(self.previous):
            stop = Stop(
                RESULTS.small_change,
                f"converged: relative change of the generalised log-likelihood below {self.options.tol:g}",
            )
        self.previous = gll
        return Check(record, gll, record.get("valid_mse"), self.fixed.snapshot(), self.fit.theta, stop)

    def _scores(self, f: jax.Array) -> dict:
        """The round's generalised log-likelihood, criterion, and training (held-out) MSE."""
        fit, train, valid = self.fit, self.train, self.valid
        real = np.asarray(train.mask)
        resid = np.asarray(train.y - f - fit.beta[0] - self.zb)[real]
        scores = {
            "gll": generalised_loglik(fit, resid, self.n_levels),
            "objective": float(fit.objective),
            "train_mse": float(np.mean(resid**2)),
        }
        if valid is not None:
            pred = self.fixed.predict(valid) + fit.beta[0] + _random_part(fit, valid)
            scores["valid_mse"] = float(jnp.mean((valid.y - pred)[np.asarray(valid.mask)] ** 2))
        return scores


def _check_em(options: TrainOptions, train: TrainingSet) -> None:
    if options.variance_update not in ("profiled", "em"):
        raise ValueError(f"variance_update must be 'profiled' or 'em', got {options.variance_update!r}")
    if options.variance_update == "em" and len(train.rows.structures) != 1:
        raise ValueError(
            "variance_update='em' (mixedML's EM formulas) is implemented for one grouping factor; "
            f"the formula has {len(train.rows.structures)}: use variance_update='profiled'"
        )


def train_em(
    model,
    train: TrainingSet,
    valid: TrainingSet | None,
    options: TrainOptions,
    *,
    n_levels: tuple[int, ...],
    estimator: bool = False,
    verbose: bool = True,
) -> Trained:
    """mixedML's EM alternation (see the module docstring) for a network or an estimator.

    ``estimator``: ``model`` is a regressor with ``fit``/``predict`` (else
    an equinox network); ``n_levels``: the real number of levels per factor
    (for the generalised log-likelihood; the statistics may carry padding
    levels). Each round counts ``epochs_per_round`` epochs of a network (one
    for an estimator) in ``history`` and ``best_epoch``.
    """
    _check_em(options, train)
    fixed = (_EstimatorFixed if estimator else _NetworkFixed)(model, options)
    per_round = fixed.epochs_per_round
    schedule = Schedule(
        fixed.rounds() * per_round, per_round, options.patience, unit="round", limit=fixed.limit, shown="gll"
    )
    rounds = _EMRounds(fixed, train, valid, options, n_levels)
    return run_training(rounds, schedule, held_out=valid is not None, verbose=verbose)
