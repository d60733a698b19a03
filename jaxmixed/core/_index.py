"""The integer structure of a design, found once on the host.

Which entries of ``Z₁ᵀZ₂`` are non-zero and which pairs of them share a level
of factor 1 depend only on the level codes, not on any value: numpy finds
them once per design (:func:`design_index`), and every statistic is then
computed in JAX from them (``_statistics``). Factor 1 (the one with the most
levels) is handled per level; the factors after it form one dense block
(:class:`DenseLayout`) whose structure is a :class:`DenseIndex`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import equinox as eqx
import numpy as np
from jaxtyping import Int

from ._typing import HostOrDevice

__all__ = ["DenseIndex", "DenseLayout", "DesignIndex", "dense_block_bytes", "design_index"]


@dataclasses.dataclass(frozen=True)
class DenseLayout:
    """Where the factors after the first sit in the dense block.

    ``blocks[k] = (offset, n_levels, q)`` for factor k+2: its random effects
    occupy columns ``offset + level * q + i`` of the Q₂ dense columns.
    """

    blocks: tuple[tuple[int, int, int], ...] = ()

    @property
    def size(self) -> int:
        return sum(j * q for _, j, q in self.blocks)


class DenseIndex(eqx.Module):
    """The integer structure of the dense part: the factors after the first.

    Shapes (n rows; K = Σ_{f≥2} q_f dense columns per row; E stored non-zeros
    of ``Z₁ᵀZ₂``; P pairs of them sharing a level of factor 1, upper triangle):

    - ``dense_cols`` (n, K): the dense columns each row touches.
    - ``entry`` (n, K): which stored non-zero of ``Z₁ᵀZ₂`` each of them adds to.
    - ``cross_level``, ``cross_column`` (E,): that non-zero's level and column.
    - ``pair_first``, ``pair_second``, ``pair_target``, ``pair_level`` (P,):
      the pairs sorted by their target entry of the Q₂×Q₂ matrix; the
      ``*_by_level`` arrays hold the same pairs sorted by level.
    """

    dense_cols: Int[HostOrDevice, "n K"]
    entry: Int[HostOrDevice, "n K"]
    cross_level: Int[HostOrDevice, " E"]
    cross_column: Int[HostOrDevice, " E"]
    pair_first: Int[HostOrDevice, " P"]
    pair_second: Int[HostOrDevice, " P"]
    pair_target: Int[HostOrDevice, " P"]
    pair_level: Int[HostOrDevice, " P"]
    first_by_level: Int[HostOrDevice, " P"]
    second_by_level: Int[HostOrDevice, " P"]
    target_by_level: Int[HostOrDevice, " P"]
    level_by_level: Int[HostOrDevice, " P"]

    @property
    def n_entries(self) -> int:
        """E, the stored non-zeros of ``Z₁ᵀZ₂``."""
        return self.cross_level.shape[0]

    @property
    def n_pairs(self) -> int:
        """P, the pairs of non-zeros that share a level of factor 1."""
        return self.pair_target.shape[0]


class DesignIndex(eqx.Module):
    """The integer structure of a design, found once on the host.

    ``codes`` (n,): level of factor 1 of each row; ``dense``: the structure of
    the factors after the first (:class:`DenseIndex`), None with one grouping
    factor; ``n_levels``: J₁; ``layout``: where the later factors sit in the
    dense block.
    """

    codes: Int[HostOrDevice, " n"]
    dense: DenseIndex | None
    n_levels: int = eqx.field(static=True)
    layout: DenseLayout = eqx.field(static=True)


def _available_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 * 2**30


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} bytes"


def dense_block_bytes(q2: int, n_pairs: int, q1: int = 1, itemsize: int = 8) -> int:
    """Memory an objective evaluation with its gradient needs for the dense part.

    The Schur complement, its Cholesky factor, its inverse and their cotangents
    are about six Q₂×Q₂ arrays; each stored pair holds q₁² products and four
    indices, in two orders, plus a value and its cotangent per evaluation.
    """
    return 6 * q2 * q2 * itemsize + n_pairs * (2 * (q1 * q1 * itemsize + 16) + 2 * itemsize)


def _layout(n_levels: Sequence[int], q: Sequence[int]) -> DenseLayout:
    blocks, offset = [], 0
    for j, qf in zip(n_levels[1:], q[1:], strict=True):
        blocks.append((offset, int(j), int(qf)))
        offset += int(j) * int(qf)
    return DenseLayout(tuple(blocks))


def design_index(
    codes: Sequence[np.ndarray],
    n_levels: Sequence[int],
    q: Sequence[int],
    *,
    memory_limit: int | None = None,
    itemsize: int = 8,
) -> DesignIndex:
    """The integer structure of a design (host: numpy arrays), checked against memory.

    Args:
        codes: per factor, (n,) level codes in ``[0, n_levels[f])``; factor 1
            (the one with the most levels) first.
        n_levels: per factor, its number of levels. q: per factor, q_f.
        memory_limit: bytes allowed for the dense block of the factors after
            the first; default half the machine's memory.
        itemsize: bytes per float of the statistics (8 for float64).
    """
    layout = _layout(n_levels, q)
    q2, q1 = layout.size, int(q[0])
    codes1 = np.asarray(codes[0], np.int64)
    n = len(codes1)
    if q2 == 0:  # one grouping factor: no dense part
        return DesignIndex(codes1.astype(np.int32), None, n_levels=int(n_levels[0]), layout=layout)
    cols = _dense_columns(codes, layout)
    # Non-zeros of Z₁ᵀZ₂, keyed by (level of factor 1, dense column): level-major.
    key = codes1[:, None] * q2 + cols
    unique_key, entry = np.unique(key.ravel(), return_inverse=True)
    cross_level = unique_key // q2
    cross_column = unique_key % q2
    per_level = np.bincount(cross_level, minlength=n_levels[0])
    _check_memory(q2, per_level, q1, itemsize, memory_limit)
    first, second = _cross_pairs(per_level, cross_level, cross_column)
    target = cross_column[first] * q2 + cross_column[second]
    by_target = np.argsort(target, kind="stable")
    index_type = np.int32 if q2 * q2 < 2**31 else np.int64

    def as_int(a: np.ndarray, t: type[np.signedinteger] = np.int32) -> np.ndarray:
        return a.astype(t)

    dense = DenseIndex(
        dense_cols=as_int(cols, index_type),
        entry=as_int(entry.reshape(n, -1)),
        cross_level=as_int(cross_level),
        cross_column=as_int(cross_column),
        pair_first=as_int(first[by_target]),
        pair_second=as_int(second[by_target]),
        pair_target=as_int(target[by_target], index_type),
        pair_level=as_int(cross_level[first][by_target]),
        first_by_level=as_int(first),
        second_by_level=as_int(second),
        target_by_level=as_int(target, index_type),
        level_by_level=as_int(cross_level[first]),
    )
    return DesignIndex(as_int(codes1), dense, n_levels=int(n_levels[0]), layout=layout)


def _dense_columns(codes: Sequence[np.ndarray], layout: DenseLayout) -> np.ndarray:
    """(n, K): the dense columns each row touches, factor by factor after the first."""
    return np.concatenate(
        [
            (off + np.asarray(codes[f + 1], np.int64) * qf)[:, None] + np.arange(qf)[None, :]
            for f, (off, _, qf) in enumerate(layout.blocks)
        ],
        axis=1,
    )


def _check_memory(q2: int, per_level: np.ndarray, q1: int, itemsize: int, memory_limit: int | None) -> None:
    """A clear error when the dense block and its cross pairs would not fit in memory."""
    n_pairs = int(np.sum(per_level.astype(np.int64) * (per_level + 1) // 2))
    limit = _available_memory() // 2 if memory_limit is None else memory_limit
    need = dense_block_bytes(q2, n_pairs, q1, itemsize)
    if need > limit:
        raise MemoryError(
            f"the random effects of the factors after the first need a dense block "
            f"of {q2} x {q2} with {n_pairs} cross pairs: about {_bytes(need)}, "
            f"over the limit of {_bytes(limit)} (raise memory_limit to allow it)"
        )


def _cross_pairs(
    per_level: np.ndarray, cross_level: np.ndarray, cross_column: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(first, second): every pair of stored non-zeros sharing a level of factor 1.

    Entries are sorted by level; the Q₂×Q₂ sum is symmetric, so only the pairs
    on or above its diagonal are kept.
    """
    starts = np.concatenate([[0], np.cumsum(per_level)[:-1]])
    reps = per_level[cross_level]
    first = np.repeat(np.arange(len(cross_level)), reps)
    within = np.arange(len(first)) - np.repeat(np.cumsum(reps) - reps, reps)
    second = np.repeat(starts[cross_level], reps) + within
    upper = cross_column[first] <= cross_column[second]
    return first[upper], second[upper]


