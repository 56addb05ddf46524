"""Feature caches: keys, read-only memmaps, resuming a killed embedding, refusing bad entries."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tamis.density.cache import cached_features, data_hash, load_cached_features
from tamis.density.extractors import CallableExtractor, extract_features


class Counting:
    """An extractor that records the batch sizes it was called with."""

    def __init__(self, name: str = "count", weight: float = 1.0) -> None:
        self.calls: list[int] = []
        self.weight = weight
        self.inner = CallableExtractor(self._f, name=f"{name}-{weight}")

    def _f(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        flat = x.flatten(1)
        return torch.stack([flat.mean(1), flat.std(1), flat[:, 0]], 1) * self.weight

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    @property
    def dim(self) -> int | None:
        return 3

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


@pytest.fixture
def images():
    return torch.rand(23, 1, 5, 5, generator=torch.Generator().manual_seed(0))


class InterruptedEmbeddingError(Exception):
    pass


def _stop_after(n_calls: int):
    seen = []

    def progress(done: int) -> None:
        seen.append(done)
        if len(seen) == n_calls:
            raise InterruptedEmbeddingError

    return progress, seen


def test_cache_round_trip_and_layout(tmp_path, images):
    ex = Counting()
    ref = extract_features(ex, images)
    ex.calls.clear()
    got = cached_features(ex, images, tmp_path, batch_size=10)
    assert isinstance(got, np.memmap) and not got.flags.writeable
    np.testing.assert_array_equal(got, ref)
    assert ex.calls == [10, 10, 3]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".npy")
    meta = json.loads((tmp_path / files[0]).read_text())
    assert meta["fingerprint"] == ex.fingerprint and meta["shape"] == [23, 3]
    assert meta["dtype"] == "float32" and meta["data"] == data_hash(images) and meta["created"]
    again = cached_features(ex, images, tmp_path, batch_size=10)
    assert ex.calls == [10, 10, 3]  # not called again
    np.testing.assert_array_equal(again, ref)
    # other data, or another extractor, is another entry
    cached_features(ex, images[:20], tmp_path)
    cached_features(Counting(weight=2.0), images, tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 3
    # the same images as uint8 / numpy hash differently but give the same features
    u8 = (images.numpy() * 255).round().astype(np.uint8)
    np.testing.assert_allclose(cached_features(ex, u8, tmp_path),
                               extract_features(ex, u8), rtol=0, atol=0)


def test_killed_embedding_resumes_where_it_stopped(tmp_path, images):
    ex = Counting()
    progress, seen = _stop_after(2)
    with pytest.raises(InterruptedEmbeddingError):
        cached_features(ex, images, tmp_path, batch_size=5, progress=progress)
    assert ex.calls == [5, 5] and seen == [5, 10]
    assert not list(tmp_path.glob("feat-????????????????????????.npy"))  # nothing final yet
    assert len(list(tmp_path.glob("*.partial.npy"))) == 1
    ex.calls.clear()
    seen2: list[int] = []
    got = cached_features(ex, images, tmp_path, batch_size=5, progress=seen2.append)
    assert ex.calls == [5, 5, 3]  # only the missing batches
    assert seen2 == [10, 15, 20, 23]
    np.testing.assert_array_equal(got, extract_features(Counting(), images))
    assert not list(tmp_path.glob("*.partial*"))


def test_iterable_of_batches_needs_a_key_and_resumes(tmp_path, images):
    ex = Counting()
    batches = list(images.split(4))
    with pytest.raises(ValueError, match="needs data_key"):
        cached_features(ex, iter(batches), tmp_path)
    progress, _ = _stop_after(3)
    with pytest.raises(InterruptedEmbeddingError):
        cached_features(ex, iter(batches), tmp_path, data_key="set-a", progress=progress)
    assert ex.calls == [4, 4, 4]
    ex.calls.clear()
    got = cached_features(ex, iter(batches), tmp_path, data_key="set-a")
    assert ex.calls == [4, 4, 3]
    assert got.shape == (23, 3)  # the spare capacity of the partial file is trimmed
    np.testing.assert_array_equal(got, extract_features(Counting(), images))
    # a different data set under a stale key cannot resume silently
    progress, _ = _stop_after(2)
    with pytest.raises(InterruptedEmbeddingError):
        cached_features(ex, iter(batches), tmp_path, data_key="set-b", progress=progress)
    with pytest.raises(ValueError, match="first 2 batches hold 6 rows, 8 were embedded"):
        cached_features(ex, iter(images.split(3)), tmp_path, data_key="set-b")


def test_cache_from_another_extractor_is_refused(tmp_path, images):
    a, b = Counting(weight=1.0), Counting(weight=3.0)
    cached_features(a, images, tmp_path)
    (npy,) = tmp_path.glob("*.npy")
    assert load_cached_features(npy, a).shape == (23, 3)
    with pytest.raises(ValueError, match=f"written by extractor {a.fingerprint}, not "
                                         f"{b.fingerprint}"):
        load_cached_features(npy, b)


def test_corrupted_or_missing_cache_files(tmp_path, images):
    ex = Counting()
    cached_features(ex, images, tmp_path)
    (npy,) = tmp_path.glob("*.npy")
    meta = npy.with_suffix(".json")
    good_meta, good_npy = meta.read_text(), npy.read_bytes()

    meta.write_text("{not json")
    with pytest.raises(ValueError, match="metadata .* is corrupted"):
        load_cached_features(npy)
    with pytest.raises(ValueError, match="is corrupted"):
        cached_features(ex, images, tmp_path)  # the cached entry is checked, not trusted
    meta.write_text(json.dumps({**json.loads(good_meta), "shape": [22, 3]}))
    with pytest.raises(ValueError, match=r"has shape \(23, 3\) but its metadata says \(22, 3\)"):
        load_cached_features(npy)
    meta.unlink()
    with pytest.raises(ValueError, match="metadata .* is missing"):
        load_cached_features(npy)
    meta.write_text(good_meta)
    npy.write_bytes(good_npy[:150])
    with pytest.raises(ValueError, match="corrupted or truncated"):
        load_cached_features(npy)
    npy.write_bytes(b"garbage garbage garbage")
    with pytest.raises(ValueError, match="corrupted or truncated"):
        load_cached_features(npy)
    npy.unlink()
    with pytest.raises(ValueError, match="is missing"):
        load_cached_features(npy)


def test_bad_extractor_output_is_not_cached(tmp_path, images):
    def nan_after_first(x: torch.Tensor) -> torch.Tensor:
        f = x.flatten(1)[:, :2].clone()
        if x.shape[0] < 10:
            f[0] = float("nan")
        return f

    ex = CallableExtractor(nan_after_first, name="nanny")
    with pytest.raises(ValueError, match=r"nanny returned NaN or infinite features in 1 of 3"):
        cached_features(ex, images, tmp_path, batch_size=10)
    assert not list(tmp_path.glob("feat-????????????????????????.npy"))
    with pytest.raises(ValueError, match="has no fingerprint"):
        cached_features(lambda x: x.flatten(1), images, tmp_path)
