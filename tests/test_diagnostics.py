"""The diagnostics against plain references: pi_copy against unpadded forwards, decisions and reading against greedy
decoding of the shipped base, buy_selection on scripted episodes."""

import random

import pytest
import torch

import tokenizer as tk
from env import TEST_SEEDS
from model import GPT, IGNORE_INDEX, GPTConfig, load_checkpoint
from run import base_checkpoint
from skills import SKILLS, skill_doc, skill_question, skill_table
from transcripts import collate, encode_pieces


def test_pi_copy_against_plain_forwards_of_the_whole_text():
    """pi_copy's batched, padded numbers equal one unpadded forward per text, with the positions found by matching
    the encoded expert write; the three PI lines differ only where they should."""
    import random
    from env import TRAIN_SEEDS, build_world, make, render, solve
    from diagnostics import _write_variants, pi_copy
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
    from diagnostics import decisions
    from model import load_checkpoint
    from tokenizer import decode, encode

    model = load_checkpoint(base_checkpoint("toy_shop"))[0].eval()

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
    from diagnostics import buy_selection

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


def test_reading_score_equals_greedy_decoding():
    """reading() scores in one teacher-forced pass; a plain greedy loop, token by token, must agree doc by doc."""
    model, _ = load_checkpoint(base_checkpoint("toy_shop"))  # the shipped base: right on some, wrong on others
    model.eval()
    rng, right = random.Random(7), 0
    newline = tk.encode("\n")[0]
    for kind in SKILLS:
        for _ in range(12):
            rows, table, has_stock = skill_table(rng)
            if not has_stock:
                continue
            q, a = skill_question(rng, rows, has_stock, kind)
            doc = skill_doc(table, [(q, a)])
            prompt = tk.encode("".join(text for text, _ in doc[:-1]))  # everything before the answer
            ids = list(prompt)
            with torch.no_grad():
                while ids[-1] != newline and len(ids) < len(prompt) + 12:
                    ids.append(model(torch.tensor([ids]))[0][0, -1].argmax().item())
            greedy_right = tk.decode(ids[len(prompt):]) == f" {a}\n"
            x, y = collate([encode_pieces(doc)], "cpu")
            with torch.no_grad():
                tf_right = ((model(x)[0].argmax(-1) == y) | (y == IGNORE_INDEX)).all().item()
            assert greedy_right == tf_right, (kind, q, a, tk.decode(ids[len(prompt):]))
            right += greedy_right
    assert 0 < right < 60  # both outcomes occur, so the agreement means something
