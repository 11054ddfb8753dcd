"""On-Policy Self-Distillation (the paper's Eq. 5, Algorithm 2): the student samples, GRPO rewards it, and a reverse
KL pulls it toward what the same weights would do with the PI in view.

    python opsd.py --env toy_shop                   # the default run, from the shipped base model
    python opsd.py --kl_in_reward 1                 # Algorithm 2: the KL folded into the episode reward instead

Each round (opsd_round): K student-view episodes per task; GRPO as in the other scripts (group-centred advantages
without the std, all-zero groups dropped, clipped ratio π^S_θ / π^S_old); and for tasks with PI, at every
student-sampled agent token, the exact reverse KL

    KL(π^S ‖ sg π^T) = Σ_v p_S(v) (log p_S(v) − log p_T(v))

with the teacher's logits (the same network, the PI line inserted into the context) detached. By default the KL is a
differentiable loss term, β · mean over agent tokens, added to the GRPO loss (the paper's App. E.1 and its authors'
released loss); --kl_in_reward 1 instead subtracts β·KL_seq from each episode's reward before the advantages
(Algorithm 2). Both terms are normalised by the round's agent tokens. The teacher's log-probs are computed once per
round, at the round's weights, and reused by the `grad_steps` steps. OPSD collapses here (docs/experiments.md).
"""

import time
from dataclasses import dataclass

import torch

from config import label, parse_args
from env import TEST_SEEDS
from eval import evaluate
from grpo import centred_advantages, clipped_surrogate, entropy, update
from model import kl_div, token_logprobs, vocab_logprobs
from rollout import TEMPERATURE, play, show_episode, teacher_view, trimmed
from run import Run, RunConfig, pi_tasks


@dataclass
class Config(RunConfig):
    pi: str = "full"  # PI form the teacher view sees: full | tools | key | answer | hint
    pi_coverage: float = 1.0  # share of the training tasks that have PI (the others get GRPO alone)
    n_tasks: int = 2000  # training tasks (the expert budget)
    beta: float = 0.5  # weight of KL(π^S ‖ sg π^T)
    kl_in_reward: bool = False  # Algorithm 2: fold β·KL_seq into the reward instead of a loss term
    teacher: str = "shared"  # weights of the teacher view: shared (Eq. 5) | frozen (the start's; docs/deviations.md)
    steps: int = 150  # sampling rounds
    tasks: int = 16  # tasks per round
    k: int = 4  # episodes per task (the group size)
    lr: float = 2e-4  # AdamW learning rate
    grad_steps: int = 2  # gradient steps per round on the same episodes
    eval_every: int = 25  # rounds between held-out evaluations


def reverse_kl(logits_s, s_mask, lp_t):
    """KL(π^S ‖ sg π^T) at each agent token: (N,). logits_s (B, T, V) with gradient; lp_t (N, V) the teacher's
    log-softmax at the same tokens, detached here whatever the caller passes."""
    return kl_div(vocab_logprobs(logits_s, s_mask), lp_t.detach())


def opsd_round(model, opt, cfg, seeds, has_pi, generator, teacher=None):
    """One round of Eq. 5 over `seeds`: -> (stats, the student episodes). `teacher`: the weights that score the
    teacher view (default `model`, the shared network; a frozen copy of the start with --teacher frozen)."""
    t0, device, K = time.time(), next(model.parameters()).device, cfg.k
    model.eval()
    played = play(model, seeds, K, level=cfg.level, temperature=TEMPERATURE, generator=generator)
    ep = played.episodes
    ids, mask, logp_old = trimmed(ep, device)
    with_pi = torch.tensor([has_pi(s) for s in seeds]).repeat_interleave(K)  # (B,)
    kl_mask = mask * with_pi[:, None].to(device)  # the KL term only where the task has PI
    lp_t, kl_seq = None, torch.zeros(len(with_pi))
    if with_pi.any():
        with torch.no_grad():  # sg π^T: the teacher's full log-softmax at every student-sampled agent token
            tv_ids, tv_mask, _ = trimmed(teacher_view(played, cfg.pi), device)
            lp_t = vocab_logprobs((teacher or model)(tv_ids)[0], tv_mask * with_pi[:, None].to(device))
            per_token = reverse_kl(model(ids)[0], kl_mask, lp_t)
            rows = torch.arange(len(with_pi)).repeat_interleave(kl_mask.sum(1).long().cpu())
            kl_seq = torch.zeros(len(with_pi)).index_add_(0, rows, per_token.cpu())
    reward = played.rewards - (cfg.beta * kl_seq if cfg.kl_in_reward else 0.0)
    adv, keep = centred_advantages(reward, K)
    stats = {"success": played.rewards.mean().item(), "reward": reward.mean().item(),
             "kl": kl_seq[with_pi].mean().item() if with_pi.any() else 0.0, "zero_adv": 1 - keep.float().mean().item(),
             "len": ep.lengths.float().mean().item(), "tok_s": ep.mask.sum().item() / (time.time() - t0)}
    model.train()
    grpo_mask = mask * keep[:, None].to(device)  # GRPO on informative groups only; the KL on every PI episode
    n_tokens = mask.sum().clamp_min(1)  # the round's agent tokens: every script's normalisation
    if not keep.any() and (cfg.kl_in_reward or lp_t is None):
        return stats, played
    for _ in range(cfg.grad_steps):
        logits, _ = model(ids)
        loss = clipped_surrogate(token_logprobs(logits / TEMPERATURE, ids), logp_old, adv.to(device), grpo_mask,
                                 n_tokens=n_tokens)
        if lp_t is not None and not cfg.kl_in_reward:
            loss = loss + cfg.beta * reverse_kl(logits, kl_mask, lp_t).sum() / n_tokens
        update(model, opt, loss)
    stats.update(loss=loss.item(), entropy=entropy(logits.detach(), mask))
    return stats, played


def main(argv=None):
    cfg = parse_args(Config(), argv)
    pool, with_pi = pi_tasks(cfg)
    run = Run(cfg, "opsd")
    model, ckpt = run.load_model()
    teacher = run.teacher(model, cfg.teacher)
    opts = {"opt": torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.99))}
    phase, step = run.restore(ckpt, opts) if cfg.resume else ("rl", 0)
    test = list(TEST_SEEDS)
    model.train()
    while phase == "rl" and step < cfg.steps:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        stats, played = opsd_round(model, opts["opt"], cfg, run.rng.sample(pool, cfg.tasks), with_pi.__contains__, g,
                                   teacher)
        step += 1
        if step % cfg.eval_every == 0 or step == cfg.steps:
            model.eval()
            stats["heldout_success"] = evaluate(model, test[: cfg.eval_n], level=cfg.level)["success"]
            model.train()
            run.save(model, opts, phase, step)
            run.log(phase, step, stats)
            print(show_episode(played))
        else:
            run.log(phase, step, stats)
    model.eval()
    final = evaluate(model, test[: cfg.final_n], level=cfg.level)
    run.save(model, opts, "done", step)
    return run.finish(label("OPSD", cfg), heldout_success=final["success"], protocol_errors=final["protocol_errors"],
                      n=cfg.final_n)


if __name__ == "__main__":
    main()
