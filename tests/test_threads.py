"""LAPACK threads sized to the free cores (jaxmixed.core._threads)."""

from __future__ import annotations

import pytest

from jaxmixed.core import _threads


def test_free_cores_is_at_least_one_and_at_most_the_cores(monkeypatch):
    n = _threads.free_cores()
    assert 1 <= n <= _threads._cores()
    monkeypatch.setattr(_threads.os, "getloadavg", lambda: (50.0, 0.0, 0.0))
    assert _threads.free_cores() == 1  # a saturated machine: one thread
    monkeypatch.setattr(_threads.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert _threads.free_cores() == _threads._cores()
    monkeypatch.setenv("JAXMIXED_BLAS_THREADS", "3")
    assert _threads.free_cores() == 3


def test_openblas_limited_inside_and_restored_after():
    handles = _threads._openblas()
    if handles is None:
        pytest.skip("scipy's OpenBLAS is not the LAPACK here")
    get, _ = handles
    before = get()
    with _threads.lapack_threads(1):
        assert get() == 1
    assert get() == before
    with pytest.raises(RuntimeError), _threads.lapack_threads(1):
        raise RuntimeError("restored on errors too")
    assert get() == before
