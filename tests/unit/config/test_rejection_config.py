"""rejection-sft and distill config: defaults compose, bad values fail with the key named."""

import pytest

from r1pipe.config import compose
from r1pipe.errors import UserError


def test_defaults_and_smoke():
    cfg, _ = compose([])
    rs = cfg.stage.rejection_sft
    assert rs.start == "previous" and rs.verify == "rule" and rs.judge.backend == "none"
    assert rs.general_file == "general_chat.jsonl"
    assert "{reference}" in rs.judge.prompt and "{response}" in rs.judge.prompt
    smoke, _ = compose(["conf=smoke"])
    assert smoke.stage.rejection_sft.sft.max_steps == 3 and smoke.stage.distill.sft.max_steps == 3


def test_paragraph_limit_on_by_default_and_switchable():
    cfg, _ = compose([])
    assert cfg.stage.rejection_sft.filters.max_paragraph_chars == 4000
    off, _ = compose(["stage.rejection_sft.filters.max_paragraph_chars=0"])
    assert off.stage.rejection_sft.filters.max_paragraph_chars == 0


def test_judge_and_sft_knobs_compose():
    cfg, _ = compose(
        [
            "stage.rejection_sft.verify=rule_then_judge",
            "stage.rejection_sft.judge.backend=openai",
            "stage.rejection_sft.judge.model=deepseek-v3",
            "stage.rejection_sft.judge.base_url=https://api.example.com/v1",
            "stage.rejection_sft.sft.lr=1e-5",
            "stage.rejection_sft.start=base",
            "stage.distill.include_general=false",
        ]
    )
    assert cfg.stage.rejection_sft.judge.model == "deepseek-v3"
    assert cfg.stage.rejection_sft.sft.lr == 1e-5


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (
            ["stage.rejection_sft.verify=judge"],
            "stage.rejection_sft.judge.backend: must be hf or openai",
        ),
        (["stage.rejection_sft.verify=vibes"], "stage.rejection_sft.verify: must be one of"),
        (
            ["stage.rejection_sft.judge.backend=openai"],
            "stage.rejection_sft.judge.model: is required",
        ),
        (["stage.rejection_sft.judge.backend=hf"], "stage.rejection_sft.judge.path: is required"),
        (
            [
                "stage.rejection_sft.judge.backend=openai",
                "stage.rejection_sft.judge.model=m",
                "stage.rejection_sft.judge.base_url=localhost:8000",
            ],
            "stage.rejection_sft.judge.base_url: must start with http",
        ),
        (
            ["stage.rejection_sft.judge.prompt=Is it right?"],
            "stage.rejection_sft.judge.prompt: must contain {reference}",
        ),
        (["stage.rejection_sft.start=scratch"], "stage.rejection_sft.start"),
        (["stage.rejection_sft.num_samples=0"], "stage.rejection_sft.num_samples"),
        (["stage.rejection_sft.temperature=0"], "stage.rejection_sft.temperature"),
        (["stage.rejection_sft.max_per_prompt=0"], "stage.rejection_sft.max_per_prompt"),
        (
            ["stage.rejection_sft.filters.language_threshold=1.5"],
            "stage.rejection_sft.filters.language_threshold",
        ),
        (
            ["stage.rejection_sft.cot_for_complex=true", "stage.rejection_sft.cot_generator=judge"],
            "stage.rejection_sft.judge.backend: must be hf or openai for cot_generator=judge",
        ),
        (
            ["stage.rejection_sft.sft.micro_batch_size=5"],
            "stage.rejection_sft.sft.global_batch_size",
        ),
        (["stage.rejection_sft.filters.dedupe=maybe"], "stage.rejection_sft.filters.dedupe"),
        (
            ["stage.rejection_sft.filters.max_paragraph_chars=-1"],
            "stage.rejection_sft.filters.max_paragraph_chars: must be >= 0",
        ),
        (["stage.rejection_sft.nope=1"], "unknown config key 'stage.rejection_sft.nope'"),
        (["stage.distill.sft.lr=0"], "stage.distill.sft.lr"),
    ],
)
def test_bad_values_name_the_key(overrides, needle):
    with pytest.raises(UserError) as e:
        compose(overrides)
    assert needle in str(e.value) and "\n" not in str(e.value)
