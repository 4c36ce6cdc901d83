"""The one record type every task produces."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Example:
    """One problem of a task.

    Attributes:
        id: Stable identifier (row index for files, a counter for synthetic tasks).
        question: The user's text, before any template or instruction.
        reference: The checkable reference answer.
        response: The R1-format target (``<think>...</think>`` then a summary with the
            answer) for SFT; None where the source has no worked solution.
        source: ``reasoning`` (a task's problem: checkable answer, the task's instruction)
            or ``general`` (a non-reasoning query: no reference, no instruction; rewarded by
            reward models in rl-all).
    """

    id: str
    question: str
    reference: str
    response: str | None = None
    source: str = "reasoning"


#: The sources an :class:`Example` can come from.
SOURCES = ("reasoning", "general")
