"""Feature caches on disk: embed a large reference set once, resume a killed embedding.

A cache entry is ``<cache_dir>/<key>.npy`` (float32 ``(N, D)``) plus ``<key>.json`` (extractor
fingerprint, data hash or key, shape, dtype, creation time). The key combines the extractor's
:attr:`~tamis.density.extractors.FeatureExtractor.fingerprint` and a hash of the data (sha256
of the array bytes, in chunks) or, for an iterable of batches, a ``data_key`` the caller gives.

While embedding, features go into ``<key>.partial.npy`` (an ``np.lib.format.open_memmap``)
and ``<key>.partial.json`` records how many rows (and batches) are flushed to it, so a killed
run resumes where it stopped; the finished file is renamed onto ``<key>.npy`` atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tamis._io import write_text_atomic
from tamis.density.extractors import as_images, check_features, extractor_name

__all__ = ["cache_key", "cached_features", "data_hash", "load_cached_features"]

_CHUNK_BYTES = 64 << 20


def data_hash(images: object) -> str:
    """sha256 hex digest of an array's dtype, shape and bytes, read in chunks of rows.

    Works on tensors, numpy arrays and read-only memmaps without copying the whole array.
    """
    if isinstance(images, torch.Tensor):
        t = images.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        arr: np.ndarray = t.numpy()
    else:
        arr = np.asarray(images)
    h = hashlib.sha256(f"{arr.dtype.str}|{arr.shape}".encode())
    if arr.ndim == 0:
        h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()
    row = max(1, arr[:1].nbytes)
    step = max(1, _CHUNK_BYTES // row)
    for s in range(0, arr.shape[0], step):
        h.update(np.ascontiguousarray(arr[s : s + step]).tobytes())
    return h.hexdigest()


def cache_key(fingerprint: str, data: str) -> str:
    """File stem of a cache entry: ``feat-`` + 24 hex of sha256(fingerprint, data hash)."""
    return "feat-" + hashlib.sha256(f"{fingerprint}\0{data}".encode()).hexdigest()[:24]


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"feature cache metadata {path} is missing")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"feature cache metadata {path} is corrupted ({err})") from None
    if not isinstance(meta, dict) or not {"fingerprint", "shape", "dtype"} <= set(meta):
        raise ValueError(f"feature cache metadata {path} is corrupted (needs fingerprint, "
                         "shape and dtype)")
    return meta


def load_cached_features(path: str | Path, extractor: object = None) -> np.ndarray:
    """Open a finished cache entry as a read-only memmap, checking it against its metadata.

    Args:
        path: the ``<key>.npy`` file (or its ``.json`` partner, or the stem).
        extractor: if given, its fingerprint must be the one that wrote the cache.

    Returns:
        ``np.load(path, mmap_mode="r")``: float32 ``(N, D)``.

    Raises:
        ValueError: if the ``.npy`` or ``.json`` is missing or corrupted, the array's shape
            or dtype disagrees with the metadata, or another extractor wrote it.

    """
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".npy", ".json") else path
    npy, meta_path = stem.with_name(stem.name + ".npy"), stem.with_name(stem.name + ".json")
    if not npy.is_file():
        raise ValueError(f"feature cache {npy} is missing")
    meta = _read_json(meta_path)
    if extractor is not None:
        fp = str(getattr(extractor, "fingerprint", ""))
        if fp != meta["fingerprint"]:
            raise ValueError(f"feature cache {npy} was written by extractor "
                             f"{meta['fingerprint']}, not {fp} ({extractor_name(extractor)})")
    try:
        arr = np.load(npy, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"feature cache {npy} is corrupted or truncated ({err}); delete it "
                         "to recompute") from None
    if list(arr.shape) != list(meta["shape"]):
        raise ValueError(f"feature cache {npy} has shape {tuple(arr.shape)} but its metadata "
                         f"says {tuple(meta['shape'])}; delete both files to recompute")
    if str(arr.dtype) != str(meta["dtype"]):
        raise ValueError(f"feature cache {npy} has dtype {arr.dtype} but its metadata says "
                         f"{meta['dtype']}")
    return arr


def _open_partial(path: Path, rows: int, dim: int) -> np.memmap:
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, dim))


def _resize(path: Path, mm: np.memmap, rows: int, capacity: int) -> np.memmap:
    """A partial file of ``capacity`` rows holding the first ``rows`` of ``mm`` (atomic)."""
    tmp = path.with_name(path.name + ".resize.npy")
    new = _open_partial(tmp, capacity, mm.shape[1])
    for s in range(0, rows, 65536):
        new[s : min(rows, s + 65536)] = mm[s : min(rows, s + 65536)]
    new.flush()
    del mm
    os.replace(tmp, path)
    return new


def cached_features(
    extractor: Callable[[torch.Tensor], torch.Tensor],
    images_or_batches: object,
    cache_dir: str | Path,
    *,
    data_key: str | None = None,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Features of a data set, computed once and cached on disk (resumable).

    Args:
        extractor: an extractor with a ``fingerprint`` (see :mod:`tamis.density.extractors`).
        images_or_batches: an array or tensor of images (``(N, C, H, W)`` / ``(N, H, W)``,
            floats in [0, 1] or uint8; a numpy memmap is read batch by batch), or an iterable
            of image batches (then ``data_key`` is required, and a resumed run re-reads the
            batches already embedded without calling the extractor on them).
        cache_dir: folder of the cache entries.
        data_key: names the data instead of hashing it (required for iterables; for arrays it
            skips the hash -- you then vouch that the key changes when the data does).
        batch_size: images per extractor call (arrays only).
        progress: called with the number of rows done after each batch (also with the rows
            found already done when resuming).

    Returns:
        A read-only ``np.load(mmap_mode="r")`` memmap of float32 ``(N, D)`` features.

    Raises:
        ValueError: without ``data_key`` for an iterable; an extractor without a
            fingerprint; a misbehaving extractor; a corrupted cache entry.

    """
    fp = getattr(extractor, "fingerprint", None)
    if not fp:
        raise ValueError(f"extractor {extractor_name(extractor)} has no fingerprint: wrap it "
                         "in tamis.density.extractors.CallableExtractor(fn, name=...)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    is_array = isinstance(images_or_batches, (torch.Tensor, np.ndarray))
    if not is_array:
        if data_key is None:
            raise ValueError("cached_features of an iterable of batches needs data_key=...: "
                             "the batches cannot be hashed before they are read")
        if not isinstance(images_or_batches, Iterable):
            raise ValueError(f"images must be an array, a tensor or an iterable of batches, "
                             f"got {type(images_or_batches).__name__}")
    dkey = ("key:" + data_key) if data_key is not None else data_hash(images_or_batches)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(str(fp), dkey)
    final = cache_dir / f"{key}.npy"
    meta_path = cache_dir / f"{key}.json"
    if final.is_file():
        return load_cached_features(final, extractor)
    part = cache_dir / f"{key}.partial.npy"
    record_path = cache_dir / f"{key}.partial.json"
    name = extractor_name(extractor)
    dim = getattr(extractor, "dim", None)

    rows, batches, mm = 0, 0, None
    if part.is_file() and record_path.is_file():
        try:
            rec = json.loads(record_path.read_text())
            if rec.get("fingerprint") == fp and rec.get("data") == dkey:
                mm = np.load(part, mmap_mode="r+")
                rows, batches = int(rec["rows"]), int(rec["batches"])
                if mm.dtype != np.float32 or mm.ndim != 2 or rows > mm.shape[0]:
                    mm, rows, batches = None, 0, 0
        except (ValueError, OSError, KeyError, json.JSONDecodeError):
            mm, rows, batches = None, 0, 0  # an unreadable partial file: start over
    if mm is None:
        rows, batches = 0, 0

    def record() -> None:
        write_text_atomic(record_path, json.dumps(
            {"fingerprint": fp, "data": dkey, "rows": rows, "batches": batches}))

    if rows and progress is not None:
        progress(rows)
    total = len(images_or_batches) if is_array else None  # type: ignore[arg-type]
    if is_array and total == 0:
        raise ValueError("no images to embed (N = 0)")
    source: Iterable[Any]
    if is_array:
        source = (images_or_batches[s : s + batch_size]  # type: ignore[index]
                  for s in range(rows, total, batch_size))
    else:
        source = _skip(images_or_batches, batches, rows)  # type: ignore[arg-type]
    with torch.no_grad():
        for raw in source:
            batch = as_images(raw)
            f = check_features(extractor(batch), batch.shape[0], name=name, dim=dim)
            f_np = f.detach().float().cpu().numpy()
            dim = int(f_np.shape[1])
            if mm is None:
                cap = total if total is not None else max(1024, 16 * f_np.shape[0])
                mm = _open_partial(part, cap, dim)
            elif mm.shape[1] != dim:
                raise ValueError(f"extractor {name} returned width {dim}, earlier batches "
                                 f"had {mm.shape[1]}")
            if rows + f_np.shape[0] > mm.shape[0]:
                mm = _resize(part, mm, rows, max(rows + f_np.shape[0], 2 * mm.shape[0]))
            mm[rows : rows + f_np.shape[0]] = f_np
            mm.flush()
            rows += f_np.shape[0]
            batches += 1
            record()
            if progress is not None:
                progress(rows)
    if mm is None:
        raise ValueError("no images to embed (the iterable gave no batches)")
    if mm.shape[0] != rows:  # an iterable: trim the spare capacity
        mm = _resize(part, mm, rows, rows)
    del mm
    with open(part, "rb") as fh:
        os.fsync(fh.fileno())
    meta = {"fingerprint": fp, "extractor": name, "data": dkey, "shape": [rows, dim],
            "dtype": "float32", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_text_atomic(meta_path, json.dumps(meta, indent=2))
    os.replace(part, final)
    record_path.unlink(missing_ok=True)
    return load_cached_features(final, extractor)


def _skip(batches: Iterable[Any], n_batches: int, n_rows: int) -> Iterable[Any]:
    """Yield the batches after the first ``n_batches`` (which must hold ``n_rows`` rows)."""
    seen = 0
    it = iter(batches)
    for i in range(n_batches):
        try:
            b = next(it)
        except StopIteration:
            raise ValueError(f"resuming a feature cache: the batches ended after {i}, but "
                             f"{n_batches} were embedded before (same data_key, other data?)"
                             ) from None
        seen += len(b)
    if seen != n_rows:
        raise ValueError(f"resuming a feature cache: the first {n_batches} batches hold {seen} "
                         f"rows, {n_rows} were embedded before (same data_key, other data?)")
    yield from it
