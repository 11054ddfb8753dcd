"""OPSD: the reverse KL against brute force (and not the forward one), no gradient into the teacher view, zero KL
for identical views, the teacher view as the exact inverse of student_view, and a 3-step smoke run."""

import json
import math

import torch

import opsd as O
import tokenizer as tk
from grpo import clipped_surrogate
from model import GPT, GPTConfig, kl_div, load_checkpoint, save_checkpoint, vocab_logprobs
from rollout import play, student_view, teacher_view


def test_reverse_kl_against_brute_force_and_not_the_forward_one():
    g = torch.Generator().manual_seed(0)
    logits_s = torch.randn(1, 4, 6, generator=g)
    mask = torch.tensor([[0, 1, 1, 0]])
    lp_t = torch.log_softmax(torch.randn(2, 6, generator=g), -1)
    got = O.reverse_kl(vocab_logprobs(logits_s, mask), lp_t)
    for n, t in enumerate([0, 1]):  # mask positions 1, 2 are predicted by logits at 0, 1
        ps = torch.softmax(logits_s[0, t], -1).tolist()
        pt = lp_t[n].exp().tolist()
        reverse = sum(a * math.log(a / b) for a, b in zip(ps, pt))
        forward = sum(b * math.log(b / a) for a, b in zip(ps, pt))
        assert abs(got[n].item() - reverse) < 1e-5 and abs(got[n].item() - forward) > 1e-3


def test_no_gradient_reaches_the_teacher_and_identical_views_give_zero():
    logits_s = torch.randn(1, 4, 6, requires_grad=True)
    mask = torch.tensor([[0, 1, 1, 1]])
    lp_t = torch.log_softmax(torch.randn(3, 6), -1).requires_grad_(True)
    O.reverse_kl(vocab_logprobs(logits_s, mask), lp_t).sum().backward()
    assert lp_t.grad is None and logits_s.grad.abs().sum() > 0
    same = torch.log_softmax(logits_s[0, :3].detach(), -1)
    assert torch.allclose(O.reverse_kl(vocab_logprobs(logits_s.detach(), mask), same), torch.zeros(3), atol=1e-6)
    assert torch.allclose(kl_div(same, same), torch.zeros(3), atol=1e-6)


def test_sampled_log_ratio_is_the_one_sample_kl_estimate():
    """--kl token's penalty: log p_S(a) − log p_T(a) by hand at given tokens, and, with a ~ p_S, an unbiased
    estimate of the exact KL(p_S ‖ p_T) (mean of 200,000 draws within 0.01 nats)."""
    g = torch.Generator().manual_seed(1)
    lp_s = torch.log_softmax(torch.randn(2, 5, generator=g), -1)
    lp_t = torch.log_softmax(torch.randn(2, 5, generator=g), -1)
    tokens = torch.tensor([3, 0])
    want = [math.log(lp_s[0, 3].exp() / lp_t[0, 3].exp()), math.log(lp_s[1, 0].exp() / lp_t[1, 0].exp())]
    assert torch.allclose(O.sampled_log_ratio(lp_s, lp_t, tokens), torch.tensor(want), atol=1e-5)
    n = 200_000
    draws = torch.multinomial(lp_s[0].exp(), n, replacement=True, generator=g)
    estimate = O.sampled_log_ratio(lp_s[[0]].expand(n, 5), lp_t[[0]].expand(n, 5), draws).mean()
    assert abs(estimate.item() - kl_div(lp_s[:1], lp_t[:1]).item()) < 0.01


def test_per_token_advantages_in_the_clipped_surrogate():
    """A (B, T) advantage applies token by token: equal to the (B,) form when constant along T, and by hand
    otherwise (ratio 1 at the start: the loss is −Σ mask·A / N)."""
    logp = torch.randn(2, 4)
    mask = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1]]).float()
    per_episode = torch.tensor([0.5, -1.0])
    assert torch.allclose(clipped_surrogate(logp, logp, per_episode, mask),
                          clipped_surrogate(logp, logp, per_episode[:, None].expand(2, 4), mask))
    per_token = torch.tensor([[9.0, 1.0, -2.0, 9.0], [9.0, 0.5, 0.5, 3.0]])
    assert torch.isclose(clipped_surrogate(logp, logp, per_token, mask), torch.tensor(-(1 - 2 + 0.5 + 0.5 + 3) / 5))


def small_model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tk.get_tokenizer().n_vocab, block_size=512, n_layer=1, n_head=2, n_embd=16))


def test_teacher_view_inverts_student_view():
    model = small_model()
    played = play(model, [0, 1, 2], 2, pi="key", generator=torch.Generator().manual_seed(0), max_len=150)
    st = student_view(played, "key")
    student_played = type(played)(st, played.rewards, played.envs)
    tv = teacher_view(student_played, "key")
    n = played.episodes.lengths
    assert torch.equal(tv.lengths, n)
    for row in range(6):
        assert torch.equal(tv.ids[row, : n[row]], played.episodes.ids[row, : n[row]])
        assert torch.equal(tv.mask[row, : n[row]], played.episodes.mask[row, : n[row]])


def test_opsd_smoke(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    model = small_model()
    save_checkpoint(str(tmp_path / "init.pt"), model)
    for extra in ([], ["--kl=reward"], ["--kl", "token", "--teacher", "frozen"]):
        summary = O.main([f"--init={tmp_path / 'init.pt'}", "--steps=3", "--tasks=4", "--n_tasks=8", "--eval_every=3",
                          "--eval_n=4", "--final_n=4", "--lr=1e-2", *extra])
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
        log = [json.loads(line) for line in open(tmp_path / "out" / summary["run"] / "log.jsonl")]
        assert len(log) == 3 and all(r["kl"] > 0 and math.isfinite(r.get("loss", 0.0)) for r in log)
        after, _ = load_checkpoint(summary["checkpoint"])
        assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), after.state_dict().values()))
