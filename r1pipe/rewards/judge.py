"""A generative judge: a language model decides whether a completion's answer matches the
reference, for answers no rule can check (the R1 paper fed reference and prediction to
DeepSeek-V3 during rejection sampling).

Two back ends behind one method, ``complete(prompts) -> texts``:

* :class:`HFJudge`: any causal LM given by path, through the :class:`~r1pipe.generation.Generator`
  interface (greedy, the tokenizer's chat template);
* :class:`OpenAIJudge`: any OpenAI-compatible server (vLLM, SGLang, TGI, hosted APIs), plain
  HTTP ``POST {base_url}/chat/completions``; a failed request gives ``None``, never a crash.

Judges answer in prose, markdown, JSON or one word; :func:`parse_verdict` reads a verdict out of
that noise and says "unknown" (None) rather than guess.

Example:
    >>> parse_verdict("**Verdict:** Correct.")
    True
    >>> parse_verdict("correct? no")
    False
    >>> parse_verdict("I cannot tell.") is None
    True
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from r1pipe.config.schema import GenerationConfig, JudgeConfig
from r1pipe.rewards.parsing import split_think

__all__ = [
    "HFJudge",
    "Judge",
    "OpenAIJudge",
    "build_judge",
    "fill_prompt",
    "judge_answers",
    "parse_verdict",
]

# Words whose polarity holds wherever they appear ("... so the answer is correct").
_STRONG = {
    "correct": True,
    "incorrect": False,
    "wrong": False,
    "equivalent": True,
    "inequivalent": False,
    "nonequivalent": False,
}
# Words that are a verdict only when they stand alone ("Yes." / "..., no"): inside a sentence
# they are ordinary words ("there is no error", "the right answer is 5").
_STANDALONE = {"yes": True, "no": False, "right": True, "true": True, "false": False}
_POLARITY = {**_STRONG, **_STANDALONE}
_ANY = "|".join(sorted(_POLARITY, key=len, reverse=True))
_WORD = re.compile(r"\b(" + _ANY + r")\b")
_NEGATIONS = {
    "not",
    "never",
    "hardly",
    "isnt",
    "arent",
    "wasnt",
    "doesnt",
    "dont",
    "cannot",
    "cant",
}
_LABELED = re.compile(
    r"\b(?:verdict|judge?ment|decision|grade|assessment|evaluation|conclusion)\b"
    r"(?:\s+is)?[\s\"':=\-\[\(]*(?P<neg>not\s+)?(?P<word>" + _ANY + r")\b"
)
_BRACKETED = re.compile(r"\[\[?\s*(?P<word>" + _ANY + r")\s*\]\]?")
_MARKDOWN = re.compile(r"[*_`#>]+")


def parse_verdict(text: str | None) -> bool | None:
    """Read a judge's verdict from noisy text: True (correct), False (incorrect), None (unknown).

    In order of trust: a labelled verdict (``Verdict: correct``, ``{"judgement": "wrong"}``;
    the last one), a bracketed one (``[[incorrect]]``), a first word that stands alone
    (``Incorrect. The right answer is 5``), and else the last verdict word of the text.
    Negations just before a word flip it (``not correct``); a word followed by ``?`` is a
    question, not a verdict (``correct? no`` is False); yes/no/right/true/false count only as
    words of their own (``there is no error`` says nothing).

    Args:
        text: The judge's output; None (a failed call) gives None.

    Returns:
        True, False, or None when no verdict can be read.

    Example:
        >>> [parse_verdict(t) for t in ("The answer is CORRECT", "incorrect", "Yes.", "asdf")]
        [True, False, True, None]
        >>> parse_verdict("Incorrect. The right answer is 12.")
        False
    """
    if not text:
        return None
    clean = _MARKDOWN.sub("", text.lower().replace("\u2019", "'"))
    labeled = list(_LABELED.finditer(clean))
    if labeled:
        m = labeled[-1]
        return _POLARITY[m["word"]] != bool(m["neg"])
    bracketed = list(_BRACKETED.finditer(clean))
    if bracketed:
        return _POLARITY[bracketed[-1]["word"]]
    found = [v for m in _WORD.finditer(clean) if (v := _word_verdict(clean, m)) is not None]
    if not found:
        return None
    first_start, first_value, first_alone = found[0]
    if clean[:first_start].strip(" \t\n\"'([{") == "" and first_alone:
        return first_value
    return found[-1][1]


def _word_verdict(text: str, m: re.Match[str]) -> tuple[int, bool, bool] | None:
    """``(start, polarity, stands_alone)`` of one verdict word, or None if it is not one."""
    word = m.group(1)
    after = text[m.end() :].lstrip(" \t\"')]}")
    if after.startswith("?"):
        return None  # a question ("correct?"), not an answer
    before = text[: m.start()].rstrip(" \t\"'([{")
    alone = (before == "" or before[-1] in ".!?,;:\n-") and (after == "" or after[0] in ".!,;:\n-")
    if word in _STANDALONE:
        return (m.start(), _STANDALONE[word], True) if alone else None
    preceding = [w.replace("'", "") for w in re.findall(r"[a-z']+", before)[-3:]]
    negated = any(w in _NEGATIONS for w in preceding)
    return m.start(), _STRONG[word] != negated, alone


def fill_prompt(template: str, **fields: str) -> str:
    """Fill ``{name}`` placeholders by plain replacement, so that braces elsewhere (LaTeX,
    JSON) need no escaping.

    >>> fill_prompt("Q: {question} {x}", question="\\\\frac{1}{2}")
    'Q: \\\\frac{1}{2} {x}'
    """
    for name, value in fields.items():
        template = template.replace("{" + name + "}", value)
    return template


class Judge(Protocol):
    """Answers a list of prompts (user messages); None where a prompt got no answer."""

    def complete(self, prompts: list[str]) -> list[str | None]: ...


class HFJudge:
    """A causal LM judge through the :class:`~r1pipe.generation.Generator` interface.

    Args:
        generator: Any generator (e.g. :class:`~r1pipe.generation.hf.HFGenerator`).
        tokenizer: The judge's tokenizer; its chat template wraps each prompt.
        max_new_tokens: Tokens per verdict.
    """

    def __init__(self, generator: Any, tokenizer: Any, max_new_tokens: int = 32):
        self.generator, self.tokenizer, self.max_new_tokens = generator, tokenizer, max_new_tokens

    def complete(self, prompts: list[str]) -> list[str | None]:
        from r1pipe.generation.base import SamplingParams

        chats = [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
            )
            for p in prompts
        ]
        params = SamplingParams(n=1, temperature=0.0, max_new_tokens=self.max_new_tokens)
        return [g[0].text for g in self.generator.generate(chats, params)]


class OpenAIJudge:
    """A judge behind an OpenAI-compatible ``/chat/completions`` endpoint (greedy).

    Args:
        base_url: The API root, e.g. ``http://localhost:8000/v1``.
        model: The model name sent with each request.
        api_key: Sent as ``Authorization: Bearer``; None sends no header (local servers).
        max_new_tokens: ``max_tokens`` of each request.
        timeout_s: Per-request timeout.
        max_retries: Retries after a failed request (back-off 0.5 s, 1 s, ...).
        concurrency: Requests in flight.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        max_new_tokens: int = 32,
        timeout_s: float = 60.0,
        max_retries: int = 2,
        concurrency: int = 8,
    ):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key = model, api_key
        self.max_new_tokens, self.timeout_s = max_new_tokens, timeout_s
        self.max_retries, self.concurrency = max_retries, concurrency
        self.errors: list[str] = []
        """One line per request that failed after all retries."""

    def complete(self, prompts: list[str]) -> list[str | None]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._one, prompts))

    def _one(self, prompt: str) -> str | None:
        body = json.dumps(
            {
                "model": self.model,
                "messages": [{"role": "user", "content": prompt}],
                "temperature": 0.0,
                "max_tokens": self.max_new_tokens,
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        err = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(0.5 * 2 ** (attempt - 1))
            req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    data = json.loads(resp.read())
                return str(data["choices"][0]["message"]["content"] or "")
            except urllib.error.HTTPError as e:
                err = f"HTTP {e.code}"
                if e.code < 500 and e.code != 429:
                    break  # a client error (bad model name, bad key) will not fix itself
            except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
                err = f"{type(e).__name__}: {e}"
        self.errors.append(f"{self.url}: {err}")
        return None


def build_judge(cfg: JudgeConfig, device: Any, generation: GenerationConfig | None = None) -> Judge:
    """The judge ``cfg`` describes (``backend`` hf or openai), ready to call; an hf judge
    generates with the back end ``generation`` describes (``cfg.generation``; None: the
    defaults), in batches of ``cfg.batch_size``."""
    if cfg.backend == "openai":
        return OpenAIJudge(
            cfg.base_url,
            cfg.model,
            os.environ.get(cfg.api_key_env) or None,
            max_new_tokens=cfg.max_new_tokens,
            timeout_s=cfg.timeout_s,
            max_retries=cfg.max_retries,
            concurrency=cfg.concurrency,
        )
    if cfg.backend == "hf":
        from r1pipe.config.schema import ModelConfig
        from r1pipe.generation.build import build_generator
        from r1pipe.models import load_model, load_tokenizer, resolve_dtype

        assert cfg.path is not None
        spec = ModelConfig(name="judge", path=cfg.path)
        tokenizer = load_tokenizer(cfg.path)
        model = load_model(cfg.path, spec, dtype=resolve_dtype(spec, device), device=device)
        generator = build_generator(
            model,
            tokenizer,
            generation or GenerationConfig(),
            batch_size=cfg.batch_size,
            model_path=cfg.path,
        )
        return HFJudge(generator, tokenizer, cfg.max_new_tokens)
    raise ValueError(f"judge backend {cfg.backend!r} cannot be built")


def judge_answers(
    judge: Judge,
    template: str,
    questions: list[str],
    references: list[str],
    completions: list[str],
) -> tuple[list[bool | None], list[str | None]]:
    """Ask the judge about each completion's summary (the text after ``</think>``).

    Returns:
        The parsed verdicts (None: unknown or failed) and the judge's raw texts.
    """
    prompts = [
        fill_prompt(template, question=q, reference=r, response=split_think(c)[1])
        for q, r, c in zip(questions, references, completions, strict=True)
    ]
    raw = judge.complete(prompts) if prompts else []
    return [parse_verdict(t) for t in raw], raw
