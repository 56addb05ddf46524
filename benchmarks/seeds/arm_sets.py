"""How correct is each fine-tuning arm's training set? (exact checker; diagnostic for arms.py)

    .venv/bin/python benchmarks/seeds/arm_sets.py --out benchmarks/seeds/runs/arms

Reads the sets that ``arms.py`` wrote under ``--out`` (the random pool, its judge-filtered
subset, the curated top-seed folders) and judges every training image against the prompt it
was generated from with the exact checker. For the rectified arm it also reports how often the
mining judge rewrote a caption and how often the rewritten caption is right. Writes
``benchmarks/results/seeds_arm_sets.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from tamis._io import write_text_atomic
from tamis.seeds.finetune import load_image_folder
from tamis.seeds.world.captions import world_prompts
from tamis.seeds.world.checker import ExactChecker

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _prompt_index() -> dict:
    """Every world prompt (train and eval, all backgrounds) by text."""
    from tamis.seeds.world.render import BACKGROUNDS

    out = {}
    for split in ("train", "eval"):
        sets = world_prompts(split, backgrounds=tuple(BACKGROUNDS))
        for p in sets["numerical"] + sets["spatial"]:
            out[p.text] = p
    return out


def _score(images: np.ndarray, texts: list[str], index: dict) -> dict:
    checker = ExactChecker()
    prompts = [index[t] for t in texts]
    verdicts = checker.judge(images, [p.question for p in prompts])
    kinds = np.array([p.question.kind for p in prompts])
    ok = np.array([bool(v.correct) for v in verdicts])
    out = {"n": len(ok), "exact_accuracy": float(ok.mean()) if len(ok) else None}
    for kind, name in (("count", "numerical"), ("spatial", "spatial")):
        sel = kinds == kind
        out[name] = {"n": int(sel.sum()),
                     "exact_accuracy": float(ok[sel].mean()) if sel.any() else None}
    return out


def run(out: Path, ft_images: int) -> dict:
    """Score every arm's training set found under ``out``."""
    index = _prompt_index()
    res: dict = {}
    pool = out / "random_pool.npz"
    if pool.exists():
        z = np.load(pool, allow_pickle=False)
        images, caps, judged = z["images"], [str(c) for c in z["captions"]], z["correct"]
        res["ft_random"] = _score(images[:ft_images], caps[:ft_images], index)
        keep = np.flatnonzero(judged)[:ft_images]
        res["ft_random_filtered"] = _score(images[keep], [caps[i] for i in keep], index)
        res["random_pool_judge_acceptance"] = float(judged.mean())
    for arm in ("ft_top_seeds", "ft_top_seeds_rectified", "ft_top_seeds_filtered"):
        folder = out / arm / "curated"
        if not (folder / "metadata.jsonl").exists():
            continue
        meta = [json.loads(x) for x in (folder / "metadata.jsonl").read_text().splitlines()]
        images, captions = load_image_folder(folder)
        originals = [m.get("original_text", m["text"]) for m in meta]
        res[arm] = {"generated_for_prompt": _score(images, originals, index)}
        if arm.endswith("rectified"):
            changed = [i for i, m in enumerate(meta) if m["text"] != originals[i]]
            known = [i for i in changed if captions[i] in index]
            res[arm]["rectified"] = len(changed)
            res[arm]["as_captioned"] = _score(images, captions, index) if len(known) == len(
                changed) else None
    return res


def markdown(res: dict) -> str:
    """The table."""
    def cell(s: dict | None) -> str:
        if not s or s.get("exact_accuracy") is None:
            return "-"
        return f"{s['exact_accuracy']:.3f} (n {s['n']})"

    lines = ["# Exact-checker accuracy of each arm's fine-tuning set", "",
             "| arm | all | numerical | spatial |", "|---|---|---|---|"]
    for arm in ("ft_random", "ft_random_filtered"):
        if arm in res:
            s = res[arm]
            lines.append(f"| {arm} | {cell(s)} | {cell(s['numerical'])} | "
                         f"{cell(s['spatial'])} |")
    for arm in ("ft_top_seeds", "ft_top_seeds_rectified", "ft_top_seeds_filtered"):
        if arm in res:
            s = res[arm]["generated_for_prompt"]
            lines.append(f"| {arm} (vs generating prompt) | {cell(s)} | "
                         f"{cell(s['numerical'])} | {cell(s['spatial'])} |")
            if res[arm].get("as_captioned"):
                c = res[arm]["as_captioned"]
                lines.append(f"| {arm} (vs rectified caption; {res[arm]['rectified']} "
                             f"rewritten) | {cell(c)} | {cell(c['numerical'])} | "
                             f"{cell(c['spatial'])} |")
    if "random_pool_judge_acceptance" in res:
        lines += ["", f"The mining judge accepted {res['random_pool_judge_acceptance']:.3f} of "
                  "the random-seed pool."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="the arms.py output folder")
    p.add_argument("--ft-images", type=int, default=480)
    p.add_argument("--results", type=Path, default=RESULTS / "seeds_arm_sets.json")
    a = p.parse_args(argv)
    res = run(a.out, a.ft_images)
    write_text_atomic(a.results, json.dumps(res, indent=1))
    write_text_atomic(a.results.with_suffix(".md"), markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
