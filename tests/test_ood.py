"""The OOD split (docs/env.md, "The OOD split"): what makes it out of distribution, and that it stays a fair test.
G1, G2 and G3 run on it in test_env.py (the expert solves every seed reading only the transcript; no shallow
heuristic passes 30%)."""

import tokenizer as tk
import torch
from env import TEST_SEEDS, TRAIN_SEEDS, expert_act, make, render
from eval import main as eval_main
from eval import scripted_success
from model import GPT, GPTConfig, save_checkpoint
from worlds import BUY_CATEGORIES, SIZED_CATEGORIES, build_world


def test_no_ood_request_is_a_training_request():
    """No request of the OOD split occurs among the L2 training tasks' requests (the first 20,000 training seeds:
    ten times the expert budget), and by construction none can: each family names the other's categories."""
    train = {build_world(s, "L2").request() for s in TRAIN_SEEDS[:20_000]}
    ood = [build_world(s, "OOD") for s in TEST_SEEDS[:2000]]
    assert not {w.request() for w in ood} & train
    for w in ood:
        assert w.family in ("BUY", "EXCHANGE")
        assert w.category in (SIZED_CATEGORIES if w.family == "BUY" else BUY_CATEGORIES)
    assert {w.family for w in ood} == {"BUY", "EXCHANGE"}


def test_ood_words_are_words_the_base_saw():
    """Every word (numbers aside) and every token of the OOD split's expert transcripts occurs in L2's, the text the
    base pretrained on: the shift is in how the words combine, not in new words."""
    def words_and_tokens(level, seeds):
        env, words, tokens = make("toy_shop", level), set(), set()
        for seed in seeds:
            env.reset(seed)
            while not env.done:
                env.step(expert_act(render(env.history)))
            words |= {w for w in env.transcript().replace("\n", " ").split() if not w.isdigit()}
            tokens |= set(tk.encode(env.transcript()))
        return words, tokens

    ood, l2 = words_and_tokens("OOD", TEST_SEEDS[:500]), words_and_tokens("L2", TRAIN_SEEDS[:3000])
    assert ood[0] <= l2[0] and ood[1] <= l2[1]


def test_ood_split_is_deterministic_per_seed():
    env_a, env_b = make("toy_shop", "OOD"), make("toy_shop", "OOD")
    for seed in TEST_SEEDS[:200]:
        assert build_world(seed, "OOD") == build_world(seed, "OOD")
        env_a.reset(seed), env_b.reset(seed)
        for action in ("profile u1", "search shirt", "order o1"):
            assert env_a.step(action) == env_b.step(action)
        assert env_a.transcript() == env_b.transcript()


def test_ood_expert_on_2000_held_out_seeds():
    assert scripted_success(list(TEST_SEEDS[:2000]), "OOD", "expert") == 1.0


def test_eval_split_ood(tmp_path):
    """`eval.py --split ood` scores a checkpoint on the OOD split (an untrained one-layer model here)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tk.get_tokenizer().n_vocab, block_size=256, n_layer=1, n_head=2, n_embd=16))
    save_checkpoint(str(tmp_path / "tiny.pt"), model)
    res = eval_main(["--ckpt", str(tmp_path / "tiny.pt"), "--split", "ood", "--n", "8", "--batch", "8"])
    assert res["level"] == "OOD" and 0 <= res["student_greedy"] <= 1 and res["expert"] == 1.0
