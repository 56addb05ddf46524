"""The issue's targets, checked against a results table (reported, never asserted)."""

from __future__ import annotations


def _ok(rows: list[dict]) -> list[dict]:
    return [r for r in rows if not r.get("skip") and not r.get("error") and "lds" in r]


def _warm(r: dict) -> float:
    w = r.get("query_warm", {})
    return w.get("load_s", 0.0) + w.get("compute_s", 0.0)


def targets_report(rows: list[dict], meta: dict) -> dict:
    """Check every target; return {"targets": [...], "markdown": str}."""
    ok = _ok(rows)
    out: list[dict] = []
    lorif = [r for r in ok if r["method"] == "tamis lorif"]
    logra = {r["D"]: r for r in ok if r["method"] == "tamis logra"}
    for d, dense in sorted(logra.items()):
        cands = [r for r in lorif if r["D"] == d]
        if not cands:
            continue
        best = max(cands, key=lambda r: r["lds"]["mean"])
        ratio = dense["store_bytes_per_example"] / best["store_bytes_per_example"]
        dl = best["lds"]["mean"] - dense["lds"]["mean"]
        speed = _warm(dense) / max(_warm(best), 1e-12)
        out.append({"target": f"D={d}: LoRIF store >= 20x smaller than dense LoGRA",
                    "value": f"{ratio:.1f}x (c={best['c']}, r={best['r']})", "met": ratio >= 20})
        out.append({"target": f"D={d}: LoRIF LDS within 0.01 of dense LoGRA or better",
                    "value": f"{best['lds']['mean']:.3f} vs {dense['lds']['mean']:.3f} "
                             f"(diff {dl:+.3f})", "met": dl >= -0.01})
        out.append({"target": f"D={d}: LoRIF query (store load + scoring, warm) >= 10x faster",
                    "value": f"{speed:.1f}x ({_warm(best):.4f}s vs {_warm(dense):.4f}s)",
                    "met": speed >= 10})
    anchors = [r for r in ok if not r["method"].startswith("tamis")]
    for a in anchors:
        b = a.get("store_bytes_per_example")
        if not b:
            cmp = list(lorif)
            label = "any bytes (anchor stores nothing per example)"
        else:
            cmp = [r for r in lorif if r["store_bytes_per_example"] <= b * 1.05]
            label = f"<= {b:.0f} bytes/example"
        if not cmp:
            name = f"{a['method']} {a.get('config', '')}"
            out.append({"target": f"LoRIF LDS >= {name} at equal bytes",
                        "value": f"no LoRIF configuration at {label}", "met": None})
            continue
        best = max(cmp, key=lambda r: r["lds"]["mean"])
        out.append({"target": f"LoRIF LDS >= {a['method']} {a.get('config', '')} at {label}",
                    "value": f"{best['lds']['mean']:.3f} (D={best['D']}, r={best['r']}) vs "
                             f"{a['lds']['mean']:.3f}",
                    "met": best["lds"]["mean"] >= a["lds"]["mean"]})
    thr = meta["train_throughput_ex_per_s"]
    for r in lorif:
        rel = r["index_throughput_ex_per_s"] / thr
        out.append({"target": f"index throughput >= 0.7x training (LoRIF D={r['D']} r={r['r']})",
                    "value": f"{rel:.2f}x", "met": rel >= 0.7})
    lines = ["## Targets", "", "| target | value | met |", "|---|---|---|"]
    for t in out:
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        lines.append(f"| {t['target']} | {t['value']} | {met} |")
    return {"targets": out, "markdown": "\n".join(lines)}
