"""Data over several devices (and hosts) with ``jax.sharding``.

Nothing here is home-made communication: arrays are placed with a
``NamedSharding`` over a one-dimensional view of a device mesh and the
compiled fit is the same program; XLA partitions it and inserts the
cross-device sums.

- **Rows** (:func:`shard_rows`): X, Z, the prior weights, the level codes
  and the response are split by rows across the devices. The statistics
  pass is a set of segment sums over rows, so each device sums its own rows
  and one all-reduce combines them; everything after it is small and
  replicated. Rows are padded to a multiple of the device count with rows
  that add nothing (``_padding.pad_data``).
- **Responses or data sets** (:func:`shard_batch`): the leading batch axis
  of ``fit_reml_many``'s responses is split across devices; each device runs
  its share of the vmapped fits.

Under ``jax.distributed`` (several processes, possibly on several hosts)
every process runs the same program on the same host data; arrays are built
with ``jax.make_array_from_callback``, which takes from each process only the
shards its own devices hold, and results are gathered with
``multihost_utils.process_allgather``.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._index import DenseIndex, DesignIndex
from ._statistics import ModelData
from ._typing import HostOrDevice

__all__ = ["as_mesh", "n_devices", "replicate", "shard_batch", "shard_rows", "to_host"]


def as_mesh(devices: Any) -> Mesh | None:
    """A device mesh from what a user passes as ``devices=``.

    ``None``: no sharding (the default device). An int k: the first k of
    ``jax.devices()``. A sequence of devices: those. A ``jax.sharding.Mesh``:
    that mesh, all of its axes together (rows and batches are split over
    every device of it).
    """
    if devices is None:
        return None
    if isinstance(devices, Mesh):
        return devices
    if isinstance(devices, bool):
        raise TypeError("devices must be None, a number of devices, a list of devices or a Mesh")
    if isinstance(devices, numbers.Integral):  # int or a numpy integer
        available = jax.devices()
        if not 1 <= int(devices) <= len(available):
            raise ValueError(f"devices={devices}, but {len(available)} device(s) are available")
        devices = available[: int(devices)]
    try:
        devices = list(devices)
    except TypeError:  # not iterable (a float, ...)
        devices = None
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise TypeError("devices must be None, a number of devices, a list of jax devices or a Mesh")
    if len(set(devices)) < len(devices):
        raise ValueError(f"devices lists a device more than once: {devices}")
    return Mesh(np.asarray(devices), ("devices",))


def n_devices(mesh: Mesh | None) -> int:
    """How many devices ``mesh`` spans (1 without a mesh)."""
    return 1 if mesh is None else mesh.devices.size


def _place(value: Any, sharding: NamedSharding) -> jax.Array:
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _split_leading(mesh: Mesh, ndim: int) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(tuple(mesh.axis_names), *([None] * (ndim - 1))))


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Every array leaf of ``tree`` copied to every device of ``mesh``."""
    if mesh is None:
        return tree
    whole = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda a: _place(a, whole) if isinstance(a, jax.Array | np.ndarray) else a, tree)


def _replicated(mesh: Mesh):
    """A function placing one array on every device of ``mesh``."""
    return lambda a: replicate(a, mesh)


def shard_batch(values: Any, mesh: Mesh | None) -> Any:
    """Array leaves split along their leading (batch) axis across ``mesh``.

    The leading axis must be a multiple of the device count (pad first).
    """
    if mesh is None:
        return values
    return jax.tree.map(lambda a: _place(a, _split_leading(mesh, np.ndim(a))), values)


def shard_rows(data: ModelData, rows: Sequence[Any], mesh: Mesh | None) -> tuple[ModelData, list[Any]]:
    """``data``'s per-row arrays (and each array in ``rows``) split by rows; the rest replicated.

    The row count must be a multiple of the device count (``pad_data``).
    """
    if mesh is None:
        return data, list(rows)
    index = data.index

    def split_rows(a: HostOrDevice) -> jax.Array:
        return _place(a, _split_leading(mesh, np.ndim(a)))

    dense = index.dense
    if dense is not None:  # the per-row arrays split, the per-entry and per-pair ones replicated
        dense = DenseIndex(
            **{
                f.name: (split_rows if f.name in ("dense_cols", "entry") else _replicated(mesh))(getattr(dense, f.name))
                for f in dataclasses.fields(dense)
            }
        )
    new_index = DesignIndex(split_rows(index.codes), dense, n_levels=index.n_levels, layout=index.layout)
    placed = ModelData(
        X=split_rows(data.X),
        Z=tuple(split_rows(z) for z in data.Z),
        weights=split_rows(data.weights),
        index=new_index,
        structures=data.structures,
    )
    return placed, [None if r is None else split_rows(r) for r in rows]


def to_host(tree: Any) -> Any:
    """Array leaves as numpy arrays, whichever devices or processes hold them."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, tree)
    from jax.experimental import multihost_utils  # noqa: PLC0415 - only under jax.distributed

    def gather(a):
        if not isinstance(a, jax.Array):
            return np.asarray(a)
        if a.is_fully_addressable:
            return np.asarray(a)
        if a.sharding.is_fully_replicated:
            return np.asarray(a.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(a, tiled=True))

    return jax.tree.map(gather, tree)
