"""Unique rows of small integer arrays by one 1-D sort on packed keys: ``np.unique(axis=0)``
sorts rows as opaque records and costs several times more (voxel grids, graph edges, label
cells and id pairs all go through here)."""

from __future__ import annotations

import numpy as np


def unique_values(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` of a 1-D array by one sort. numpy 2.4's ``np.unique`` without
    return arrays hashes integers instead: 4.5 s for 2.6M keys of 40 bits on this machine (a
    room's k-NN edges), against 70 ms for the sort; and it is behind every ``unique_rows``."""
    s = np.sort(np.asarray(values).reshape(-1))
    if len(s) < 2:
        return s
    keep = np.empty(len(s), bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def unique_rows(rows: np.ndarray, return_index: bool = False, return_inverse: bool = False,
                return_counts: bool = False):
    """Same results as ``np.unique(rows, axis=0, ...)`` (rows in lexicographic order) for an
    (N, C) integer array; falls back to it when the packed key would not fit in 64 bits."""
    rows = np.asarray(rows)
    if rows.ndim != 2 or not np.issubdtype(rows.dtype, np.integer) or len(rows) == 0:
        return np.unique(rows, axis=0, return_index=return_index, return_inverse=return_inverse,
                         return_counts=return_counts)
    low = rows.min(0).astype(np.int64)
    span = rows.max(0).astype(np.int64) - low + 1
    if float(np.prod(span.astype(np.float64))) >= 2.0 ** 62:
        return np.unique(rows, axis=0, return_index=return_index, return_inverse=return_inverse,
                         return_counts=return_counts)
    key = np.zeros(len(rows), np.int64)
    for c in range(rows.shape[1]):  # lexicographic: the first column is the most significant
        key = key * span[c] + (rows[:, c].astype(np.int64) - low[c])
    out = (np.unique(key, return_index=return_index, return_inverse=return_inverse, return_counts=return_counts)
           if return_index or return_inverse or return_counts else unique_values(key))
    keys = out[0] if isinstance(out, tuple) else out
    unpacked = np.empty((len(keys), rows.shape[1]), rows.dtype)
    rest = keys.copy()
    for c in range(rows.shape[1] - 1, -1, -1):
        unpacked[:, c] = rest % span[c] + low[c]
        rest //= span[c]
    if not isinstance(out, tuple):
        return unpacked
    extra = list(out[1:])
    if return_inverse:  # numpy >= 2 returns an (N, 1) inverse for axis=0; callers reshape(-1) either way
        k = 1 if return_index else 0
        extra[k] = extra[k].reshape(-1)
    return (unpacked, *extra)


def _row_items(a: np.ndarray) -> np.ndarray:
    """A C-contiguous 2-D array seen as one opaque item per row (a view, no copy)."""
    return a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).reshape(len(a))


def _rowwise(a: np.ndarray) -> bool:
    return a.ndim == 2 and a.shape[1] > 0 and a.flags.c_contiguous


def _row_index(index) -> bool:
    """Whether ``index`` is what the whole-row copies take: a 1-D integer or boolean array (anything
    else, a slice, a list, a scalar, goes to numpy's own indexing)."""
    return isinstance(index, np.ndarray) and index.ndim == 1 and (index.dtype == bool or
                                                                  np.issubdtype(index.dtype, np.integer))


def _positions(index: np.ndarray, n: int) -> np.ndarray:
    """Row positions of ``index``, each checked to be in range (one clear ``IndexError``)."""
    if index.dtype == bool:
        if index.shape != (n,):
            raise IndexError(f"boolean index of shape {index.shape} does not fit {n} rows")
        return np.flatnonzero(index)
    if len(index) and (int(index.max()) >= n or int(index.min()) < -n):
        raise IndexError(f"row index out of range for {n} rows")
    return index


def take_rows(a: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``a[index]`` (an integer or boolean index over rows) in one copy that moves each row as one
    item. numpy 2.4's fancy indexing of a 2-D array moves a row's elements one by one: 190k rows of
    3 float32 took 4-5 ms, against 0.5 ms this way, and the live map takes such rows under its lock."""
    if not _rowwise(a) or not _row_index(index):
        return a[index]
    return np.take(_row_items(a), _positions(index, len(a))).view(a.dtype).reshape(-1, a.shape[1])
