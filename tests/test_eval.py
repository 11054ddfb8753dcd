"""eval.py end to end on a tiny untrained checkpoint, its error messages, and the scripted floor and ceiling."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tokenizer as tk
from env import TEST_SEEDS
from eval import scripted_success
from model import GPT, GPTConfig, save_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    return subprocess.run([sys.executable, "eval.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_eval_json_on_a_tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(str(ckpt), GPT(GPTConfig(vocab_size=tk.get_tokenizer().n_vocab, block_size=256, n_layer=1,
                                             n_head=2, n_embd=16)))
    out = run(f"--ckpt={ckpt}", "--n=6", "--pi=full,key", "--json=1")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["student_greedy"] == 0.0 and res["expert"] == 1.0
    for key in ["student_sampled", "protocol_errors_greedy", "teacher_full", "delta_key", "kl_full", "random"]:
        assert key in res


def test_eval_errors_are_one_line(tmp_path):
    out = run(f"--ckpt={tmp_path / 'missing.pt'}")
    assert out.returncode != 0 and out.stderr.strip() == f"error: no checkpoint at {tmp_path / 'missing.pt'}"
    out = run("--pi=secret")
    assert "unknown PI form 'secret'" in out.stderr and "Traceback" not in out.stderr
    out = run("--env=toy_zoo")
    assert "unknown env 'toy_zoo'" in out.stderr and "Traceback" not in out.stderr
    out = run("--n=ten")
    assert "--n='ten' is not a valid int" in out.stderr


def test_scripted_floor_and_ceiling():
    seeds = list(TEST_SEEDS[:300])
    assert scripted_success(seeds, "L2", "expert") == 1.0
    assert 0.03 < scripted_success(seeds, "L2", "random") <= 0.30  # G3: nothing shallow beats 30%


def test_pi_copy_against_plain_forwards_of_the_whole_text():
    """pi_copy's batched, padded numbers equal one unpadded forward per text, with the positions found by matching
    the encoded expert write; the three PI lines differ only where they should."""
    import random
    from env import TRAIN_SEEDS, build_world, make, render, solve
    from eval import _write_variants, pi_copy
    from tokenizer import encode

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tk.get_tokenizer().n_vocab, block_size=512, n_layer=1, n_head=2, n_embd=16))
    model.eval()
    usable = [s for s in TRAIN_SEEDS[:60] if solve(build_world(s))[-1] != "say none"]
    seeds = [s for s in usable if build_world(s).family == "BUY"][:2] + \
        [s for s in usable if build_world(s).family == "EXCHANGE"][:2]
    got = pi_copy(model, seeds)
    rng, env, want = random.Random(0), make("toy_shop"), {}
    for seed in seeds:
        world = build_world(seed)
        env.reset(seed)
        for action in solve(world)[:-2]:
            env.step(action)
        variants = _write_variants(world, rng)
        (pi0, w0), (pi1, w1), (pi2, w2) = variants
        assert w1[:-1] == w0[:-1] and {w0[-1], w1[-1]} == {"gift", "card"}
        assert sum(a != b for a, b in zip(w0, w2)) == 1 and pi0 != pi2
        for k, (pi, write) in enumerate(variants):
            for view, who in ((pi, "teacher"), (None, "student")):
                if who == "student" and k > 0:
                    continue
                ids = encode(render(env.history, view) + "<|agent|> " + " ".join(write))
                with torch.no_grad():
                    p = model(torch.tensor([ids]))[0][0].softmax(-1)
                at = 1 if write[0] == "buy" else 3
                row = len(ids) - (3 if write[0] == "buy" else 2)  # buy j5 1 card | exchange o 6 j5 n2 card
                assert ids[row] == encode(" " + write[at])[0]
                if k in (0, 2):
                    want.setdefault(f"{who}_id", []).append(p[row - 1, ids[row]].item())
                if k in (0, 1):
                    want.setdefault(f"{who}_pay", []).append(p[len(ids) - 2, ids[-1]].item())
    assert set(got) == set(want)
    for name, values in want.items():
        assert got[name] == pytest.approx(sum(values) / len(values), abs=1e-5), name


def test_decisions_against_greedy_decoding_of_the_shipped_base():
    """decisions' batched teacher-forced counts equal free greedy decoding, one task at a time, from the expert's
    transcript: `row` iff the decoded text goes on with the row the turn names, `turn` iff with the whole turn. The
    decisive turn, its row and the text before the row are found here from solve's plan and by regex."""
    import re
    from env import build_world, expert_act, make, render, solve
    from eval import decisions
    from model import load_checkpoint
    from pretrain import ensure_base
    from tokenizer import decode, encode

    model = load_checkpoint(ensure_base("toy_shop"))[0].eval()

    def greedy_goes_on_with(text, target):
        ids, out = encode(text), ""
        while len(out) < len(target) and target.startswith(out):
            with torch.no_grad():
                ids.append(model(torch.tensor([ids]))[0][0, -1].argmax().item())
            out = decode(ids[len(encode(text)):])
        return out.startswith(target)

    seeds, env = list(TEST_SEEDS[:30]), make("toy_shop")
    for cot in (False, True):
        want = {}
        for seed in seeds:
            world = build_world(seed)
            env.reset(seed)
            for action in solve(world):  # up to the first action that is not a read
                if action.split()[0] not in ("profile", "search", "order"):
                    break
                env.step(action)
            text = render(env.history) + "<|agent|>"
            turn = expert_act(render(env.history), cot=True) if cot else action
            if cot:
                before, row = re.match(r"(<\|think\|>(?: buy| return \w+| exchange \w+ \w+)?) (.+?) (?:\.|<\|/think)",
                                       turn).groups()
            else:
                n = {"buy": 1, "return": 2, "exchange": 3}.get(turn.split()[0], 0)
                before, row = " ".join(turn.split()[:n]), " ".join(turn.split()[n:n + 1] if n else turn.split())
            h = want.setdefault(world.family, {"row": 0, "turn": 0, "n": 0})
            h["row"] += greedy_goes_on_with(text + (" " + before if before else ""), " " + row)
            h["turn"] += greedy_goes_on_with(text, " " + turn)
            h["n"] += 1
        got = decisions(model, seeds, cot=cot)
        assert got == {f: {"row": h["row"] / h["n"], "turn": h["turn"] / h["n"], "n": h["n"]} for f, h in want.items()}
        rows = [h["row"] for h in want.values()]
        assert sum(rows) > 0 and sum(rows) < len(seeds), "the base should get some rows and miss others"


def test_buy_selection_on_scripted_episodes():
    """The expert's buys are all correct; a buy of the wrong row and payment is counted as such."""
    from env import make, render, expert_act, solve
    from eval import buy_selection

    envs = []
    for seed in range(60):
        env = make("toy_shop")
        env.reset(seed)
        if env.world.family != "BUY" or solve(env.world)[-1] == "say none":
            continue
        while not env.done:  # half of them with the chain of thought before the buy
            env.step(expert_act(render(env.history), cot=seed % 2 == 0))
        envs.append(env)
    assert buy_selection(envs, "L2") == dict(in_rows=1.0, colour=1.0, stock=1.0, cheapest=1.0, payment=1.0)
    env = make("toy_shop")
    env.reset(envs[0].seed)
    plan = solve(env.world)
    wrong = next(r for r in env.world.rows if r.color != env.world.color)
    pay = "card" if plan[2].endswith("gift") else "gift"
    for action in plan[:2] + [f"buy {wrong.id} {env.world.qty} {pay}", "say none"]:
        env.step(action)
    assert buy_selection([env], "L2") == dict(in_rows=1.0, colour=0.0, stock=0.0, cheapest=0.0, payment=0.0)


def test_results_table_from_summaries(tmp_path):
    from eval import results_table

    runs = [("RL", 0.2, {}), ("RL", 0.4, {}), ("π-Distill α=0.5", 0.7, {"teacher_pi_success": 0.9, "wall_clock_s": 300}),
            ("my ablation", 0.1, {})]
    for i, (method, success, extra) in enumerate(runs):
        run = tmp_path / f"run{i}"
        run.mkdir()
        (run / "summary.json").write_text(json.dumps({"method": method, "heldout_success": success, **extra}))
    table = results_table(0.05, 1.0, 500, runs_dir=str(tmp_path)).splitlines()
    assert table[0].startswith("| method | held-out success % (greedy, 500 tasks)")
    assert "| base | 5.0 | - |  |  |" in table and "| expert | 100.0 | - |  |  |" in table
    assert "| RL | 30.0 ± 14.1 | 2 |  |  |" in table and "| π-Distill α=0.5 | 70.0 | 1 | 90.0 | 5.0 |" in table
    assert "| OPSD | not run yet | 0 | | |" in table and table[-1] == "| my ablation | 10.0 | 1 |  |  |"


def test_learning_curves_from_logs(tmp_path):
    from eval import learning_curves

    logs = {"a": [("sft", 100, 0.2), ("sft", 200, 0.3), ("rl", 50, 0.5)], "b": [("sft", 200, 0.4)]}
    for name, points in logs.items():
        (tmp_path / name).mkdir()
        rows = [{"phase": p, "step": s, "heldout_success": v, "loss": 1.0} for p, s, v in points]
        rows.insert(1, {"phase": "sft", "step": 150, "loss": 0.5})  # a line without an evaluation
        (tmp_path / name / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "a" / "summary.json").write_text(json.dumps({"heldout_success": 0.55}))
    table = learning_curves(str(tmp_path / "*")).splitlines()
    assert table[0] == "| run | sft 100 | sft 200 | rl 50 | final |"
    assert table[2:] == ["| a | 20.0 | 30.0 | 50.0 | 55.0 |", "| b |  | 40.0 |  |  |"]
    both = learning_curves(f"{tmp_path / 'b'},{tmp_path / 'a'},{tmp_path / 'a*'}").splitlines()  # a list of globs
    assert both[2:] == table[2:]  # each folder once, in name order
    with pytest.raises(SystemExit, match="no run folder"):
        learning_curves(str(tmp_path / "nothing*"))


def test_tables_go_between_their_readme_markers(tmp_path):
    from eval import write_table_into_readme

    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- sft curves -->\nold\n<!-- /sft curves -->\nrest\n")
    write_table_into_readme("| a |", str(readme), marker="sft curves")
    assert readme.read_text() == "intro\n<!-- sft curves -->\n| a |\n<!-- /sft curves -->\nrest\n"
    with pytest.raises(SystemExit, match="no <!-- results table -->"):
        write_table_into_readme("| a |", str(readme))
    from eval import main

    with pytest.raises(SystemExit, match="give --curves too"):
        main(["--readme=sft curves"])
