"""Reading shard rows: the one-pass conversion equals copy-then-convert and owns its memory."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from tamis.attribution.store import to_torch


@pytest.mark.parametrize("stored,target", [("float16", torch.float32),
                                           ("float32", torch.float64),
                                           ("float32", torch.float32),
                                           ("bfloat16", torch.float32)])
def test_rows_from_a_memmap_equal_the_copy_and_never_alias_the_file(tmp_path, stored, target):
    rng = np.random.default_rng(0)
    values = torch.from_numpy(rng.standard_normal((6, 5)).astype(np.float32))
    if stored == "bfloat16":
        raw = values.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    else:
        raw = values.numpy().astype(stored)
    np.save(tmp_path / "s.npy", raw)
    arr = np.load(tmp_path / "s.npy", mmap_mode="r")
    reference = to_torch(arr[1:4], stored).to(target)  # copy, then convert
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "non-writable array" warning escapes
        fast = to_torch(arr[1:4], stored, target)
    assert fast.dtype == target and torch.equal(fast, reference)
    fast.add_(1.0)  # owned memory: writing must neither crash nor change the file
    assert np.array_equal(np.load(tmp_path / "s.npy"), raw)


def test_prefetch_keeps_order_raises_the_producers_error_and_stops_early():
    import threading

    from tamis.attribution.store import prefetch

    assert list(prefetch(iter(range(50)))) == list(range(50))

    def broken():
        yield 1
        raise ValueError("shard 3 is corrupted")

    got = []
    with pytest.raises(ValueError, match="shard 3 is corrupted"):
        for x in prefetch(broken()):
            got.append(x)
    assert got == [1]
    produced = []

    def slow():
        for i in range(1000):
            produced.append(i)
            yield i

    gen = prefetch(slow())
    assert next(gen) == 0
    gen.close()  # the consumer stops early: the producer stops too
    assert len(produced) < 10
    assert not any(t.name == "tamis-store-prefetch" and t.is_alive()
                   for t in threading.enumerate())
