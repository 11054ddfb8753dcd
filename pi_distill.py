"""π-Distill (PAPER.md §2: Eq. 2-4, Algorithm 1): one network, a teacher view that sees the PI and a student view
that does not, trained jointly on the teacher's samples. The project's main command.

    python pi_distill.py --env=toy_shop                  # the default run, from the shipped base model
    python pi_distill.py --alpha=1 --pi=tools            # teacher only, least informative PI: the KL-collapse setting
    python pi_distill.py --pi_coverage=0                 # no PI at all: plain GRPO on the same budget

Each round (Algorithm 1), for the tasks that have PI:
 1. K episodes per task from the teacher view π^T(·|s, I) at temperature 0.75;
 2. reward R = R_env − β·KL_seq(π^T ‖ sg π^S): the exact full-vocabulary KL at each agent token, summed over the
    episode, computed without gradient (eval.kl_teacher_student);
 3. group-centred advantages without the std; groups whose advantages are all zero are dropped;
 4. teacher term L_T: clipped ratio π^T_θ / π^T_old on the teacher's context (Eq. 2);
 5. student term L_S: clipped ratio π^S_θ / sg π^T_old — the student's log-prob of the teacher's tokens in the
    context without the PI line, over the teacher's sampling log-prob (Eq. 3);
 6. loss α·L_T + (1 − α)·L_S (Eq. 4), clip [0.8, 1.2], normalised by the batch's agent tokens, `grad_steps` steps.
Tasks without PI (1 − pi_coverage of them) train as student-view GRPO in the same batch. With 0 < α < 1, α rises
linearly from 0 over the first `alpha_warmup` rounds, as in the paper. No KL to the base model.

Deviation: ratios are taken at the sampling temperature (grpo.clipped_surrogate's docstring says why).
"""

import time
from dataclasses import dataclass

import torch

from config import parse_args
from env import TEST_SEEDS, TRAIN_SEEDS
from eval import evaluate, kl_teacher_student
from grpo import clipped_surrogate, entropy, group_advantages, informative_groups, kept_rows, update
from model import token_logprobs
from rollout import play, show_episode, student_view
from run import Run, pi_tasks


@dataclass
class Config:
    env: str = "toy_shop"
    level: str = "L2"
    init: str = ""  # starting checkpoint; default: the env's base model
    pi: str = "full"  # PI form: full | tools | key | answer | hint
    pi_coverage: float = 1.0  # share of the training tasks that have PI (the rest train as plain GRPO)
    n_tasks: int = 2000  # training tasks (the expert budget: PI exists for the first pi_coverage * n_tasks)
    alpha: float = 0.5  # Eq. 4: weight of the teacher term; 0 = student only, 1 = teacher only
    alpha_warmup: int = 20  # rounds of the linear rise of α from 0 (only for 0 < α < 1)
    beta: float = 0.25  # weight of KL_seq(π^T ‖ sg π^S) in the teacher's reward
    steps: int = 150  # sampling rounds
    tasks: int = 16  # tasks per round
    k: int = 4  # episodes per task
    temperature: float = 0.75
    lr: float = 2e-4
    grad_steps: int = 2  # gradient steps per round
    clip: float = 0.2  # ratio clip range [1 - clip, 1 + clip]
    eval_every: int = 25
    eval_n: int = 200  # held-out episodes per periodic evaluation
    final_n: int = 500  # held-out episodes for the final numbers
    run: str = ""  # out/<run>/; default from the options
    resume: bool = False
    device: str = "auto"
    seed: int = 0


def alpha_at(step, cfg):
    if 0 < cfg.alpha < 1 and cfg.alpha_warmup > 0:
        return cfg.alpha * min(1.0, step / cfg.alpha_warmup)
    return cfg.alpha


def distill_loss(model, teacher, student, adv, alpha, temperature, clip):
    """α·L_T + (1 − α)·L_S (Eq. 4) on the teacher's episodes, both terms normalised by the same agent-token count.

    teacher, student: (ids, mask, logp_old) of the same kept episodes in the two views; logp_old is π^T_old in
    both (student_view moves it with its tokens). Returns (loss, entropy of the last view scored)."""
    loss = 0.0
    for weight, view in ((alpha, teacher), (1 - alpha, student)):
        if weight > 0:  # teacher: ratio π^T_θ / π^T_old (Eq. 2); student: π^S_θ / sg π^T_old on the same tokens (Eq. 3)
            ids, mask, logp_old = view
            logits, _ = model(ids)
            logp = token_logprobs(logits / temperature, ids)
            loss = loss + weight * clipped_surrogate(logp, logp_old, adv, mask, clip)
            ent = entropy(logits.detach(), mask)
    return loss, ent


def distill_round(model, opt, cfg, seeds, has_pi, alpha, generator):
    """One round of Algorithm 1 over `seeds`; those without PI are student GRPO. -> (stats, teacher episodes)."""
    t0, device, K = time.time(), next(model.parameters()).device, cfg.k
    pi_seeds, plain_seeds = [s for s in seeds if has_pi(s)], [s for s in seeds if not has_pi(s)]
    model.eval()
    batches, stats, shown, tokens = [], {"alpha": alpha}, None, 0
    if pi_seeds:
        played = play(model, pi_seeds, K, level=cfg.level, pi=cfg.pi, temperature=cfg.temperature, generator=generator)
        kl = kl_teacher_student(model, played, cfg.pi)  # (B,), no gradient
        reward = played.rewards - cfg.beta * kl  # Algorithm 1: the KL folded into the reward
        adv = group_advantages(reward.view(-1, K)).flatten()
        keep = informative_groups(adv.view(-1, K)).repeat_interleave(K)
        if keep.any():
            t_ids, t_mask, t_old, a = kept_rows(played.episodes, adv, keep, device)
            s_ids, s_mask, s_old, _ = kept_rows(student_view(played, cfg.pi), adv, keep, device)
            batches.append(("pi", (t_ids, t_mask, t_old), (s_ids, s_mask, s_old), a, t_mask.sum()))
        stats.update(teacher_success=played.rewards.mean().item(), reward=reward.mean().item(),
                     kl=kl.mean().item(), zero_adv=1 - keep.float().mean().item(),
                     len=played.episodes.lengths.float().mean().item())
        tokens, shown = tokens + played.episodes.mask.sum().item(), played
    if plain_seeds:
        plain = play(model, plain_seeds, K, level=cfg.level, temperature=cfg.temperature, generator=generator)
        adv = group_advantages(plain.rewards.view(-1, K)).flatten()
        keep = informative_groups(adv.view(-1, K)).repeat_interleave(K)
        if keep.any():
            ids, mask, old, a = kept_rows(plain.episodes, adv, keep, device)
            batches.append(("plain", None, (ids, mask, old), a, mask.sum()))
        stats.update(student_success=plain.rewards.mean().item(), zero_adv_plain=1 - keep.float().mean().item())
        tokens, shown = tokens + plain.episodes.mask.sum().item(), shown or plain
    stats["tok_s"] = tokens / (time.time() - t0)
    model.train()
    n_total = sum(b[4] for b in batches)
    for _ in range(cfg.grad_steps if batches else 0):
        loss = 0.0
        for kind, teacher, student, a, n in batches:
            # a plain GRPO task is the student term alone (α = 0) on the student's own samples
            term, ent = distill_loss(model, teacher, student, a, alpha if kind == "pi" else 0.0, cfg.temperature,
                                     cfg.clip)
            loss = loss + term * n / n_total  # every term normalised by the whole batch's agent-token count
        update(model, opt, loss)
    if batches:
        stats.update(loss=loss.item(), entropy=ent)
    return stats, shown


def main(argv=None):
    cfg = parse_args(Config(), argv)
    if not 0 <= cfg.alpha <= 1:
        raise SystemExit(f"error: --alpha must lie in [0, 1], got {cfg.alpha}")
    pool, with_pi = pi_tasks(cfg)
    cfg.run = cfg.run or f"pi_distill_{cfg.pi}_a{cfg.alpha}_b{cfg.beta}_c{cfg.pi_coverage}_s{cfg.seed}"
    run = Run(cfg, cfg.run)
    model, ckpt = run.load_model()
    opts = {"opt": torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.99))}
    phase, step = run.restore(ckpt, opts) if cfg.resume else ("rl", 0)
    test, train = list(TEST_SEEDS), list(TRAIN_SEEDS)

    def evaluate_both(n, row):
        """Held-out student success (greedy) and the teacher's success with PI on training tasks (sampled)."""
        model.eval()
        row["heldout_success"] = evaluate(model, test[:n], level=cfg.level)["success"]
        row["teacher_pi_success"] = evaluate(model, train[:n], pi=cfg.pi, level=cfg.level,
                                             temperature=cfg.temperature)["success"]
        model.train()
        return row

    model.train()
    while phase == "rl" and step < cfg.steps:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        stats, played = distill_round(model, opts["opt"], cfg, run.rng.sample(pool, cfg.tasks), with_pi.__contains__,
                                      alpha_at(step, cfg), g)
        step += 1
        if step % cfg.eval_every == 0 or step == cfg.steps:
            run.log(phase, step, evaluate_both(cfg.eval_n, stats))
            run.save(model, opts, phase, step)
            print(show_episode(played))
        else:
            run.log(phase, step, stats)
    final = evaluate_both(cfg.final_n, {})
    run.save(model, opts, "done", step)
    method = f"π-Distill α={cfg.alpha:g}" if cfg.pi_coverage > 0 else "RL (π-Distill script, no PI)"
    if cfg.pi_coverage > 0 and (cfg.pi != "full" or cfg.beta != 0.25 or cfg.pi_coverage < 1):
        method += f" ({cfg.pi}, β={cfg.beta:g}, coverage {cfg.pi_coverage:g})"
    return run.finish(method, heldout_success=final["heldout_success"], teacher_pi_success=final["teacher_pi_success"],
                      n=cfg.final_n)


if __name__ == "__main__":
    main()
