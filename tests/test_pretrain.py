"""The base model's corpus: loss only where it belongs, hindsight PI lines that match at rate rho, a weak agent near
the student's target level; and a 3-step pretraining smoke run."""

import itertools
import json
import random

import pytest
import torch

import pretrain as P
import skills
import tokenizer as tk
from env import PRETRAIN_SEED0, make
from model import IGNORE_INDEX, load_checkpoint
from worlds import COLORS


def test_loss_only_on_agent_tokens_write_amounts_and_skill_answers():
    cfg, rng, env = P.PretrainConfig(), random.Random(0), make("toy_shop")
    for _ in range(200):
        pieces = P.episode_pieces(env, rng.randrange(PRETRAIN_SEED0, 2 * PRETRAIN_SEED0), cfg, rng)
        for text, has_loss in pieces:
            if has_loss:  # an agent turn, or the amount of a write's `ok` reply
                assert "<|" not in text.replace("<|eos|>", "")
            else:
                assert "<|pi|>" in text or text.startswith("<|")
        lossy = "".join(t for t, f in pieces if f)
        assert "<|pi|>" not in lossy and "gift" not in lossy.split("profile")[0]
    for _ in range(50):
        pieces = skills.skill_pieces(rng)
        assert sum(f for _, f in pieces) == 4 and all(not t.startswith(" <|") for t, f in pieces if f)


def test_sized_questions_name_a_colour_and_a_size_only_when_asked():
    """`sized` (EXCHANGE's lookup) against a brute-force filter of the rows; at sized = 0 (the shipped base) no colour
    question names a size."""
    rng, asked = random.Random(4), {0.0: 0, 1.0: 0}
    for _ in range(300):
        rows, _, has_stock = skills.skill_table(rng)
        if not (has_stock and rows[0].size):
            continue
        q, a = skills.skill_question(rng, rows, has_stock, "sized")
        colour, size = q.split()
        assert a.split() == [r.id for r in rows if r.color == colour and r.size == size]
        for sized in asked:
            q, a = skills.skill_question(rng, rows, has_stock, None, sized)
            asked[sized] += q.split()[0] in COLORS and len(q.split()) == 2
    assert asked[0.0] == 0 and asked[1.0] > 0


def test_batch_targets_are_shifted_and_masked():
    cfg = P.PretrainConfig(batch_size=8)
    x, y = P.get_batch(cfg, random.Random(1), make("toy_shop"), "cpu")
    assert x.shape == y.shape
    keep = y != IGNORE_INDEX
    assert 0.05 < keep.float().mean() < 0.5
    inside = keep[:, :-1] & (x[:, 1:] != tk.special("<|pad|>"))  # the last target of a row lies past x's end
    assert inside.sum() > 0.8 * keep.sum() - x.size(0)
    assert (x[:, 1:][inside] == y[:, :-1][inside]).all()  # y[t] is the token at t+1


def test_hindsight_pi_matches_the_episode_at_rate_rho():
    cfg, rng, env = P.PretrainConfig(rho=0.8, pi_frac=1.0), random.Random(2), make("toy_shop")
    matches, n = 0, 1500
    for _ in range(n):
        pieces = P.episode_pieces(env, rng.randrange(PRETRAIN_SEED0, 2 * PRETRAIN_SEED0), cfg, rng)
        text = "".join(t for t, _ in pieces)
        line = text.split("<|pi|> ")[1].split(" <|/pi|>")[0]
        actions = [t for role, t in env.history if role == "agent"]  # the episode just played
        form, body = line.split(" : ")
        expected = {"full": " ; ".join(actions), "tools": " ; ".join(a.split()[0] for a in actions)}.get(form)
        if expected is not None:
            matches += body == expected
        else:  # key / answer: the same construction from the episode's own actions
            matches += body in " ".join(actions)
    # rho = 0.8 plus the chance that another weak rollout happens to act the same
    assert 0.78 < matches / n < 0.95


def test_weak_agent_succeeds_rarely():
    env, rng, wins, n = make("toy_shop"), random.Random(3), 0.0, 2000
    for s in range(n):
        P.weak_episode(env, PRETRAIN_SEED0 + s, rng)
        wins += env._reward()[0]
    assert 0.05 <= wins / n <= 0.15


def test_pretrain_smoke(tmp_path, capsys):
    out = tmp_path / "base.pt"
    summary = P.main(["--steps=3", "--batch_size=4", "--eval_every=3", "--eval_episodes=4", f"--out={out}",
                      "--warmup=1"])
    model, ckpt = load_checkpoint(str(out))
    assert ckpt["step"] == 3 and summary["steps"] == 3
    assert model.config.vocab_size == tk.get_tokenizer().n_vocab
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["checkpoint"] == str(out)
    log = [json.loads(line) for line in open(tmp_path / "base.log.jsonl")]
    assert log[-1]["step"] == 3 and {"student", "full", "key", "read_colour", "read_price"} <= set(log[-1])
    # --init continues a checkpoint; without --out it would overwrite the shipped base, so it is refused
    more = P.main(["--steps=1", "--batch_size=4", "--eval_every=1", "--eval_episodes=2", f"--init={out}",
                   f"--out={tmp_path / 'more.pt'}", "--warmup=1"])
    assert more["steps"] == 1 and (tmp_path / "more.log.jsonl").exists()
    with pytest.raises(SystemExit, match="needs --out"):
        P.main([f"--init={out}"])
    with pytest.raises(SystemExit, match="no checkpoint"):
        P.main([f"--init={tmp_path / 'nope.pt'}", f"--out={tmp_path / 'x.pt'}"])


def test_corpus_workers_write_the_same_batches_as_the_loop():
    cfg = P.PretrainConfig(batch_size=4)
    batches = lambda workers: list(itertools.islice(iter(torch.utils.data.DataLoader(
        P.Corpus(cfg), batch_size=None, num_workers=workers)), 5))
    alone, two = batches(0), batches(2)
    for (x0, y0), (x2, y2) in zip(alone, two):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)
    assert not torch.equal(alone[0][0][:, :10], alone[1][0][:, :10])  # each step draws its own batch


def test_curriculum_starts_with_lookup_documents_alone():
    cfg, env = P.PretrainConfig(batch_size=16, skill_steps=2), make("toy_shop")
    texts = lambda step: [tk.decode(row.tolist()) for row in P.get_batch(cfg, random.Random(step), env, step=step)[0]]
    for text in texts(1):
        assert text.startswith("<|sys|> skill")
        questions = [line.split("<|user|> ")[1] for line in text.split("\n") if line.startswith("<|user|>")]
        assert len(questions) == 4
        assert all(q.split()[0] in ("price", "stock") or q in COLORS for q in questions)
    assert sum(not t.startswith("<|sys|> skill") for t in texts(2)) > 0  # the mixed corpus from step skill_steps on


def test_curriculum_episodes_mix_episodes_into_the_curriculum_only_when_asked():
    env = make("toy_shop")
    for share, lo, hi in ((0.0, 0, 0), (0.5, 20, 44), (1.0, 64, 64)):
        cfg = P.PretrainConfig(batch_size=64, skill_steps=2, curriculum_episodes=share)
        texts = [tk.decode(row.tolist()) for row in P.get_batch(cfg, random.Random(1), env, step=1)[0]]
        episodes = [t for t in texts if not t.startswith("<|sys|> skill")]
        assert lo <= len(episodes) <= hi and all("<|agent|>" in t for t in episodes)
        skills = [t for t in texts if t.startswith("<|sys|> skill")]  # the rest are the curriculum's lookups
        questions = [line.split("<|user|> ")[1] for t in skills for line in t.split("\n")
                     if line.startswith("<|user|>")]
        assert all(q.split()[0] in ("price", "stock") or q in COLORS for q in questions)


def test_make_base_runs_the_recipe_two_runs_back_to_back(tmp_path, monkeypatch):
    """make_base: the first run stops at --stop_at on its long schedule, the second continues from its weights into
    base/<env>.pt; the shipped recipe's options all parse."""
    from config import parse_args

    for stage in P.BASE_RECIPE:
        parse_args(P.PretrainConfig(), stage.split())  # an unknown or mistyped key would end the run here
    monkeypatch.setattr(P, "BASE_PATH", str(tmp_path / "base" / "{env}.pt"))
    tiny = "--batch_size=4 --eval_episodes=2 --warmup=1"
    recipe = (f"--steps=50 --stop_at=2 --eval_every=5 {tiny}", f"--steps=1 --eval_every=1 --seed=1 {tiny}")
    summary = P.make_base("toy_shop", recipe)
    first, first_ckpt = load_checkpoint(str(tmp_path / "base" / "toy_shop.stage1.pt"))
    assert first_ckpt["step"] == 2 and first_ckpt["pretrain_config"]["steps"] == 50
    assert [json.loads(line)["step"] for line in open(tmp_path / "base" / "toy_shop.stage1.log.jsonl")] == [2]
    _, ckpt = load_checkpoint(summary["checkpoint"])
    assert summary["checkpoint"] == str(tmp_path / "base" / "toy_shop.pt") and ckpt["step"] == 1
    assert ckpt["pretrain_config"]["init"] == str(tmp_path / "base" / "toy_shop.stage1.pt")

    calls = []  # the command line: no options but env/device/workers -> the recipe; any other option -> one run
    monkeypatch.setattr(P, "make_base", lambda env, extra=(): calls.append(("recipe", env, list(extra))))
    monkeypatch.setattr(P, "main", lambda args: calls.append(("run", args)))
    P.cli([]), P.cli(["--env", "toy_shop", "--device=cpu"]), P.cli(["--steps=5", "--out=x.pt"])
    P.cli(["--init", "x.pt"]), P.cli(["--eval_every", "5"])  # never the recipe: it would overwrite the shipped base
    assert calls == [("recipe", "toy_shop", []), ("recipe", "toy_shop", ["--device=cpu"]),
                     ("run", ["--steps=5", "--out=x.pt"]), ("run", ["--init", "x.pt"]), ("run", ["--eval_every", "5"])]
