"""The self-curated training set: images from each category's top seeds.

For each training prompt a seed is drawn uniformly from its category's top-n seeds; the image
is generated and, optionally, checked by the judge:

* ``"rectify"`` (the paper's default): a wrong count image whose judged count has a count
  word (1..10) gets its caption's count rewritten; a wrong spatial image gets the relation the
  judge saw if it can tell (``Verdict.relation_seen``), else it is dropped; failures are kept
  with their prompt as caption (the judge could not tell);
* ``"filter"``: only images judged correct are kept;
* ``"none"``: every image is kept with its prompt.

Every decision is appended to ``curation.jsonl`` (resumable like mining); ``metadata.jsonl``
(``{"file_name", "text", ...}``, what diffusers' ``train_text_to_image.py`` and ``datasets``
ImageFolder read) is rewritten atomically from it at the end.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tamis._io import atomic_path, write_text_atomic
from tamis._progress import track
from tamis.seeds.generation import ImageGenerator
from tamis.seeds.judges.base import Judge, Verdict
from tamis.seeds.mining import _append, _batches, _judge_safely, _save_png, read_results
from tamis.seeds.prompts import COUNT_WORDS, RELATION_PHRASES, RELATIONS, Prompt
from tamis.seeds.records import generate_with_records

CURATION_MODES = ("rectify", "filter", "none")


@dataclass(frozen=True)
class CurateConfig:
    """How to curate.

    Attributes:
        mode: "rectify" (default), "filter" or "none" (see the module docstring).
        seed: seed of the per-prompt draw among the top seeds.
        batch_size: images per pipeline call.
        progress: show a progress bar.

    """

    mode: str = "rectify"
    seed: int = 0
    batch_size: int = 8
    progress: bool = True

    def __post_init__(self) -> None:
        """Validate."""
        if self.mode not in CURATION_MODES:
            raise ValueError(f"unknown curation mode {self.mode!r} (use one of {CURATION_MODES})")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def rectify_caption(prompt: Prompt, verdict: Verdict) -> str | None:
    """The caption for an image the judge found wrong, or None to drop it.

    Count: the count word replaced by the judged count's word (1..10; "one" takes the
    singular). Spatial: the relation phrase replaced by the one the judge saw, if any.
    """
    q = prompt.question
    if q.kind == "count":
        if not isinstance(verdict.answer, int) or verdict.answer not in COUNT_WORDS:
            return None
        old = COUNT_WORDS[q.count]
        pattern = rf"\b{re.escape(old)} {re.escape(q.obj.plural)}\b"
        new_word = COUNT_WORDS[verdict.answer]
        noun = q.obj.singular if verdict.answer == 1 else q.obj.plural
        text, n = re.subn(pattern, f"{new_word} {noun}", prompt.text, count=1)
        return text if n else None
    seen = verdict.relation_seen
    if seen not in RELATIONS or seen == q.relation:
        return None
    old_phrase = RELATION_PHRASES[q.relation]
    if old_phrase not in prompt.text:
        return None
    return prompt.text.replace(old_phrase, RELATION_PHRASES[seen], 1)


def draw_seeds(
    prompts: Sequence[Prompt], top: Mapping[str, Sequence[int]], seed: int = 0
) -> list[int]:
    """One seed per prompt, uniform among its category's top seeds (deterministic).

    Raises:
        ValueError: a prompt's category has no top seeds (the category named).

    """
    rng = random.Random(seed)
    out = []
    for p in prompts:
        choices = list(top.get(p.category, ()))
        if not choices:
            raise ValueError(f"no top seeds for category {p.category!r} (mine it first)")
        out.append(rng.choice(choices))
    return out


def curate(
    generator: ImageGenerator,
    prompts: Sequence[Prompt],
    top: Mapping[str, Sequence[int]],
    out_dir: str | Path,
    judge: Judge | None = None,
    config: CurateConfig | None = None,
) -> list[dict]:
    """Generate the curated image folder in ``out_dir``; return the kept metadata rows.

    Raises:
        ValueError: ``mode`` needs a judge but none is given; a category without top seeds.

    """
    config = config or CurateConfig()
    if config.mode != "none" and judge is None:
        raise ValueError(f"curation mode {config.mode!r} needs a judge")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "curation.jsonl"
    seeds = draw_seeds(prompts, top, config.seed)
    items = [(i, p, s) for i, (p, s) in enumerate(zip(prompts, seeds))]
    done = {row["key"] for row in read_results(log)}
    todo = [it for it in items if f"{it[0]}|{it[2]}|{it[1].text}" not in done]
    with open(log, "a", encoding="utf-8") as fh:
        batches = list(_batches(todo, config.batch_size))
        for batch in track(batches, "curating", total=len(batches), enabled=config.progress):
            images, records = generate_with_records(
                generator, [p.text for _, p, _ in batch], [s for _, _, s in batch]
            )
            if judge is not None and config.mode != "none":
                verdicts = _judge_safely(judge, images, [p.question for _, p, _ in batch])
            else:
                verdicts = [None] * len(batch)
            rows = []
            for (i, prompt, seed), image, record, verdict in zip(batch, images, records, verdicts):
                text, action = _decide(prompt, verdict, config.mode)
                file_name = None
                if text is not None:
                    file_name = f"images/{i:06d}.png"
                    _save_png(image, out_dir / file_name)
                rows.append(
                    {
                        "key": f"{i}|{seed}|{prompt.text}",
                        "index": i,
                        "file_name": file_name,
                        "text": text,
                        "prompt": prompt.to_dict(),
                        "seed": seed,
                        "action": action,
                        "verdict": verdict.to_dict() if verdict is not None else None,
                        "record": record.to_dict(),
                    }
                )
            _append(fh, rows)
    kept = sorted((r for r in read_results(log) if r["file_name"]), key=lambda r: r["index"])
    meta = [
        {
            "file_name": r["file_name"],
            "text": r["text"],
            "seed": r["seed"],
            "category": r["prompt"]["category"],
            "action": r["action"],
            "original_text": r["prompt"]["text"],
            "record": r["record"],
        }
        for r in kept
    ]
    with atomic_path(out_dir / "metadata.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(m, sort_keys=True) + "\n" for m in meta), "utf-8")
    summary: dict[str, int] = {}
    for r in read_results(log):
        summary[r["action"]] = summary.get(r["action"], 0) + 1
    write_text_atomic(out_dir / "summary.json", json.dumps(summary, indent=2, sort_keys=True))
    return meta


def _decide(prompt: Prompt, verdict: Verdict | None, mode: str) -> tuple[str | None, str]:
    if mode == "none" or verdict is None:
        return prompt.text, "kept"
    if verdict.correct:
        return prompt.text, "kept"
    if mode == "filter":
        return None, "dropped_failure" if verdict.failed else "dropped_wrong"
    if verdict.failed:
        return prompt.text, "kept_failure"
    text = rectify_caption(prompt, verdict)
    return (text, "rectified") if text is not None else (None, "dropped_wrong")
