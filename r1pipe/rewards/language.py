r"""The R1 language consistency reward: the share of the reasoning written in the target language.

DeepSeek-R1 adds this reward during reasoning RL because R1-Zero's chains of thought drifted
between languages: it is "the proportion of target language words in the CoT". Telling a word's
*language* apart needs a model, so this pure function uses a word's *script* as the proxy
(Latin for English/French/..., Han for Chinese, Cyrillic for Russian, ...), which is what the
observed failure mode (English reasoning that switches into Chinese) needs.

Counting rules, so that math-heavy reasoning is not mistaken for a language switch:

* a word is a maximal run of letters (``\p{L}``, with their combining marks); Han characters
  count one word each, because Chinese and Japanese are written without spaces;
* digits, punctuation and math symbols are not letters, so they are neutral;
* LaTeX commands (``\frac``, ``\begin{aligned}``) and the ``<think>``/``<answer>`` tags are
  markup, not words, and are removed first;
* letters that belong to no script (``ℝ``, math-italic ``𝑥``) and a Greek letter standing alone
  (``π``, ``θ``: conventional math symbols in every language) are neutral unless the target
  itself is written in that script.

Single Latin letters used as variables (``x = 2``) do count as Latin words; for a non-Latin
target this lowers the score of formula-heavy reasoning somewhat, equally for every completion.
"""

from __future__ import annotations

import regex

from r1pipe.rewards.parsing import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, split_think

__all__ = ["LANGUAGE_SCRIPTS", "language_consistency_reward", "mixed_language"]

_LATIN = r"\p{Latin}"
_CYRILLIC = r"\p{Cyrillic}"

#: Target language code -> the ``regex`` character-class body of the letters written in it.
#: Japanese uses Script_Extensions for kana so that the prolonged sound mark "ー" (script
#: Common, but used only with kana) belongs to the word it lengthens.
LANGUAGE_SCRIPTS: dict[str, str] = {
    **{
        code: _LATIN
        for code in ("en", "fr", "de", "es", "it", "pt", "nl", "pl", "sv", "tr", "vi", "id")
    },
    "ru": _CYRILLIC,
    "uk": _CYRILLIC,
    "zh": r"\p{Han}",
    "ja": r"\p{Han}\p{scx=Hiragana}\p{scx=Katakana}",
    "ko": r"\p{Hangul}",
    "ar": r"\p{Arabic}",
    "el": r"\p{Greek}",
    "he": r"\p{Hebrew}",
    "hi": r"\p{Devanagari}",
}

# One Han character, or a run of other letters each followed by its combining marks (so that
# "café" in decomposed form, Arabic vowel marks and Devanagari vowel signs stay in one word).
_WORD_RE = regex.compile(r"(?V1)\p{Han}|(?:[\p{L}--\p{Han}]\p{M}*)+")
# Markup removed before counting: \begin{name}/\end{name} first (the environment name is also
# not a word), then any other control word; and the R1 tags, which a truncated completion
# without a closing </think> would otherwise contribute as the English word "think".
_MARKUP_RE = regex.compile(
    r"\\(?:begin|end)\s*\{[^}]*\}|\\[A-Za-z]+|"
    + "|".join(regex.escape(tag) for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE))
)
# Letters of script Common (math alphanumerics, double-struck letters) tell nothing about the
# language; marks are included so that a mark attached to such a letter does not count either.
_SCRIPTLESS_RE = regex.compile(r"[\p{Common}\p{Inherited}]+")
_LONE_GREEK_RE = regex.compile(r"\p{Greek}\p{M}*")
_TARGET_RES = {
    code: regex.compile(r"(?:[" + script + r"]\p{M}*)+")
    for code, script in LANGUAGE_SCRIPTS.items()
}


def _reasoning(completion: str) -> str:
    reasoning, _ = split_think(completion)
    # The paper scores the chain of thought; without a well-formed think block there is no
    # separate CoT, so the whole completion is what the model "thought" in.
    return completion if reasoning is None else reasoning


def _word_counts(text: str, target_language: str) -> tuple[int, int]:
    """Return ``(target_words, counted_words)`` in ``text``."""
    target_re = _TARGET_RES[target_language]
    target_is_greek = target_language == "el"
    target = counted = 0
    for word in _WORD_RE.findall(_MARKUP_RE.sub(" ", text)):
        if _SCRIPTLESS_RE.fullmatch(word):
            continue
        if not target_is_greek and _LONE_GREEK_RE.fullmatch(word):
            continue
        counted += 1
        if target_re.fullmatch(word):
            target += 1
    return target, counted


def _check_language(target_language: str) -> None:
    if target_language not in LANGUAGE_SCRIPTS:
        raise ValueError(
            f"unknown target_language {target_language!r}; "
            f"expected one of {sorted(LANGUAGE_SCRIPTS)}"
        )


def language_consistency_reward(completion: str, target_language: str = "en") -> float:
    """Share of the words in the chain of thought that are written in the target language.

    The chain of thought is the text inside ``<think>...</think>`` (see
    :func:`~r1pipe.rewards.parsing.split_think`), or the whole completion when there is no
    well-formed think block. A word is in the target language when all of its letters are in
    the target's script (:data:`LANGUAGE_SCRIPTS`); see the module docstring for what counts
    as a word.

    Args:
        completion: The generated text.
        target_language: Language code, a key of :data:`LANGUAGE_SCRIPTS` (e.g. ``"en"``,
            ``"zh"``, ``"ja"``, ``"ko"``, ``"ru"``, ``"ar"``).

    Returns:
        ``target_words / counted_words`` in [0, 1]; 1.0 when the reasoning has no counted
        words at all (only numbers and symbols: nothing is mixed).

    Raises:
        ValueError: If ``target_language`` is unknown (a config typo must not score 0).

    Example:
        >>> language_consistency_reward("<think>The answer 是 42</think> <answer>42</answer>")
        0.6666666666666666
        >>> language_consistency_reward("<think>答案是 42</think>", target_language="zh")
        1.0
        >>> language_consistency_reward("<think>3 + 4 = 7</think>")
        1.0
    """
    _check_language(target_language)
    target, counted = _word_counts(_reasoning(completion), target_language)
    return 1.0 if counted == 0 else target / counted


def mixed_language(completion: str, target_language: str = "en", threshold: float = 0.95) -> bool:
    """Whether the chain of thought mixes languages: a readability filter for generated data.

    Args:
        completion: The generated text.
        target_language: Language code, a key of :data:`LANGUAGE_SCRIPTS`.
        threshold: The smallest share of target-language words that still counts as
            consistent, in [0, 1].

    Returns:
        True if :func:`language_consistency_reward` is below ``threshold``.

    Raises:
        ValueError: If ``target_language`` is unknown or ``threshold`` is outside [0, 1].

    Example:
        >>> mixed_language("<think>The answer 是 42</think>")
        True
        >>> mixed_language("<think>The answer is 42</think>")
        False
    """
    if not 0.0 <= threshold <= 1.0:  # also rejects NaN
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    return language_consistency_reward(completion, target_language) < threshold
