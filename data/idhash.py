"""64-bit hashes of Arrow string ids read straight from the array's buffers (numba), for the global
duplicate check: no Python string object per id (pandas' hash of a million string ids costs ~0.6 s,
this ~10 ms). Equal ids hash equal; a collision only adds a duplicate candidate, compared exactly later.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
from numba import njit


@njit(cache=True, nogil=True)
def _fnv1a_mixed(offsets: np.ndarray, data: np.ndarray, out: np.ndarray) -> None:
    """FNV-1a over each string's bytes, then splitmix64's finaliser (spreads the bits for `h % buckets`)."""
    for i in range(out.shape[0]):
        h = np.uint64(14695981039346656037)
        for k in range(offsets[i], offsets[i + 1]):
            h = (h ^ np.uint64(data[k])) * np.uint64(1099511628211)
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
        out[i] = h if h != np.uint64(0) else np.uint64(1)  # 0 is kept for a null id


def string_hashes(arr: pa.Array) -> np.ndarray:
    """A non-zero 64-bit hash per value of a string / large_string Arrow array (nulls: 0)."""
    n = len(arr)
    out = np.zeros(n, dtype=np.uint64)
    if n == 0:
        return out
    _, offsets, data = arr.buffers()[:3]
    wide = pa.types.is_large_string(arr.type)
    offs = np.frombuffer(offsets, dtype=np.int64 if wide else np.int32)[arr.offset: arr.offset + n + 1]
    chars = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    _fnv1a_mixed(offs, chars, out)
    if arr.null_count:
        out[np.asarray(arr.is_null(), dtype=bool)] = 0
    return out
