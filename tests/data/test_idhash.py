"""Event-id hashes from Arrow buffers: equal ids hash equal wherever they sit, nulls are 0, ids rarely collide."""
import numpy as np
import pyarrow as pa

from linerisk.data.idhash import string_hashes


def test_equal_ids_hash_equal_across_slices_chunks_and_large_strings():
    ids = pa.array(["7-1", None, "12-0", "7-1", "", "12-0"], pa.string())
    h = string_hashes(ids)
    assert h[0] == h[3] and h[2] == h[5] and h[1] == 0 and (h[[0, 2, 4]] != 0).all()
    assert len({h[0], h[2], h[4]}) == 3
    np.testing.assert_array_equal(string_hashes(ids.slice(2)), h[2:])  # an offset into the buffers
    np.testing.assert_array_equal(string_hashes(ids.cast(pa.large_string())), h)


def test_a_million_distinct_ids_get_distinct_hashes():
    ids = pa.array([f"{u}-{k}" for u in range(100_000) for k in range(10)], pa.string())
    assert len(np.unique(string_hashes(ids))) == len(ids)
