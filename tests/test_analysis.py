"""analysis.py and figures.py without training: the runs each analysis needs, skip/resume bookkeeping, what is kept
of a run, and the tables against numbers worked by hand."""

import json
import os

import pytest

import analysis
import figures


def test_cells_name_their_options_and_two_analyses_share_a_cell():
    forms = analysis.cells("pi_forms", [0])
    assert len(forms) == 5 * 3 + 5 + 1 and len({c.name for c in forms}) == len(forms)
    main = analysis.pi_distill(0)  # full PI, α = 0.5, β = 0.25
    assert main.name == "an_pi_distill_alpha0.5_beta0.25_pifull_s0" and main in forms
    assert main in analysis.cells("beta", [0])  # the β = 0.25 cell of the sweep is the pi_forms one: it runs once
    tools = analysis.pi_distill(3, pi="tools", alpha=1.0, beta=0.0)
    assert tools.argv() == ["--alpha", "1.0", "--beta", "0.0", "--pi", "tools", "--seed", "3", "--run", tools.name]
    assert tools in analysis.cells("collapse", [3]) and analysis.grpo(0).argv()[:2] == ["--pi_coverage", "0.0"]
    assert analysis.opsd(0, pi="hint").argv()[:4] == ["--beta", "0.5", "--pi", "hint"]
    assert len(analysis.cells("collapse", [0, 1])) == 8
    assert len(set(analysis.cells("pi_forms", [0]) + analysis.cells("collapse", [0]) + analysis.cells("beta", [0]))) == 32


def test_dry_run_lists_every_run_and_sums_the_estimates(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    analysis.main(["collapse", "--dry_run", "1"])
    out = capsys.readouterr().out.strip().splitlines()
    runs = analysis.cells("collapse", [0])
    assert len(out) == len(runs) + 1 and all(line.startswith("todo") for line in out[:-1])
    assert f"about {sum(c.estimate_s() for c in runs):.0f} s" in out[-1]
    assert not os.path.exists("out")  # a dry run starts nothing


def test_bad_arguments_are_one_line_errors():
    for argv in ([], ["pi_form"], ["beta", "--seeds", "a,b"], ["beta", "--jobs", "0"]):
        with pytest.raises(SystemExit) as e:
            analysis.main(argv)
        assert isinstance(e.value.code, str) and "\n" not in e.value.code


def fake_run(cell, log, summary):
    folder = os.path.join("out", cell.name)
    os.makedirs(folder)
    with open(os.path.join(folder, "log.jsonl"), "w") as f:
        f.write("\n".join(json.dumps(r) for r in log) + "\n")
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump({**summary, "config": {"ignored": 1}}, f)


def test_collect_keeps_the_evaluations_and_25_round_means(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cell = analysis.pi_distill(0, pi="tools", alpha=1.0)
    log = [{"step": s, "kl": float(s), "teacher_success": 0.5} for s in range(1, 51)]
    log[24].update(heldout_success=0.25, teacher_pi_success=0.75, teacher_other_pi_success=0.5)
    assert analysis.state(cell) == "todo"
    fake_run(cell, log, {"heldout_success": 0.3})
    assert analysis.state(cell) == "finished"
    analysis.collect(cell)
    assert analysis.state(cell) == "done"
    kept = analysis.load(cell)
    assert kept["heldout_success"] == 0.3 and "config" not in kept
    assert kept["options"] == {"alpha": 1.0, "beta": 0.25, "pi": "tools"}
    assert kept["evals"] == [{"step": 25, "heldout_success": 0.25, "teacher_pi_success": 0.75,
                              "teacher_other_pi_success": 0.5}]
    assert kept["means"] == [{"step": 25, "kl": 13.0, "teacher_success": 0.5},  # mean of 1..25, of 26..50
                             {"step": 50, "kl": 38.0, "teacher_success": 0.5}]


def summary(held, teacher_evals=(), student_means=()):
    return {"heldout_success": held, "evals": [{"step": 50 * (i + 1), "heldout_success": held, "teacher_pi_success": t}
                                              for i, t in enumerate(teacher_evals)],
            "means": [{"step": 25 * (i + 1), "student_success": s} for i, s in enumerate(student_means)]}


def test_pi_forms_table_by_hand(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(figures, "pyplot", lambda: None)
    prem = {"n": 500, "student": 0.1, **{f: {"delta": 0.2, "kl_ts": 1.0, "kl_st": 0.5} for f in figures.PI_FORMS}}
    runs = {(0.5, "full"): [summary(0.6, [0.8, 0.9]), summary(0.8, [0.7, 0.95])],
            ("GRPO", None): [summary(0.3, student_means=[0.2, 0.4, 0.3])]}
    figures.pi_forms(prem, runs)
    table = open(os.path.join("docs", "analyses", "pi_forms.md")).read()
    row = [line for line in table.splitlines() if line.startswith("| full |")][0].split(" | ")
    assert row[5] == "70.0 ± 14.1 (2)"  # mean of 60 and 80, sample std 14.14
    assert row[8] == "+52.5"  # best teacher (0.9, 0.95) mean 0.925 minus GRPO's best 25-round mean 0.4
    assert row[4] == row[6] == row[7] == "—" and row[1] == "+20.0"


def test_every_figure_draws_from_summaries(tmp_path, monkeypatch):
    """With matplotlib installed, each analysis writes its PNGs from summaries alone (skipped without it: the
    figures are the one optional part of the project)."""
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    prem = {"n": 500, "student": 0.1, **{f: {"delta": 0.1 * i, "kl_ts": 1.0 + i, "kl_st": 0.5}
                                        for i, f in enumerate(figures.PI_FORMS)}}
    s = summary(0.6, [0.8, 0.9], [0.2, 0.3])
    s["means"] = [{**m, "kl": 1.0} for m in s["means"]]
    s["evals"] = [{**e, "teacher_other_pi_success": 0.1} for e in s["evals"]]
    figures.pi_forms(prem, {**{(a, f): [s, s] for a in (0.0, 0.5, 1.0, "OPSD") for f in figures.PI_FORMS},
                            ("GRPO", None): [s]})
    figures.collapse({(a, b): [s] for a in (0.5, 1.0) for b in (0.0, 0.25)})
    figures.beta({(k, b): [s] for k in (0.5, 1.0, "OPSD") for b in (0.0, 0.1, 0.25, 0.5)})
    pngs = sorted(os.listdir(os.path.join("docs", "figures")))
    assert pngs == ["beta.png", "collapse.png", "pi_forms_delta_vs_delta_max.png", "pi_forms_kl_vs_success.png",
                    "pi_forms_opsd.png"]
    assert all(os.path.getsize(os.path.join("docs", "figures", p)) > 5000 for p in pngs)
