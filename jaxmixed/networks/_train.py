"""Training a network fixed part: options, the joint and EM loops, progress.

The loops run on the host around compiled steps: ``eval_every`` optimiser
steps are one ``lax.scan`` (compiled once per model structure and data
shape), then the host checks the held-out rows (early stopping), updates the
progress bar and records the history. Everything here works in the units the
caller chose (``_nn_api`` standardises features and response first).

- **joint**: the network and φ trained together with optax on
  ``_mixed_loss.joint_loss`` (full batch) or on ``group_loss`` (minibatches
  of whole groups, one grouping factor; σ then a parameter too).
- **em**: mixedML's alternation. Each round trains the network (warm start)
  for ``epochs_per_round`` epochs on ``y − Zb̂`` by mean squared error, then
  fits the variance components to ``y − f(x)`` exactly with the core (one
  profiled fit, warm-started at the previous θ; ML or REML), which also gives
  β₀ and b̂; it stops when the generalised log-likelihood changes by less than
  ``tol`` (relative), or on the held-out rows' patience.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

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
from ..core._progress import Progress
from ..core._statistics import ModelData

__all__ = ["TrainOptions", "TrainingSet", "Trained", "train_joint", "train_em"]


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
            one grouping factor; see ``jaxmixed._em_step``).
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
        return self.optimizer if self.optimizer is not None else optax.adam(self.learning_rate)


class TrainingSet(eqx.Module):
    """Rows for training or validation.

    ``x`` (n, d) features; ``y`` (n,); ``mask`` (n,): real rows (the rest
    pad the arrays to a size shared by similar data sets, with x, y, z = 0);
    ``z`` per factor (n, q_f) and ``codes`` per factor (n,) (level, -1 for a
    level absent from training); ``rows``: the core's :class:`ModelData` of
    ``X = [1]`` and the random part (None for validation rows); ``n_obs``:
    the number of real rows.
    """

    x: jax.Array
    y: jax.Array
    mask: jax.Array
    z: tuple[jax.Array, ...]
    codes: tuple[jax.Array, ...]
    rows: ModelData | None
    n_obs: jax.Array


@dataclasses.dataclass
class Trained:
    """What a training loop returns (host side)."""

    model: Any  # the network (or estimator) of the kept epoch
    theta: np.ndarray  # θ (user units) at the kept state: the start of the final fit
    history: list[dict]
    best_epoch: int
    stopped: str  # why training stopped


# ------------------------------------------------------------------ progress


# ------------------------------------------------------------------ shared pieces


def random_part(fit: FitResult, data: TrainingSet) -> jax.Array:
    """``Zb̂`` (n,) of the rows of ``data``; 0 for a level absent from training."""
    total = jnp.zeros(data.y.shape, data.y.dtype)
    for b, z, codes in zip(fit.b, data.z, data.codes, strict=True):
        contrib = jnp.einsum("nq,nq->n", z, b[jnp.maximum(codes, 0)])
        total = total + jnp.where(codes >= 0, contrib, 0.0)
    return total


def _mse(model, fit: FitResult, data: TrainingSet) -> jax.Array:
    pred = network_output(model, data.x) + fit.beta[0] + random_part(fit, data)
    return jnp.sum(jnp.where(data.mask, (data.y - pred) ** 2, 0.0)) / data.n_obs


def _adam_update(opt, grads, state, params):
    # optax mixes int32 and int64 counters in 64-bit mode: standard promotion here.
    with jax.numpy_dtype_promotion("standard"):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state


def generalised_loglik(fit, residual: np.ndarray, n_levels) -> float:
    """MERF's and mixedML's generalised log-likelihood (−2 times; smaller is better).

    ``‖e‖²/σ² + n log σ² + Σ_f Σ_j (b̂_jᵀD_f⁺b̂_j + log|D_f|₊)`` with ``e`` the
    residual after fixed and random parts (``residual``) and ``D_f = σ²ΛΛᵀ``
    (pseudo-inverse and pseudo-determinant at a boundary, where D is singular);
    ``fit`` has ``sigma``, ``lambdas`` and ``b`` (a FitResult or a
    :class:`VarianceState`); ``n_levels`` per factor: the real levels (the
    rest pad ``fit.b`` with 0).
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


class _Stopper:
    """Early stopping on held-out MSE: remembers the best state and its epoch."""

    def __init__(self, patience: int):
        self.patience, self.best, self.best_epoch, self.state = patience, np.inf, 0, None

    def offer(self, epoch: int, loss: float, state) -> bool:
        """Records ``loss`` at ``epoch``; True when training should stop."""
        if loss < self.best:
            self.best, self.best_epoch, self.state = loss, epoch, state
        return epoch - self.best_epoch >= self.patience


# ------------------------------------------------------------------ joint mode


@eqx.filter_jit
def _joint_chunk(model, phi, states, data: NeuralData, options: TrainOptions, n_steps: int):
    """``n_steps`` full-batch Adam steps on the joint loss; returns the losses."""
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
    held-out MSE; the state with the best held-out MSE is kept.
    """
    state = _joint_start(model, data, train, options, grouped=layout is not None)
    rng = np.random.default_rng(seed)
    check_set = valid if valid is not None else train
    stopper, history = _Stopper(options.patience), []
    progress = Progress(options.max_epochs, "epoch", verbose)
    epoch, stopped = 0, f"max_epochs ({options.max_epochs}) reached"
    while epoch < options.max_epochs:
        k = min(options.eval_every, options.max_epochs - epoch)
        state, loss = _joint_epochs(state, k, data, train, layout, options, rng)
        epoch += k
        theta, check_mse, train_mse = _joint_check(
            state.model, state.phi, data, check_set, train, options.reml
        )
        record = {"epoch": epoch, "loss": loss, "train_mse": float(train_mse)}
        if valid is not None:
            record["valid_mse"] = float(check_mse)
        history.append(record)
        progress.update(k, loss=loss, **({"valid_mse": record["valid_mse"]} if valid is not None else {}))
        if not np.isfinite(loss):
            stopped = f"the loss became non-finite at epoch {epoch}"
            break
        check = float(check_mse) if valid is not None else -epoch  # no held-out rows: keep the last
        if stopper.offer(epoch, check, (state.model, theta)) and valid is not None:
            stopped = f"early stopping: held-out MSE did not improve for {options.patience} epochs"
            break
    progress.close()
    if stopper.state is None:
        raise RuntimeError(f"{stopped}, before any usable state: lower the learning rate")
    model, theta = stopper.state
    return Trained(model, np.asarray(theta), history, stopper.best_epoch, stopped)


# ------------------------------------------------------------------ EM mode


@eqx.filter_jit
def _mse_chunk(model, state, data: TrainingSet, target, options: TrainOptions, n_steps: int):
    """``n_steps`` full-batch Adam steps on the mean of ``(target − f(x))²`` over real rows."""
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


_random_part = eqx.filter_jit(random_part)


def _start_theta(rows: ModelData) -> jax.Array:
    """lme4's start, θ = 1 on the diagonals (user units) and 0 elsewhere."""
    pieces = [np.asarray(s.rows) == np.asarray(s.cols) for s in rows.structures]
    return jnp.asarray(np.concatenate(pieces), rows.X.dtype)


class _Fixed:
    """The fixed part in the EM loop: a network trained by Adam, or any estimator."""

    def __init__(self, model, options: TrainOptions, estimator: bool):
        self.model, self.options, self.estimator = model, options, estimator
        params = eqx.filter(model, eqx.is_inexact_array)
        self.state = None if estimator else options.network_optimizer().init(params)

    def train(self, data: TrainingSet, target: jax.Array) -> float:
        if self.estimator:
            real = np.asarray(data.mask)
            self.model.fit(np.asarray(data.x)[real], np.asarray(target)[real])
            err = np.asarray(target - self.predict(data))[real]
            return float(np.mean(err**2))
        self.model, self.state, losses = _mse_chunk(
            self.model, self.state, data, target, self.options, self.options.epochs_per_round
        )
        return float(losses[-1])

    def predict(self, data: TrainingSet) -> jax.Array:
        """f(x) (n,) on the real rows, 0 on padding."""
        if not self.estimator:
            return jnp.where(data.mask, jit_network_output(self.model, data.x), 0.0)
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
        return copy.deepcopy(self.model) if self.estimator else self.model


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


def _initial_variance(train: TrainingSet) -> VarianceState:
    """lme4's start (Λ = I in user units) and σ² = the response's variance; b̂ = 0."""
    theta = np.asarray(_start_theta(train.rows))
    lams = tuple(np.eye(s.q) for s in train.rows.structures)
    y = np.asarray(train.y)[np.asarray(train.mask)]
    b = tuple(np.zeros((z.shape[0], z.shape[1])) for z in train.z)
    return VarianceState(theta, lams, np.zeros(1), np.asarray(y.std()), b, np.asarray(np.nan))


def _em_round(fixed: _Fixed, train: TrainingSet, valid, zb, current: VarianceState, options, n_levels):
    """One EM round: the fixed part on ``y − Zb̂``, then the variance components."""
    loss = fixed.train(train, train.y - zb)
    f = fixed.predict(train)
    update = _formula_variance if options.variance_update == "em" else _profiled_variance
    fit = update(train, f, current, options)
    zb = _random_part(fit, train)
    real = np.asarray(train.mask)
    resid = np.asarray(train.y - f - fit.beta[0] - zb)[real]
    record = {
        "loss": loss,
        "gll": generalised_loglik(fit, resid, n_levels),
        "objective": float(fit.objective),
        "train_mse": float(np.mean(resid**2)),
    }
    if valid is not None:
        pred = fixed.predict(valid) + fit.beta[0] + _random_part(fit, valid)
        record["valid_mse"] = float(jnp.mean((valid.y - pred)[np.asarray(valid.mask)] ** 2))
    return fit, zb, record


def _usable(fit: VarianceState) -> bool:
    values = [fit.sigma, fit.theta, *fit.b]
    return bool(all(np.all(np.isfinite(v)) for v in values) and fit.sigma > 0)


def _unusable_message(fit: VarianceState, rnd: int) -> str:
    if not fit.sigma > 0:  # 0, or NaN: the core flags a response with nothing left to fit
        return (
            f"EM round {rnd}: the fixed part reproduces the training response exactly, so no "
            "residual variance is left to split between random effects and noise (σ̂ = 0); "
            "regularise the estimator (it interpolates the training data)"
        )
    return f"EM round {rnd}: the variance fit gave non-finite values (σ̂ = {float(fit.sigma):.3g})"


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

    ``n_levels``: the real number of levels per factor (for the generalised
    log-likelihood; the statistics may carry padding levels).
    """
    fixed = _Fixed(model, options, estimator)
    if options.variance_update not in ("profiled", "em"):
        raise ValueError(f"variance_update must be 'profiled' or 'em', got {options.variance_update!r}")
    if options.variance_update == "em" and len(train.rows.structures) != 1:
        raise ValueError(
            "variance_update='em' (mixedML's EM formulas) is implemented for one grouping factor; "
            f"the formula has {len(train.rows.structures)}: use variance_update='profiled'"
        )
    zb, fit = jnp.zeros_like(train.y), _initial_variance(train)
    stopper, history, previous = _Stopper(options.patience), [], None
    per_round = 1 if estimator else options.epochs_per_round
    # A network's rounds are bounded by max_epochs too.
    rounds = options.max_rounds if estimator else min(options.max_rounds, -(-options.max_epochs // per_round))
    progress = Progress(rounds, "round", verbose)
    stopped = f"{rounds} rounds (max_rounds, max_epochs) reached before the relative change fell below tol"
    for rnd in range(1, rounds + 1):
        fit, zb, record = _em_round(fixed, train, valid, zb, fit, options, n_levels)
        if not _usable(fit):
            stopped = _unusable_message(fit, rnd)
            if stopper.state is None:
                raise RuntimeError(stopped)
            stopped += f"; kept the state of epoch {stopper.best_epoch}"
            break
        history.append({"round": rnd, "epoch": rnd * per_round, **record})
        gll = record["gll"]
        progress.update(1, gll=gll, **({"valid_mse": record["valid_mse"]} if valid is not None else {}))
        check = record.get("valid_mse", -rnd)
        if stopper.offer(rnd * per_round, check, (fixed.snapshot(), fit.theta)) and valid is not None:
            stopped = f"early stopping: held-out MSE did not improve for {options.patience} epochs"
            break
        if previous is not None and abs(gll - previous) <= options.tol * abs(previous):
            stopped = f"converged: relative change of the generalised log-likelihood below {options.tol:g}"
            break
        previous = gll
    progress.close()
    best_model, theta = stopper.state
    return Trained(best_model, theta, history, stopper.best_epoch, stopped)
