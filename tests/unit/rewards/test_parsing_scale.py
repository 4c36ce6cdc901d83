"""The answer tag is found in linear time: a completion of 12,000 unclosed ``<answer>`` tags
took 22 s with the lazy pattern, inline in every reward call. The result must stay what the
pattern's last match was."""

import random
import time

from r1pipe.rewards.parsing import _ANSWER_TAG_RE, extract_answer


def by_pattern(text: str) -> str | None:
    matches = _ANSWER_TAG_RE.findall(text)
    return (matches[-1].strip() or None) if matches else None


def test_same_answer_as_the_pattern_on_random_tag_soup():
    rng = random.Random(0)
    pieces = ["<answer>", "</answer>", "<ans", "wer>", "</", "answer>", "a", "b", " "]
    for _ in range(50_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        assert extract_answer(text, "answer_tag") == by_pattern(text), text


def test_unclosed_tags_do_not_stall():
    for text in ["<answer>" * 12_000, "<answer>" * 12_000 + "x</answer>", "</answer>" * 12_000]:
        t0 = time.monotonic()
        extract_answer(text, "answer_tag")
        assert time.monotonic() - t0 < 2.0  # was 22 s for the first; linear now (~0.1 ms)
