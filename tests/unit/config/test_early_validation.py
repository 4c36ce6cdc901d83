"""Issue 12, "validation that comes too late, or never": what composition refuses, in one line
naming the key or the file, before any stage runs."""

import pytest

from r1pipe.config import compose
from r1pipe.errors import UserError


def _refused(overrides: list[str]) -> str:
    with pytest.raises(UserError) as e:
        compose(["conf=smoke", *overrides])
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


# ---- Hydra's `+` adds keys the schema never saw ----------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "+stage.cold_start.max_stepz=5",
            "config error: unknown config key 'stage.cold_start.max_stepz' (did you mean "
            "'stage.cold_start.max_steps'?)",
        ),
        ("+stage.max_steps=abc", "config error: unknown config key 'stage.max_steps'"),
        ("++stage.cold_start.max_stepz=5", "config error: unknown config key"),
        ("+foo=1", "config error: unknown config key 'foo'"),
        ("+model.hidden_sise=3", "(did you mean 'model.hidden_size'?)"),
    ],
)
def test_plus_cannot_add_a_key_the_schema_lacks(override, message):
    assert message in _refused([override])


def test_plus_into_an_open_mapping_is_still_typed():
    # deepspeed.extra is dict[str, Any] and the reward weights dict[str, float]: new keys are
    # fine there, values of the wrong type are not.
    cfg, _ = compose(["conf=smoke", "+deepspeed.extra.wall_clock_breakdown=true"])
    assert cfg.deepspeed.extra == {"wall_clock_breakdown": True}
    msg = _refused(["+stage.rl_reasoning.rewards.accuracy2=abc"])
    assert "'stage.rl_reasoning.rewards.accuracy2'" in msg
