"""`--key=value` parsing: overrides by type, and loud failures for unknown keys and wrong types."""

from dataclasses import dataclass

import pytest

from config import parse_args


@dataclass
class Cfg:
    steps: int = 10
    lr: float = 1e-3
    cot: bool = False
    env: str = "toy_shop"


def test_overrides_by_type():
    cfg = parse_args(Cfg(), ["--steps=3", "--lr=0.5", "--cot=1", "--env=toy_travel"])
    assert cfg == Cfg(steps=3, lr=0.5, cot=True, env="toy_travel")
    assert parse_args(Cfg(), []) == Cfg()


@pytest.mark.parametrize("arg, message", [
    ("--stepz=3", "unknown option --stepz; valid: --steps --lr --cot --env"),
    ("--steps=three", "--steps='three' is not a valid int"),
    ("--cot=maybe", "--cot='maybe' is not a valid bool"),
    ("steps=3", "arguments look like --key=value"),
])
def test_bad_arguments_fail_loudly(arg, message):
    with pytest.raises(SystemExit, match=message):
        parse_args(Cfg(), [arg])
