"""Rule-based rewards of the DeepSeek-R1 recipe: format and accuracy, as pure functions.

Example:
    >>> from r1pipe.rewards import accuracy_reward, format_reward
    >>> completion = "<think>16 - 3 - 4 = 9 eggs, 9 * 2 = 18</think> <answer>18</answer>"
    >>> format_reward(completion), accuracy_reward(completion, "18", verifier="numeric")
    (1.0, 1.0)
"""

from r1pipe.rewards.accuracy import (
    VERIFIERS,
    accuracy_reward,
    is_correct,
    math_equal,
    parse_number,
)
from r1pipe.rewards.combine import BUILTIN_REWARDS, RewardResult, compute_rewards
from r1pipe.rewards.format import format_reward
from r1pipe.rewards.language import (
    LANGUAGE_SCRIPTS,
    language_consistency_reward,
    mixed_language,
)
from r1pipe.rewards.length import cosine_length_reward, kimi_length_rewards
from r1pipe.rewards.parsing import (
    ANSWER_FORMATS,
    extract_answer,
    extract_boxed,
    extract_gsm8k_reference,
    split_think,
)

__all__ = [
    "ANSWER_FORMATS",
    "BUILTIN_REWARDS",
    "LANGUAGE_SCRIPTS",
    "VERIFIERS",
    "RewardResult",
    "accuracy_reward",
    "compute_rewards",
    "cosine_length_reward",
    "extract_answer",
    "extract_boxed",
    "extract_gsm8k_reference",
    "format_reward",
    "is_correct",
    "kimi_length_rewards",
    "language_consistency_reward",
    "math_equal",
    "mixed_language",
    "parse_number",
    "split_think",
]
