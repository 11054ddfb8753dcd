"""report.py: the results table and the learning curves from run summaries, collected from run folders, written
between their markers."""

import json

import pytest

import report as R


def summaries(tmp_path):
    """A results/ folder as report.collect writes it: base.json and one file per run."""
    res = tmp_path / "results"
    res.mkdir()
    (res / "base.json").write_text(json.dumps({"base": 0.05, "expert": 1.0, "n": 500, "ood_success": 0.02,
                                               "reading": 0.6, "expert_ood": 1.0}))
    runs = [("RL", 0.2, {"curve": {"rl 50": 0.1}, "ood_success": 0.1, "reading": 0.5}),
            ("RL", 0.4, {"ood_success": 0.2, "reading": 0.4}),
            ("π-Distill α=0.5", 0.7, {"teacher_pi_success": 0.9, "wall_clock_s": 300}), ("my ablation", 0.1, {})]
    for i, (method, success, extra) in enumerate(runs):
        (res / f"run{i}.json").write_text(json.dumps({"run": f"run{i}", "method": method, "heldout_success": success,
                                                      **extra}))
    return res


def test_results_table_from_summaries(tmp_path):
    rows = R.load(str(summaries(tmp_path)))
    table = R.results_table(rows, R.ROW_ORDER + sorted(set(rows) - set(R.ROW_ORDER))).splitlines()
    assert table[0].startswith("| method | held-out success % (greedy, 500 tasks)")
    assert "| base | 5.0 | - | 2.0 | 60.0 |  |  |" in table and "| expert | 100.0 | - | 100.0 |  |  |  |" in table
    assert "| RL | 30.0 ± 14.1 | 2: 20.0 / 40.0 | 15.0 ± 7.1 | 45.0 ± 7.1 |  |  |" in table
    assert "| π-Distill α=0.5 | 70.0 | 1: 70.0 |  |  | 90.0 | 5.0 |" in table
    assert "| OPSD | not in results/ | 0 | | | | |" in table
    assert table[-1] == "| my ablation | 10.0 | 1: 10.0 |  |  |  |  |"


def test_learning_curves_and_collect(tmp_path):
    logs = {"a": [("sft", 100, 0.2), ("sft", 200, 0.3), ("rl", 50, 0.5)], "b": [("sft", 200, 0.4)]}
    for name, points in logs.items():
        (tmp_path / "out" / name).mkdir(parents=True)
        rows = [{"phase": p, "step": s, "heldout_success": v, "loss": 1.0} for p, s, v in points]
        rows.insert(1, {"phase": "sft", "step": 150, "loss": 0.5})  # a line without an evaluation
        (tmp_path / "out" / name / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (tmp_path / "out" / name / "summary.json").write_text(json.dumps({"run": name, "method": "m",
                                                                          "heldout_success": 0.55}))
    R.collect(str(tmp_path / "out"), str(tmp_path / "results"))
    runs = [json.loads((tmp_path / "results" / f"{n}.json").read_text()) for n in ("a", "b")]
    assert runs[0]["curve"] == {"sft 100": 0.2, "sft 200": 0.3, "rl 50": 0.5}
    table = R.learning_curves(runs).splitlines()
    assert table[0] == "| run | sft 100 | sft 200 | rl 50 | final |"
    assert table[2:] == ["| a | 20.0 | 30.0 | 50.0 | 55.0 |", "| b |  | 40.0 |  | 55.0 |"]


def test_tables_go_between_their_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- learning curves -->\nold\n<!-- /learning curves -->\nrest\n")
    R.write_between_markers("| a |", str(readme), marker="learning curves")
    assert readme.read_text() == "intro\n<!-- learning curves -->\n| a |\n<!-- /learning curves -->\nrest\n"
    with pytest.raises(SystemExit, match="no <!-- results table -->"):
        R.write_between_markers("| a |", str(readme))
    with pytest.raises(SystemExit, match="no folder 'nowhere'"):
        R.main(["--collect", "nowhere"])
