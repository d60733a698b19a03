"""Training a learned fixed part: where its pieces live (re-exported here).

- :mod:`._options`: :class:`TrainOptions`, every setting, and the optimiser step;
- :mod:`._data`: :class:`TrainingSet` (padded rows on the device), ``plain_rows``,
  the random part ``Zb̂`` and the masked mean squared error;
- :mod:`._loop`: :func:`run_training`, the one training loop (chunks of
  epochs, checks, early stopping, why a run stops as a ``RESULTS`` item),
  and its records :class:`Trained`, :class:`Check`, :class:`Schedule`, :class:`Stop`;
- the modes, each an ``advance`` (one chunk of epochs) for that loop:
  :mod:`._joint` (:func:`train_joint`: the network and φ together),
  :mod:`._plain` (:func:`train_plain`: the network alone on the MSE, and the
  fixed parts EM trains), :mod:`._em` (:func:`train_em`: mixedML's EM, with
  the random part's updates in :mod:`._variance`).

Everything here works in the units the caller chose (``networks._api``
standardises features and response first). ``jaxmixed.TrainOptions`` is
imported from here.
"""

from __future__ import annotations

from ._data import TrainingSet, plain_rows
from ._em import train_em
from ._joint import group_batches, train_joint
from ._loop import Check, Schedule, Stop, Trained, run_training
from ._options import TrainOptions
from ._plain import train_plain

__all__ = [
    "Check",
    "Schedule",
    "Stop",
    "TrainOptions",
    "Trained",
    "TrainingSet",
    "group_batches",
    "plain_rows",
    "run_training",
    "train_em",
    "train_joint",
    "train_plain",
]
