"""One status type: RESULTS, the internal LoopStatus, and the one test of convergence."""

from __future__ import annotations

import jax
import numpy as np

import jaxmixed as jm
from jaxmixed.core._status import RESULTS, LoopStatus, is_converged, to_results


def test_loop_status_maps_back_to_results():
    for name in (
        "successful",
        "small_change",
        "max_steps_reached",
        "nonfinite",
        "no_progress",
        "constant_response",
        "early_stopped",
    ):
        item = getattr(RESULTS, name)
        assert to_results(LoopStatus.promote(item)) == item
    # the internal states are never reported as anything but success
    assert to_results(LoopStatus.running) == RESULTS.successful
    assert to_results(LoopStatus.skipped) == RESULTS.successful


def test_converged_is_defined_once_and_works_batched():
    assert bool(is_converged(RESULTS.successful)) and bool(is_converged(RESULTS.small_change))
    for name in ("max_steps_reached", "nonfinite", "no_progress", "constant_response", "early_stopped"):
        assert not bool(is_converged(getattr(RESULTS, name)))
    flags = np.asarray([True, False, True])
    batched = jax.vmap(lambda f: RESULTS.where(f, RESULTS.small_change, RESULTS.nonfinite))(flags)
    np.testing.assert_array_equal(np.asarray(is_converged(batched)), flags)


def test_the_public_enumeration_is_the_core_one():
    assert jm.RESULTS is RESULTS and jm.core.RESULTS is RESULTS


def test_to_results_maps_batched_statuses_item_by_item():
    flags = np.asarray([True, False, True, False])
    loop = jax.vmap(lambda f: LoopStatus.where(f, LoopStatus.promote(RESULTS.early_stopped), LoopStatus.skipped))(flags)
    public = to_results(loop)
    np.testing.assert_array_equal(np.asarray(public == RESULTS.early_stopped), flags)
    np.testing.assert_array_equal(np.asarray(public == RESULTS.successful), ~flags)
