"""Prompt templates: the tokenizer's chat template, or the paper's R1-Zero template."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from r1pipe.config.schema import TaskConfig

# DeepSeek-R1 paper, Table 1 (the template used to train DeepSeek-R1-Zero).
R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning "
    "process here </think> <answer> answer here </answer>. User: {prompt}. Assistant:"
)


def build_prompt(question: str, task: TaskConfig, tokenizer: PreTrainedTokenizerBase) -> str:
    """The exact prompt text the model sees before its response.

    >>> from r1pipe.models import build_char_tokenizer
    >>> from r1pipe.config.schema import TaskConfig
    >>> build_prompt("1+2=?", TaskConfig(), build_char_tokenizer())
    '<|im_start|>user\\n1+2=?<|im_end|>\\n<|im_start|>assistant\\n'
    """
    text = question + task.instruction
    if task.template == "r1_zero":
        return R1_ZERO_TEMPLATE.format(prompt=text)
    messages = []
    if task.system_prompt:
        messages.append({"role": "system", "content": task.system_prompt})
    messages.append({"role": "user", "content": text})
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert isinstance(out, str)
    return out
