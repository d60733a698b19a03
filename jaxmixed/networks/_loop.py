"""The one training loop: chunks of epochs, checks, early stopping, why a run stops.

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

The runs (``_joint``, ``_em``, ``_plain``) differ only in what one chunk of
epochs does: the ``advance`` they hand to :func:`run_training`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from jaxtyping import Float

from ..core._progress import Progress
from ..core._status import RESULTS
from ..core._typing import HostOrDevice

__all__ = ["Check", "Schedule", "Stop", "Trained", "run_training"]


@dataclasses.dataclass
class Trained:
    """What a training run returns (host side).

    Attributes:
        model: the network (or estimator) of the kept check.
        theta: θ (user units) at the kept state, the start of the final fit
            (a numpy array from ``train_joint`` and ``train_em``); None for a
            network without random part.
        history: one record (dict) per check.
        best_epoch: the epoch of the kept state.
        epochs: the epochs run.
        result: why training stopped, a ``RESULTS`` item.
        message: the same in words, with its numbers (epochs, tolerance).
    """

    model: Any
    theta: Float[HostOrDevice, " n_params"] | None
    history: list[dict[str, float]]
    best_epoch: int
    epochs: int
    result: RESULTS
    message: str

    @property
    def stopped(self) -> str:
        """Why training stopped, in words (``message``)."""
        return self.message


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

    record: dict[str, float] | None
    loss: float
    held_out: float | None
    model: Any
    theta: Float[HostOrDevice, " n_params"] | None = None
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

# What a check offers to keep: the model and θ.
_State = tuple[Any, Float[HostOrDevice, " n_params"] | None]


def _failed(result: RESULTS) -> bool:
    return any(bool(result == item) for item in _FAILURES)


class _Stopper:
    """Early stopping on held-out MSE: remembers the best state and its epoch.

    ``initial``: the state kept if no check is ever better (default None:
    none; a run that keeps nothing raises).
    """

    def __init__(self, patience: int, initial: _State | None = None):
        self.patience, self.best, self.best_epoch = patience, np.inf, 0
        self.state: _State | None = initial

    def offer(self, epoch: int, loss: float, state: _State) -> bool:
        """Records ``loss`` at ``epoch``; True when training should stop."""
        if loss < self.best:
            self.best, self.best_epoch, self.state = loss, epoch, state
        return epoch - self.best_epoch >= self.patience


def _stop_reason(
    check: Check, epoch: int, stopper: _Stopper, schedule: Schedule, held_out: bool
) -> Stop | None:
    """The :class:`Stop` after ``check`` at ``epoch`` (None: go on); offers its state to ``stopper``."""
    if check.stop is not None and _failed(check.stop.result):
        return check.stop  # a failed chunk: its state is not offered
    if not np.isfinite(check.loss):
        return Stop(RESULTS.nonfinite, f"the training loss became non-finite at epoch {epoch}")
    # Without held-out rows every check is the best so far: the last state is kept.
    score = -epoch
    if held_out:
        assert check.held_out is not None, "a run with held-out rows checks them at every chunk"
        score = check.held_out
    if stopper.offer(epoch, score, (check.model, check.theta)) and held_out:
        return Stop(
            RESULTS.early_stopped,
            f"early stopping: held-out MSE did not improve for {schedule.patience} epochs",
        )
    return check.stop


def _finish(stopper: _Stopper, history: list[dict[str, float]], epochs: int, stop: Stop) -> Trained:
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
    history: list[dict[str, float]] = []
    epoch, stop = 0, None
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
