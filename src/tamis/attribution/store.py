"""The on-disk store: sharded, memory-mappable rows of per-example factors.

Layout of a store folder (documented in ``docs/attribution_store.md``)::

    manifest.json          kind, rank c, dtype, layers and their row offsets, projection
                           seed and dims, model fingerprint, shard list with checksums
    shard-00000.npy        (n, row_length) array, one row per training example
    shard-00001.npy        ...

A LoRIF row holds, for each layer in order, L (d1 x c, row-major) then R (d2 x c); a dense
(LoGRA) row holds G (d1 x d2). bfloat16 rows are stored as uint16 bit patterns; int8 rows
are block-quantised (blocks of 64 numbers, each with its float32 absmax scale, the scales'
bytes appended to the row: 1.06 bytes a number, :func:`stored_length`). Every shard
is written to a temporary file and renamed into place, then the manifest is replaced
atomically, so an interrupted build leaves only complete, listed shards and resumes after
them.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import queue
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tamis._io import atomic_path, write_text_atomic
from tamis.attribution.errors import StoreError, StoreMismatchError
from tamis.attribution.projection import LayerSpec

FORMAT = "tamis.attribution.store"
VERSION = 1
METRIC_FILE = "truncation-metric.safetensors"  # the whitened truncation's covariances
MANIFEST = "manifest.json"

_NUMPY_DTYPES = {
    "float16": np.float16,
    "float32": np.float32,
    "float64": np.float64,
    "bfloat16": np.uint16,
    "int8": np.int8,
}
_TORCH_DTYPES = {
    "float16": torch.float16,
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
}
QUANT_BLOCK = 64  # numbers per int8 block, each with one float32 scale


def stored_length(row_length: int, dtype_name: str) -> int:
    """Columns of a shard row on disk.

    ``row_length`` itself, or for int8 the padded blocks plus four bytes of float32 scale
    per block.
    """
    if dtype_name != "int8":
        return row_length
    blocks = -(-row_length // QUANT_BLOCK)
    return blocks * (QUANT_BLOCK + 4)


def bytes_per_number(dtype_name: str) -> float:
    """Bytes one stored number takes on disk, scales included (int8: 68 / 64)."""
    item = np.dtype(_NUMPY_DTYPES[dtype_name]).itemsize
    return stored_length(QUANT_BLOCK, dtype_name) * item / QUANT_BLOCK


def _quantize_int8(rows: torch.Tensor) -> np.ndarray:
    """(n, L) floats -> (n, stored_length(L)) int8: blockwise absmax codes, then scales."""
    n, length = rows.shape
    blocks = -(-length // QUANT_BLOCK)
    x = torch.zeros(n, blocks * QUANT_BLOCK, dtype=torch.float32)
    x[:, :length] = rows.detach().cpu().float()
    x = x.reshape(n, blocks, QUANT_BLOCK)
    scale = x.abs().amax(-1) / 127
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.round(x / safe.unsqueeze(-1)).clamp_(-127, 127).to(torch.int8)
    return torch.cat([codes.reshape(n, -1), scale.contiguous().view(torch.int8)], 1).numpy()


def _dequantize_int8(view: np.ndarray, dtype: torch.dtype | None) -> torch.Tensor:
    """Inverse of :func:`_quantize_int8` (padded to whole blocks; callers slice by layout)."""
    with warnings.catch_warnings():  # a read-only memmap: torch warns, we never write
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(view)
    n, width = t.shape
    if width % (QUANT_BLOCK + 4):
        raise StoreError(f"int8 rows of width {width} are not whole quantisation blocks")
    blocks = width // (QUANT_BLOCK + 4)
    codes = t[:, : blocks * QUANT_BLOCK].reshape(n, blocks, QUANT_BLOCK)
    scale = t[:, blocks * QUANT_BLOCK :].contiguous().view(torch.float32)
    out = codes.to(torch.float32).mul_(scale.unsqueeze(-1))
    return out.reshape(n, -1).to(dtype or torch.float32)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def write_json_atomic(path: Path, obj: dict) -> None:
    """Replace ``path`` with ``obj`` as JSON, atomically."""
    write_text_atomic(path, json.dumps(obj, indent=1))


def prefetch(items: Iterator, depth: int = 1) -> Iterator:
    """Yield ``items`` while a background thread produces up to ``depth`` ahead.

    An exception in the producer is raised in the consumer; stopping early (``close`` or
    garbage collection of the generator) stops the producer after its current item.
    """
    buf: queue.Queue = queue.Queue(maxsize=depth)
    done, stop = object(), threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buf.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buf.put((True, done))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            buf.put((False, err))

    worker = threading.Thread(target=produce, daemon=True, name="tamis-store-prefetch")
    worker.start()
    try:
        while True:
            ok, item = buf.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                buf.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)


def to_torch(rows: np.ndarray, dtype_name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Rows read from a shard as an owned torch tensor (bfloat16 reinterpreted).

    With ``dtype`` different from the stored dtype, the rows are converted straight from the
    (memory-mapped) array in one pass instead of copied and then converted: the read of a
    float16 store is about 2x faster. The result never aliases the file.
    """
    view = np.asarray(rows)
    if dtype_name == "int8":
        return _dequantize_int8(view, dtype)
    bf16 = dtype_name == "bfloat16"
    stored = torch.bfloat16 if bf16 else torch.from_numpy(view[:0].copy()).dtype
    if dtype is not None and dtype != stored:  # .to() a new dtype always makes a copy
        with warnings.catch_warnings():  # a read-only memmap: torch warns, we never write
            warnings.simplefilter("ignore", UserWarning)
            t = torch.from_numpy(view)
        return (t.view(torch.bfloat16) if bf16 else t).to(dtype)
    t = torch.from_numpy(np.array(view, copy=True))
    return t.view(torch.bfloat16) if bf16 else t


def to_numpy(rows: torch.Tensor, dtype_name: str) -> np.ndarray:
    """A (n, row_length) tensor cast to the stored dtype, as a numpy array.

    For int8 the array is (n, :func:`stored_length`): block codes, then their scales.
    """
    if dtype_name == "int8":
        return _quantize_int8(rows)
    t = rows.detach().to(_TORCH_DTYPES[dtype_name]).contiguous().cpu()
    return t.view(torch.uint16).numpy() if dtype_name == "bfloat16" else t.numpy()


def row_layout(
    specs: list[LayerSpec], rank: int | None, rank_one: frozenset[str] = frozenset(),
    max_numbers: int | None = None,
) -> list[dict]:
    """Per-layer offsets within a row: L then R for LoRIF, G for dense.

    A layer's rank is min(c, d1, d2) (a d1 x d2 matrix has no more singular values), and 1
    for the layers in ``rank_one`` (Linear layers without a sequence axis, T = 1). With
    ``max_numbers`` it is also at most max(1, max_numbers // (d1 + d2)), so a layer's factors
    never hold more numbers than that (at least one factor pair).
    """
    layout, offset = [], 0
    for s in specs:
        c = None if rank is None else (1 if s.name in rank_one else min(rank, s.d1, s.d2))
        if c is not None and max_numbers is not None:
            c = min(c, max(1, max_numbers // (s.d1 + s.d2)))
        length = s.dim if c is None else c * (s.d1 + s.d2)
        layout.append({**s.to_dict(), "rank": c, "offset": offset, "length": length})
        offset += length
    return layout


@dataclass
class StoreChunk:
    """Rows [start, stop) decoded per layer: (L, R) for LoRIF, G (n, d1, d2) for dense."""

    start: int
    stop: int
    layers: dict[str, tuple[torch.Tensor, torch.Tensor] | torch.Tensor]

    def dense(self, name: str) -> torch.Tensor:
        """The layer's projected gradients as (n, d1 * d2), reconstructed if factored."""
        item = self.layers[name]
        g = item[0] @ item[1].transpose(1, 2) if isinstance(item, tuple) else item
        return g.reshape(g.shape[0], -1)


class FactorStore:
    """Read access to a complete store (use :func:`tamis.attribution.build_store` to write)."""

    def __init__(self, path: Path, manifest: dict) -> None:
        self.path = Path(path)
        self.manifest = manifest

    # -- opening and checking -------------------------------------------------------------
    @classmethod
    def open(
        cls, path: str | Path, verify: bool = True, allow_incomplete: bool = False
    ) -> FactorStore:
        """Open a store, checking its manifest, shard sizes and (``verify``) checksums.

        Raises:
            StoreError: naming the missing, truncated or corrupted file.

        """
        path = Path(path)
        manifest = read_manifest(path)
        if not manifest.get("complete") and not allow_incomplete:
            done = sum(s["stop"] - s["start"] for s in manifest["shards"])
            raise StoreError(
                f"store {path} is incomplete ({done}/{manifest['num_examples']} examples); "
                "rerun the build to resume it"
            )
        store = cls(path, manifest)
        store.check_shards(checksums=verify)
        return store

    def check_shards(self, checksums: bool = True) -> None:
        """Check every listed shard exists, has the right size and (optionally) checksum."""
        for shard in self.manifest["shards"]:
            f = self.path / shard["file"]
            if not f.exists():
                raise StoreError(f"shard file {f} is missing")
            if f.stat().st_size != shard["bytes"]:
                raise StoreError(
                    f"shard {f} has {f.stat().st_size} bytes, manifest says {shard['bytes']} "
                    "(truncated or overwritten)"
                )
            if checksums and file_sha256(f) != shard["sha256"]:
                raise StoreError(f"shard {f} fails its SHA-256 checksum (corrupted)")

    # -- properties ---------------------------------------------------------------------------
    @property
    def num_examples(self) -> int:
        """N, the number of training examples (complete stores)."""
        return int(self.manifest["num_examples"])

    @property
    def rank(self) -> int | None:
        """c, or None for a dense store."""
        return self.manifest["rank"]

    @property
    def dtype(self) -> str:
        """The stored dtype name."""
        return self.manifest["dtype"]

    @property
    def layers(self) -> list[dict]:
        """Row layout per layer (name, d1, d2, offset, length, ...)."""
        return self.manifest["layers"]

    @property
    def layer_names(self) -> list[str]:
        """Tracked layer names, in row order."""
        return [layer["name"] for layer in self.layers]

    @property
    def disk_bytes(self) -> int:
        """Bytes of all shard files as measured on disk."""
        return sum((self.path / s["file"]).stat().st_size for s in self.manifest["shards"])

    @property
    def bytes_per_example(self) -> float:
        """Measured shard bytes on disk divided by N (npy headers included)."""
        return self.disk_bytes / max(self.num_examples, 1)

    def energy(self) -> dict[str, float]:
        """Mean fraction of ||G_i||_F^2 kept by the rank-c factors, per layer."""
        total: dict[str, float] = {}
        count = 0
        for shard in self.manifest["shards"]:
            count += shard["stop"] - shard["start"]
            for k, v in shard.get("energy", {}).items():
                total[k] = total.get(k, 0.0) + v
        return {k: v / max(count, 1) for k, v in total.items()}

    # -- reading ----------------------------------------------------------------------------
    def _shard_array(self, shard: dict) -> np.ndarray:
        try:
            arr = np.load(self.path / shard["file"], mmap_mode="r")
        except (ValueError, OSError, EOFError) as err:
            raise StoreError(f"cannot read shard {self.path / shard['file']}: {err}") from err
        expected = (shard["stop"] - shard["start"],
                    stored_length(self.manifest["row_length"], self.dtype))
        if arr.shape != expected:
            raise StoreError(f"shard {shard['file']} has shape {arr.shape}, expected {expected}")
        raw = getattr(arr, "_mmap", None)  # read ahead further: shards are streamed in order
        if raw is not None and hasattr(mmap, "MADV_SEQUENTIAL"):
            raw.madvise(mmap.MADV_SEQUENTIAL)
        return arr

    def decode(self, rows: torch.Tensor, start: int, dtype: torch.dtype) -> StoreChunk:
        """Split raw rows into per-layer tensors of ``dtype``."""
        rows = rows.to(dtype)
        n = rows.shape[0]
        layers: dict = {}
        for lay in self.layers:
            c = lay["rank"]
            block = rows[:, lay["offset"] : lay["offset"] + lay["length"]]
            if c is None:
                layers[lay["name"]] = block.reshape(n, lay["d1"], lay["d2"])
            else:
                split = lay["d1"] * c
                layers[lay["name"]] = (
                    block[:, :split].reshape(n, lay["d1"], c),
                    block[:, split:].reshape(n, lay["d2"], c),
                )
        return StoreChunk(start, start + n, layers)

    def iter_chunks(
        self,
        chunk_size: int = 4096,
        dtype: torch.dtype = torch.float32,
        timings: dict | None = None,
        shards: list[int] | None = None,
    ) -> Iterator[StoreChunk]:
        """Stream the store in chunks of at most ``chunk_size`` rows (never across shards).

        Chunks are read one ahead in a background thread (disk reads and float16 decoding
        release the GIL), so reading overlaps the caller's compute. With ``timings``, the
        seconds the caller waited for rows accumulate in ``timings["load_s"]``. ``shards``
        restricts the stream to those shard positions (a rank's share under
        torch.distributed); ``None`` streams all of them. At most three chunks are in memory
        at once (the caller's, one queued, one being read).
        """
        entries = self.manifest["shards"]
        chosen = entries if shards is None else [entries[i] for i in shards]

        def read() -> Iterator[StoreChunk]:
            for shard in chosen:
                arr = self._shard_array(shard)
                for lo in range(0, arr.shape[0], chunk_size):
                    rows = to_torch(arr[lo : lo + chunk_size], self.dtype, dtype)
                    yield self.decode(rows, shard["start"] + lo, dtype)

        t0 = time.perf_counter()
        for chunk in prefetch(read()):  # the next chunk is read while this one is used
            if timings is not None:
                timings["load_s"] = timings.get("load_s", 0.0) + time.perf_counter() - t0
            yield chunk
            t0 = time.perf_counter()

    def num_chunks(self, chunk_size: int, shards: list[int] | None = None) -> int:
        """How many chunks :meth:`iter_chunks` yields (for ``shards``, if given)."""
        entries = self.manifest["shards"]
        chosen = entries if shards is None else [entries[i] for i in shards]
        return sum(-(-(s["stop"] - s["start"]) // chunk_size) for s in chosen)

    def check_compatible(self, fingerprint: str, layers: list[LayerSpec], projection: dict) -> None:
        """Refuse a query whose model, layers or projection differ from the store's.

        Raises:
            StoreMismatchError: naming what differs.

        """
        m = self.manifest
        if m["projection"] != projection:
            raise StoreMismatchError(
                f"store {self.path} was built with projection {m['projection']}, "
                f"the query uses {projection}"
            )
        mine = [(s.name, s.d1, s.d2, s.in_dim, s.out_dim) for s in layers]
        theirs = [(x["name"], x["d1"], x["d2"], x["in_dim"], x["out_dim"]) for x in m["layers"]]
        if mine != theirs:
            raise StoreMismatchError(
                f"store {self.path} tracks layers {theirs}, the query model gives {mine}"
            )
        if m["model_fingerprint"] != fingerprint:
            raise StoreMismatchError(
                f"store {self.path} was built for another model (fingerprint "
                f"{m['model_fingerprint'][:12]}..., this model {fingerprint[:12]}...): "
                "its weights differ"
            )


def read_manifest(path: Path) -> dict:
    """Load and sanity-check ``path/manifest.json``.

    Raises:
        StoreError: if it is missing, not JSON, or not a tamis store.

    """
    f = Path(path) / MANIFEST
    if not f.exists():
        raise StoreError(f"{path} is not a tamis store (no {MANIFEST})")
    try:
        manifest = json.loads(f.read_text())
    except json.JSONDecodeError as err:
        raise StoreError(f"{f} is corrupted: {err}") from err
    if manifest.get("format") != FORMAT:
        raise StoreError(f"{f} is not a tamis attribution store manifest")
    if manifest.get("version") != VERSION:
        raise StoreError(f"{f} has format version {manifest.get('version')}, expected {VERSION}")
    return manifest


class StoreWriter:
    """Writes shards atomically and keeps the manifest current; resumes partial builds.

    Each shard is written as ``shard-XXXXX.npy`` plus a ``shard-XXXXX.json`` sidecar (its
    manifest entry), both atomically. A rerun treats every shard whose sidecar and checksum
    agree as done. Under ``torch.distributed`` each rank writes its own shards and sidecars;
    rank 0 alone writes the manifest, merging the sidecars when every rank has finished.
    """

    KEYS = ("kind", "rank", "dtype", "num_examples", "shard_size", "layers", "projection",
            "model_fingerprint", "row_length", "truncation")

    def __init__(self, path: Path, header: dict, overwrite: bool = False,
                 process_rank: int = 0) -> None:
        self.path = Path(path)
        self.process_rank = process_rank
        self.path.mkdir(parents=True, exist_ok=True)
        existing = self.path / MANIFEST
        if existing.exists() and not overwrite:
            old = read_manifest(self.path)
            diff = [k for k in self.KEYS if old.get(k) != header.get(k)]
            if diff:
                raise StoreMismatchError(
                    f"{self.path} already holds a store with different {diff}; refusing to "
                    "overwrite it (pass overwrite=True or choose another folder)"
                )
            self.manifest = old
            self.manifest["shards"] = self._valid_shards()
        else:
            if process_rank != 0:
                raise StoreError(f"rank {process_rank} found no manifest in {self.path}")
            self.manifest = {**header, "shards": [], "complete": False, "created": time.time()}
            stale = [*self.path.glob("shard-*.npy"), *self.path.glob("shard-*.json"),
                     *self.path.glob(METRIC_FILE)]
            for old_file in stale:
                old_file.unlink()
            write_json_atomic(existing, self.manifest)

    def _valid_shards(self) -> list[dict]:
        """Shards on disk whose sidecar, size and checksum agree (others are redone)."""
        shards = []
        for sidecar in sorted(self.path.glob("shard-*.json")):
            try:
                entry = json.loads(sidecar.read_text())
                f = self.path / entry["file"]
                if f.stat().st_size == entry["bytes"] and file_sha256(f) == entry["sha256"]:
                    shards.append(entry)
            except (OSError, ValueError, KeyError):
                continue
        return sorted(shards, key=lambda e: e["index"])

    @property
    def done(self) -> set[int]:
        """Indices of the shards already written."""
        return {s["index"] for s in self.manifest["shards"]}

    def write_shard(
        self, index: int, start: int, rows: np.ndarray, energy: dict[str, float]
    ) -> None:
        """Atomically write shard ``index`` (rows for examples [start, start + len))."""
        if index in self.done:
            raise StoreError(f"shard {index} is already written")
        name = f"shard-{index:05d}.npy"
        with atomic_path(self.path / name, suffix=".npy") as tmp:
            np.save(tmp, rows)
            digest = file_sha256(tmp)
        entry = {"index": index, "start": start, "stop": start + rows.shape[0], "file": name,
                 "bytes": (self.path / name).stat().st_size, "sha256": digest,
                 "energy": {k: float(v) for k, v in energy.items()}}
        write_json_atomic(self.path / name.replace(".npy", ".json"), entry)
        self.manifest["shards"] = sorted([*self.manifest["shards"], entry],
                                         key=lambda e: e["index"])
        if self.process_rank == 0:
            write_json_atomic(self.path / MANIFEST, self.manifest)

    def finish(self, num_shards: int) -> FactorStore:
        """Merge every rank's shards, check none is missing, and mark the store complete.

        Call on rank 0 after all ranks have written their shards (a barrier).
        """
        self.manifest["shards"] = self._valid_shards()
        missing = sorted(set(range(num_shards)) - self.done)
        if missing:
            raise StoreError(f"store {self.path} is missing shards {missing[:10]}")
        self.manifest["complete"] = True
        write_json_atomic(self.path / MANIFEST, self.manifest)
        return FactorStore(self.path, self.manifest)
