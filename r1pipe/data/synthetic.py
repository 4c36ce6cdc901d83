"""The synthetic reasoning task: multi-digit addition with a digit-wise chain of thought.

Problems are drawn from ``seed`` without replacement; the first ``eval_size`` form the
held-out split, the next ``train_size`` the train split, so the splits never overlap and are
the same on every machine. Each example carries an R1-format response for cold-start SFT::

    <think>
    7+8=15, carry 1
    4+3+1=8, carry 0
    </think>
    47+38 = <answer>85</answer>
"""

from __future__ import annotations

import random

from r1pipe.data.types import Example


def addition_cot(operands: list[int]) -> str:
    """The digit-wise chain of thought (inside ``<think>``) for summing ``operands``.

    >>> print(addition_cot([47, 38]))
    7+8=15, carry 1
    4+3+1=8, carry 0
    """
    width = max(len(str(x)) for x in operands)
    digits = [str(x).zfill(width) for x in operands]
    lines, carry = [], 0
    for col in range(width - 1, -1, -1):
        terms = [d[col] for d in digits] + ([str(carry)] if carry else [])
        total = sum(int(t) for t in terms)
        carry = total // 10
        lines.append(f"{'+'.join(terms)}={total}, carry {carry}")
    if carry:
        lines.append(f"final carry {carry}")
    return "\n".join(lines)


def addition_response(operands: list[int], answer_format: str = "answer_tag") -> str:
    """The full R1-format response: think block, then a one-line summary with the answer."""
    total = sum(operands)
    final = f"<answer>{total}</answer>" if answer_format == "answer_tag" else f"\\boxed{{{total}}}"
    return f"<think>\n{addition_cot(operands)}\n</think>\n{'+'.join(map(str, operands))} = {final}"


def addition_splits(
    *,
    num_digits: int,
    num_operands: int,
    train_size: int,
    eval_size: int,
    seed: int,
    answer_format: str = "answer_tag",
) -> tuple[list[Example], list[Example]]:
    """Deterministic, disjoint (train, held-out) splits of the addition task.

    >>> train, held = addition_splits(num_digits=2, num_operands=2, train_size=5, eval_size=3,
    ...                               seed=0)
    >>> len(train), len(held), set(e.question for e in train) & set(e.question for e in held)
    (5, 3, set())
    """
    lo, hi = 10 ** (num_digits - 1), 10**num_digits - 1
    space = (hi - lo + 1) ** num_operands
    want = eval_size + train_size
    if want > space:
        # Small spaces (1-digit, or 2 operands of 2 digits with a large train set): keep
        # every problem once; the train split is what is left after the held-out one.
        want = space
        if eval_size >= space:
            raise ValueError(
                f"task.eval_size={eval_size} leaves no training problems "
                f"({space} distinct problems exist)"
            )
    rng = random.Random(seed)
    seen: set[tuple[int, ...]] = set()
    problems: list[tuple[int, ...]] = []
    while len(problems) < want:
        ops = tuple(rng.randint(lo, hi) for _ in range(num_operands))
        if ops not in seen:
            seen.add(ops)
            problems.append(ops)
    examples = [
        Example(
            id=f"add-{i}",
            question=f"{'+'.join(map(str, ops))}=?",
            reference=str(sum(ops)),
            response=addition_response(list(ops), answer_format),
        )
        for i, ops in enumerate(problems)
    ]
    return examples[eval_size:], examples[:eval_size]
