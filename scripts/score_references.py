"""Check the grader on the benchmarks' own references (the numbers in the README).

    python scripts/score_references.py [--data-dir ../shared/data] [--out refs.json]

Each reference is scored as a model's completion through the same code as
``r1pipe eval predictions=FILE`` (r1pipe.benchmarks.load_predictions, then
r1pipe.evaluation.score_completion with the R1 settings: last \\boxed{}, math-verify):

* MATH-500: the whole ``solution`` text as the completion, ``answer`` as the reference;
* GSM8K test: the whole ``answer`` text (worked solution ending ``#### N``) as the
  completion, N as the reference;
* negative control: every completion against the reference of another problem (a random
  derangement, seed 0). Pairs whose two references are themselves equivalent are listed apart:
  there a "correct" is right, not a grader error.

Prints each rate and every disagreement: a reference solution that scores wrong, or a
mismatched pair that scores right.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from r1pipe.benchmarks import data_dir_candidates, load_predictions
from r1pipe.config.schema import BenchConfig, TaskConfig
from r1pipe.evaluation import score_completion
from r1pipe.rewards.accuracy import answer_matches

TASK = TaskConfig(answer_format="boxed", verifier="math")


def score(rows: list[dict]) -> list[dict]:
    """Score prediction rows exactly as ``r1pipe eval predictions=`` would."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "preds.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        preds, _ = load_predictions(str(path), BenchConfig())
    out = []
    for p in preds:
        for text in p.completions:
            out.append(
                {"id": p.id, "reference": p.reference}
                | score_completion(text, p.reference, TASK, gsm8k_fallback=True)
            )
    return out


def derangement(n: int, seed: int = 0) -> list[int]:
    """A random permutation with no fixed point: each i maps to another index."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    target = order[1:] + order[:1]
    mapping = [0] * n
    for i, j in zip(order, target, strict=True):
        mapping[i] = j
    return mapping


def check(name: str, rows: list[dict], completion: str, reference: str, ident: str) -> dict:
    t0 = time.perf_counter()
    positive = score(
        [{"id": str(r[ident]), "completion": r[completion], "answer": r[reference]} for r in rows]
    )
    other = derangement(len(rows))
    negative = score(
        [
            {"id": str(r[ident]), "completion": r[completion], "answer": rows[other[i]][reference]}
            for i, r in enumerate(rows)
        ]
    )
    misses = [r for r in positive if not r["correct"]]
    hits = [r for r in negative if r["correct"]]
    # a "hit" where both problems have the same answer is right; only the rest are errors
    same_answer = [
        r
        for r, i in zip(negative, range(len(rows)), strict=True)
        if r["correct"] and answer_matches(positive[i]["reference"], r["reference"], "math")
    ]
    result = {
        "benchmark": name,
        "rows": len(rows),
        "reference_correct": 1 - len(misses) / len(rows),
        "shuffled_correct": len(hits) / len(rows),
        "shuffled_correct_same_answer": len(same_answer),
        "misses": [{k: r[k] for k in ("id", "answer", "reference")} for r in misses],
        "shuffled_hits": [
            {
                "id": r["id"],
                "answer": r["answer"],
                "other_reference": r["reference"],
                "own_reference": positive[i]["reference"],
            }
            for i, r in enumerate(negative)
            if r["correct"]
        ],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(
        f"{name}: references {100 * result['reference_correct']:.1f}% correct "
        f"({len(rows) - len(misses)}/{len(rows)}); "
        f"shuffled {100 * result['shuffled_correct']:.1f}% "
        f"({len(hits)}/{len(rows)}, of which {len(same_answer)} pairs share the answer) "
        f"[{result['seconds']} s]"
    )
    for r in result["misses"]:
        print(
            f"  reference scored wrong: {r['id']}: extracted {r['answer']!r} vs {r['reference']!r}"
        )
    for r in result["shuffled_hits"]:
        print(
            f"  shuffled pair scored right: {r['id']}: extracted {r['answer']!r} vs other "
            f"problem's {r['other_reference']!r} (own reference {r['own_reference']!r})"
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder with NAME/test.jsonl")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    folder = next((d for d in data_dir_candidates(args.data_dir) if (d / "gsm8k").is_dir()), None)
    if folder is None:
        sys.exit(f"no data folder with gsm8k/ and math500/ in {data_dir_candidates(args.data_dir)}")

    def rows(name: str) -> list[dict]:
        return [json.loads(x) for x in (folder / name / "test.jsonl").read_text().splitlines()]

    gsm8k = rows("gsm8k")
    for i, r in enumerate(gsm8k):
        r["idx"] = i
    results = [
        check("math500", rows("math500"), "solution", "answer", "unique_id"),
        check("gsm8k", gsm8k, "answer", "answer", "idx"),
    ]
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
