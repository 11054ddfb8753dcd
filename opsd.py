"""On-Policy Self-Distillation (the paper's Eq. 5, Algorithm 2): the student samples, GRPO rewards it, and a reverse
KL pulls it toward what the model would do with the PI in view.

    python opsd.py --env toy_shop                   # the default run, from the shipped base model
    python opsd.py --teacher shared                 # Eq. 5 as written: the teacher view on the trained weights
    python opsd.py --kl reward                      # Algorithm 2: the KL folded into the episode reward instead

Each round (opsd_round): K student-view episodes per task; GRPO as in the other scripts (group-centred advantages
without the std, all-zero groups dropped, clipped ratio π^S_θ / π^S_old); and for tasks with PI, at every
student-sampled agent token, the exact reverse KL

    KL(π^S ‖ sg π^T) = Σ_v p_S(v) (log p_S(v) − log p_T(v))

with the teacher's logits (the PI line inserted into the context) detached. Where the KL goes
(`--kl`): `loss`, a differentiable term, β · mean over agent tokens, added to the GRPO loss (the paper's App. E.1 and
its authors' released loss); `reward`, β·KL_seq subtracted from each episode's reward before the advantages
(Algorithm 2); `token`, the sampled estimate log π^S(a_t) − log π^T(a_t) at each sampled token, times β, subtracted
from that token's advantage (the per-token form of the authors' on-policy port). All are normalised by the round's
agent tokens. The teacher's log-probs are computed once per round and reused by the `grad_steps` steps.

Deviations (docs/deviations.md): the teacher view is played by a fixed copy of the start (`--teacher frozen`, the
default), because on the shared weights (`--teacher shared`, Eq. 5 as written) the teacher view lost its PI reading
within 25 rounds on every seed and the student collapsed with it; the learning rate is 4e-4 (docs/experiments_collapse.md,
"OPSD with a frozen teacher").
"""

import time
from dataclasses import dataclass

import torch

from config import label, parse_args
from env import TEST_SEEDS
from eval import evaluate, transfer
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
    kl: str = "loss"  # where the KL goes: loss (a loss term) | reward (β·KL_seq in the reward, Alg. 2) | token
    teacher: str = "frozen"  # weights of the teacher view: frozen (the start's; docs/deviations.md) | shared (Eq. 5)
    steps: int = 150  # sampling rounds
    tasks: int = 16  # tasks per round
    k: int = 4  # episodes per task (the group size)
    lr: float = 4e-4  # AdamW learning rate
    grad_steps: int = 2  # gradient steps per round on the same episodes
    eval_every: int = 25  # rounds between held-out evaluations


def reverse_kl(lp_s, lp_t):
    """KL(π^S ‖ sg π^T) at each agent token: (N,). lp_s (N, V) the student's log-softmax (with gradient); lp_t the
    teacher's at the same tokens, detached here whatever the caller passes."""
    return kl_div(lp_s, lp_t.detach())


def sampled_log_ratio(lp_s, lp_t, tokens):
    """log π^S(a) − log π^T(a) at the sampled tokens a (N,): the one-sample estimate of KL(π^S ‖ π^T) at each
    position (unbiased when a ~ π^S), the per-token penalty of --kl token. lp_s, lp_t: (N, V) log-softmaxes."""
    return (lp_s.gather(1, tokens[:, None]) - lp_t.gather(1, tokens[:, None])).squeeze(1)


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
    lp_t, kl_seq, log_ratio = None, torch.zeros(len(with_pi)), None
    if with_pi.any():
        with torch.no_grad():  # sg π^T: the teacher's full log-softmax at every student-sampled agent token
            tv_ids, tv_mask, _ = trimmed(teacher_view(played, cfg.pi), device)
            lp_t = vocab_logprobs((teacher or model)(tv_ids)[0], tv_mask * with_pi[:, None].to(device))
            lp_s = vocab_logprobs(model(ids)[0], kl_mask)
            per_token = reverse_kl(lp_s, lp_t)
            rows = torch.arange(len(with_pi)).repeat_interleave(kl_mask.sum(1).long().cpu())
            kl_seq = torch.zeros(len(with_pi)).index_add_(0, rows, per_token.cpu())
            if cfg.kl == "token":  # (B, T): the penalty at each sampled agent token of a PI episode, 0 elsewhere
                log_ratio = torch.zeros_like(mask)
                log_ratio[kl_mask.bool()] = sampled_log_ratio(lp_s, lp_t, ids[kl_mask.bool()])
    reward = played.rewards - (cfg.beta * kl_seq if cfg.kl == "reward" else 0.0)
    adv, keep = centred_advantages(reward, K)
    stats = {"success": played.rewards.mean().item(), "reward": reward.mean().item(),
             "kl": kl_seq[with_pi].mean().item() if with_pi.any() else 0.0, "zero_adv": 1 - keep.float().mean().item(),
             "len": ep.lengths.float().mean().item(), "tok_s": ep.mask.sum().item() / (time.time() - t0)}
    model.train()
    grpo_mask = mask * keep[:, None].to(device)  # GRPO on informative groups only; the KL on every PI episode
    adv = adv.to(device)
    if log_ratio is not None:  # --kl token: every PI episode's tokens carry their own penalty, informative or not
        adv, grpo_mask = adv[:, None] - cfg.beta * log_ratio, torch.maximum(grpo_mask, kl_mask)
    n_tokens = mask.sum().clamp_min(1)  # the round's agent tokens: every script's normalisation
    if not grpo_mask.any() and (cfg.kl != "loss" or lp_t is None):
        return stats, played
    for _ in range(cfg.grad_steps):
        logits, _ = model(ids)
        loss = clipped_surrogate(token_logprobs(logits / TEMPERATURE, ids), logp_old, adv, grpo_mask,
                                 n_tokens=n_tokens)
        if lp_t is not None and cfg.kl == "loss":
            loss = loss + cfg.beta * reverse_kl(vocab_logprobs(logits, kl_mask), lp_t).sum() / n_tokens
        update(model, opt, loss)
    stats.update(loss=loss.item(), entropy=entropy(logits.detach(), mask))
    return stats, played


def main(argv=None):
    cfg = parse_args(Config(), argv)
    if cfg.kl not in ("loss", "reward", "token"):
        raise SystemExit(f"error: --kl must be loss, reward or token, got {cfg.kl!r}")
    if cfg.teacher not in ("shared", "frozen"):
        raise SystemExit(f"error: --teacher must be shared or frozen, got {cfg.teacher!r}")
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
                      n=cfg.final_n, **transfer(model, cfg.final_n))


if __name__ == "__main__":
    main()
