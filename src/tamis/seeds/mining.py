"""Seed mining: generate over prompts x seeds, judge every image, append results to JSONL.

One line per image: ``{"key", "index", "prompt", "seed", "judge", "verdict", "record",
"image"}``. The file is append-only and flushed after every batch, so a killed run loses at
most the batch in flight; a rerun skips what is done. A last line truncated mid-write is
dropped with a warning; a corrupted line elsewhere is an error naming file and line.

Under ``torch.distributed`` each rank takes the grid slice ``grid[rank::world]``, writes its own
shard ``<out>.rank<r>-of-<w>.jsonl``, and rank 0 merges the shards in grid order into ``out``:
the merged file is byte-identical to a single-process run.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tamis._io import atomic_path
from tamis._progress import track
from tamis.seeds.errors import ResultsFileError
from tamis.seeds.generation import ImageGenerator
from tamis.seeds.judges.base import Judge, Verdict
from tamis.seeds.prompts import Prompt
from tamis.seeds.records import GenerationRecord, generate_with_records


@dataclass(frozen=True)
class MiningConfig:
    """How to mine.

    Attributes:
        batch_size: images per pipeline call (noise stays batch-independent).
        image_dir: if set, every image is saved there as PNG (``<seed>/<index>.png``).
        progress: show a rich progress bar.

    """

    batch_size: int = 8
    image_dir: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        """Validate."""
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def result_key(prompt_text: str, seed: int) -> str:
    """The identity of one mined image: seed and prompt text."""
    return f"{int(seed)}|{prompt_text}"


def mining_grid(prompts: Sequence[Prompt], seeds: Sequence[int]) -> list[tuple[int, Prompt, int]]:
    """The (index, prompt, seed) grid in its canonical order: seed-major, then prompt.

    Raises:
        ValueError: no prompts, no seeds, duplicate seeds or duplicate prompt texts.

    """
    if not prompts:
        raise ValueError("mining needs at least one prompt")
    if not seeds:
        raise ValueError("mining needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError("mining seeds must be distinct")
    texts = [p.text for p in prompts]
    if len(set(texts)) != len(texts):
        dup = next(t for t in texts if texts.count(t) > 1)
        raise ValueError(f"duplicate prompt text {dup!r}")
    grid = []
    for seed in seeds:
        for prompt in prompts:
            grid.append((len(grid), prompt, int(seed)))
    return grid


def read_results(path: str | Path, repair: bool = True) -> list[dict]:
    """Read a results JSONL file (missing file -> empty list).

    A last line truncated mid-write (no newline, or not valid JSON) is dropped with a warning
    and, when ``repair`` is set, cut from the file so that appends continue cleanly.

    Raises:
        ResultsFileError: a corrupted line before the last one (file and line number named).

    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]
    rows: list[dict] = []
    good_bytes = 0
    for number, line in enumerate(complete, start=1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or "key" not in row:
                raise ValueError("not a result object")
        except ValueError as err:
            if number == len(complete) and not tail:
                tail = line  # the last line is broken: treat like a truncated one
                break
            raise ResultsFileError(f"{path}:{number}: corrupted result line ({err})") from None
        rows.append(row)
        good_bytes += len(line) + 1
    if tail:
        warnings.warn(
            f"{path}: dropping a truncated last line ({len(tail)} bytes, a killed run); "
            "it will be mined again",
            stacklevel=2,
        )
        if repair:
            with open(path, "r+b") as fh:
                fh.truncate(good_bytes)
    return rows


def _dumps(row: dict) -> str:
    return json.dumps(row, sort_keys=True, ensure_ascii=False)


def _append(fh, rows: list[dict]) -> None:
    for row in rows:
        fh.write(_dumps(row) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def _save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    with atomic_path(path, suffix=".png", fsync=False) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _dist_info() -> tuple[int, int]:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return 0, 1
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_path(out: Path, rank: int, world: int) -> Path:
    """The shard file of ``rank`` out of ``world`` next to ``out``."""
    return out.with_name(f"{out.stem}.rank{rank}-of-{world}{out.suffix}")


def _mine_into(
    generator: ImageGenerator,
    judge: Judge,
    todo: list[tuple[int, Prompt, int]],
    path: Path,
    config: MiningConfig,
    description: str,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {row["key"] for row in read_results(path)}
    todo = [item for item in todo if result_key(item[1].text, item[2]) not in done]
    if not todo:
        return
    with open(path, "a", encoding="utf-8") as fh:
        batches = list(_batches(todo, config.batch_size))
        for batch in track(batches, description, total=len(batches), enabled=config.progress):
            prompts = [p.text for _, p, _ in batch]
            seeds = [s for _, _, s in batch]
            images, records = generate_with_records(generator, prompts, seeds)
            verdicts = _judge_safely(judge, images, [p.question for _, p, _ in batch])
            rows = []
            for (index, prompt, seed), image, record, verdict in zip(
                batch, images, records, verdicts
            ):
                image_rel = None
                if config.image_dir:
                    image_rel = f"{seed}/{index:06d}.png"
                    _save_png(image, Path(config.image_dir) / image_rel)
                rows.append(
                    {
                        "key": result_key(prompt.text, seed),
                        "index": index,
                        "seed": seed,
                        "prompt": prompt.to_dict(),
                        "judge": judge.name,
                        "verdict": verdict.to_dict(),
                        "record": record.to_dict(),
                        "image": image_rel,
                    }
                )
            _append(fh, rows)


def _judge_safely(judge: Judge, images: np.ndarray, questions: list) -> list[Verdict]:
    try:
        verdicts = judge.judge(images, questions)
    except Exception as err:  # a judge crash is a recorded failure, never a guess
        return [Verdict.failure(f"judge raised {type(err).__name__}: {err}") for _ in questions]
    if len(verdicts) != len(questions):
        return [
            Verdict.failure(f"judge returned {len(verdicts)} verdicts for {len(questions)} images")
            for _ in questions
        ]
    return list(verdicts)


def mine(
    generator: ImageGenerator,
    judge: Judge,
    prompts: Sequence[Prompt],
    seeds: Sequence[int],
    out: str | Path,
    config: MiningConfig | None = None,
) -> list[dict]:
    """Mine ``prompts`` x ``seeds`` with ``judge``; return the results in grid order.

    Resumable: rows already in ``out`` (or, under torch.distributed, in this rank's shard) are
    skipped. Under torch.distributed every rank mines its slice and all ranks return the merged
    results (rank 0 writes ``out``).
    """
    config = config or MiningConfig()
    out = Path(out)
    grid = mining_grid(prompts, seeds)
    rank, world = _dist_info()
    if world == 1:
        _mine_into(generator, judge, grid, out, config, "mining seeds")
        return _ordered(read_results(out), grid, out)
    import torch.distributed as dist

    box = [sorted(row["key"] for row in read_results(out)) if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    done = set(box[0])
    mine_slice = [
        item for item in grid[rank::world] if result_key(item[1].text, item[2]) not in done
    ]
    shard = shard_path(out, rank, world)
    _mine_into(generator, judge, mine_slice, shard, config, f"mining seeds (rank {rank})")
    dist.barrier()
    if rank == 0:
        rows = read_results(out)
        for r in range(world):
            rows += read_results(shard_path(out, r, world))
        merged = _ordered(rows, grid, out)
        with atomic_path(out) as tmp:
            tmp.write_text("".join(_dumps(row) + "\n" for row in merged), encoding="utf-8")
        for r in range(world):
            shard_path(out, r, world).unlink(missing_ok=True)
    dist.barrier()
    return _ordered(read_results(out, repair=False), grid, out)


def _ordered(rows: list[dict], grid: list, out: Path) -> list[dict]:
    by_key = {row["key"]: row for row in rows}
    missing = [result_key(p.text, s) for _, p, s in grid if result_key(p.text, s) not in by_key]
    if missing:
        raise ResultsFileError(f"{out}: {len(missing)} grid images missing, e.g. {missing[0]!r}")
    return [by_key[result_key(p.text, s)] for _, p, s in grid]


def load_mined(path: str | Path) -> list[tuple[Prompt, int, Verdict, GenerationRecord]]:
    """Parse a results file into (prompt, seed, verdict, record) tuples (file order)."""
    out = []
    for row in read_results(path, repair=False):
        out.append(
            (
                Prompt.from_dict(row["prompt"]),
                int(row["seed"]),
                Verdict.from_dict(row["verdict"]),
                GenerationRecord.from_dict(row["record"]),
            )
        )
    return out
