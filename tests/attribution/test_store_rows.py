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
