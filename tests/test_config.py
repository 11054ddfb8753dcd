"""`--key value` / `--key=value` parsing: overrides by type, --help from the fields' comments, loud failures for unknown
keys, missing values and wrong types; run names and table labels from the options changed."""

import dataclasses
from dataclasses import dataclass

import pytest

from config import label, parse_args, run_name


@dataclass
class Cfg:
    steps: int = 10  # optimizer steps
    lr: float = 1e-3  # learning rate
    cot: bool = False
    env: str = "toy_shop"  # the environment


def test_overrides_by_type():
    cfg = parse_args(Cfg(), ["--steps=3", "--lr=0.5", "--cot=1", "--env=toy_travel"])
    assert cfg == Cfg(steps=3, lr=0.5, cot=True, env="toy_travel")
    assert parse_args(Cfg(), []) == Cfg()
    both = parse_args(Cfg(), ["--steps", "3", "--lr=0.5", "--cot", "1", "--env", "toy_travel"])
    assert both == Cfg(steps=3, lr=0.5, cot=True, env="toy_travel")
    assert parse_args(Cfg(), ["--lr", "-1e-3"]).lr == -1e-3  # a negative number is a value, not an option


def test_help_lists_every_option_with_its_default_and_comment(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(Cfg(), ["--steps", "3", "--help"])
    assert e.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["--steps", "[10]", "optimizer", "steps"]
    assert lines[3].split() == ["--cot", "[False]"] and lines[4].split()[:2] == ["--env", "[toy_shop]"]
    assert len(lines) == 5


@dataclass
class Seeded(Cfg):
    seed: int = 0
    run: str = ""


def test_run_names_and_labels_list_the_changed_options():
    cfg = parse_args(Seeded(), ["--lr", "0.5", "--env", "toy_travel", "--cot", "1", "--seed", "2", "--run", "x"])
    assert run_name("demo", Seeded()) == "demo_s0" and label("Demo", Seeded()) == "Demo"
    assert run_name("demo", cfg) == "demo_lr0.5_cot1_env-toy_travel_s2"
    assert label("Demo", cfg) == "Demo (lr 0.5, cot 1, env toy_travel)"  # the seed and the run's name never count
    assert label("Demo", cfg, ("lr", "cot")) == "Demo (env toy_travel)"


@pytest.mark.parametrize("arg, message", [
    ("--stepz=3", "unknown option --stepz; valid: --steps --lr --cot --env"),
    ("--steps=three", "--steps='three' is not a valid int"),
    ("--cot=maybe", "--cot='maybe' is not a valid bool"),
    ("steps=3", "options look like --key value or --key=value"),
    ("--steps", "--steps needs a value"),
])
def test_bad_arguments_fail_loudly(arg, message):
    with pytest.raises(SystemExit, match=message):
        parse_args(Cfg(), [arg])


def test_every_script_documents_every_option_and_takes_the_cards_command():
    """Each script's --help has a one-line meaning for every option; `python pi_distill.py --env toy_shop` parses."""
    import bench
    import eval as E
    import opsd
    import pi_distill
    import pretrain
    import report
    import sft_rl_baseline
    from config import field_help

    for cfg in (pi_distill.Config(), opsd.Config(), sft_rl_baseline.Config(), E.EvalConfig(), pretrain.PretrainConfig(),
                bench.BenchConfig(), report.ReportConfig()):
        helps = field_help(type(cfg))
        missing = [f.name for f in dataclasses.fields(cfg) if not helps.get(f.name)]
        assert not missing, f"{type(cfg).__module__}: {missing}"
    assert parse_args(pi_distill.Config(), ["--env", "toy_shop"]) == pi_distill.Config()
    assert parse_args(pi_distill.Config(), ["--alpha", "1", "--pi=tools"]) == pi_distill.Config(alpha=1.0, pi="tools")
