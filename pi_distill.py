"""π-Distill (PAPER.md §2: Eq. 2-4, Algorithm 1): one network, a teacher view that sees the PI and a student view
that does not, trained jointly on the teacher's samples. The project's main command.

    python pi_distill.py --env=toy_shop                  # the default run, from the shipped base model
    python pi_distill.py --alpha=1 --pi=tools            # teacher only, least informative PI: the KL-collapse setting
    python pi_distill.py --pi_coverage=0                 # no PI at all: plain GRPO on the same budget

Each round (Algorithm 1), for the tasks that have PI:
 1. K episodes per task from the teacher view π^T(·|s, I) at temperature 0.75;
 2. the teacher's reward R_env − β·KL_seq(π^T ‖ sg π^S): the exact full-vocabulary KL at each agent token, summed
    over the episode, computed without gradient (eval.kl_teacher_student);
 3. group-centred advantages without the std; groups whose advantages are all zero are dropped;
 4. teacher term L_T: clipped ratio π^T_θ / π^T_old on the teacher's context (Eq. 2);
 5. student term L_S: clipped ratio π^S_θ / sg π^T_old — the student's log-prob of the teacher's tokens in the
    context without the PI line, over the teacher's sampling log-prob (Eq. 3) — plus Eq. 3's own
    β·KL(sg π^T ‖ π^S) at every teacher token, with gradient into the student (see the deviation below);
 6. loss α·L_T + (1 − α)·L_S (Eq. 4), clip [0.8, 1.2], normalised by the batch's agent tokens, `grad_steps` steps.
Tasks without PI (1 − pi_coverage of them) train as student-view GRPO in the same batch. The paper anneals α
linearly from 0 early in training; `--alpha_warmup=N` does that over N rounds (0 < α < 1), and by default there is
none (below). No KL to the base model.

Deviation, by measurement (README, "π-Distill and OPSD here: what it took"): Algorithm 1 folds β·KL_seq into one
reward that both terms share (`--student_kl=reward` runs exactly that). Here the student's advantage is R_env − mean
alone and its KL is Eq. 3's differentiable term. Folded, the KL *penalises the student on the teacher episodes it
disagrees with most* — the ones it has to learn from — and a near-deterministic teacher makes most groups identical,
so dropped: the student did not learn and the run collapsed. `--beta_student` weighs the student's KL term apart
from the β in the teacher's reward (an ablation; by default both are β); `--student_baseline=0` gives the student
term R itself instead of R − group mean, Eq. 3 as written (an ablation; no gain measured, README);
`--frozen_teacher=1` (with α = 0) is a diagnostic, not the paper: a fixed copy of the start plays and scores the
teacher view, so the student learns from it without moving it (README, "What holds the student"). The student's
off-policy ratio π^S_θ / π^T_old is also capped where A < 0 (`--dual_clip`, grpo.clipped_surrogate). α = 0 still
collapses here (README).
The learning rate is 1e-4, half the first base's: at 2e-4 the curriculum base's teacher view broke within 3-8 rounds
on two seeds of three — its episodes shortened to `profile` with no argument and `say none`, both views at 0% —
with the dual clip at 3, 1.2 or off, at β = 0.05, with the student's KL weight at 0.25 or 0.1, and at α = 0 (only
without the student's KL term did 12 rounds pass unbroken); at 1e-4 no seed broke (README, "what it took").
Three more defaults, by measurement:
- the clipped terms are normalised by the round's agent tokens, dropped groups included (`--token_norm=batch`;
  README, "Two students of three past 60%"): normalised by their own few tokens (`kept`), a round with one
  informative group moved the weights as much as a round full of them, with gradients five times the KL term's
  (seed 1, 300 rounds: 34.4% against 63.0%);
- α is at its full value from round 1 (`--alpha_warmup=0`; README, "No α warm-up, 400 rounds"): with the paper's
  rise from 0 over 20 rounds, seed 0's shared teacher lost its payment copy at rounds 25-30 (eval.pi_copy 0.89 →
  0.46; in sessions 9, 11 and 13 alike); without it the copy firmed up to 0.97 and none of five runs' teachers broke;
- 400 rounds: the student's rise comes late (seeds 0-2 at 41-66% at round 300, 66-73% at 400).
Also: ratios are taken at the sampling temperature (grpo.clipped_surrogate's docstring says why); the KL term is at
temperature 1 and uses the teacher's log-probs from the round's sampling weights for all `grad_steps` steps.
Speed, not a change of the algorithm: the teacher samples near-deterministically, so most groups are K copies of one
episode. Each distinct episode is scored and trained once, weighted by its copies (rollout.distinct, View), and the
teacher term runs only on the episodes of informative groups: the same loss and gradient as the full batch (tested),
for about a third of the forward and backward passes.
"""

import time
from dataclasses import dataclass
from typing import NamedTuple

import torch

from config import parse_args
from env import TEST_SEEDS, TRAIN_SEEDS
from eval import evaluate, kl_teacher_student
from grpo import centred_advantages, clipped_surrogate, entropy, trimmed, update
from model import kl_div, token_logprobs, vocab_logprobs
from rollout import distinct, play, show_episode, student_view
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
    alpha_warmup: int = 0  # rounds of the linear rise of α from 0 (0 < α < 1); 20 until session 14 (README)
    beta: float = 0.25  # weight of the KL between the views: in the teacher's reward, and in the student's loss
    student_kl: str = "loss"  # loss: Eq. 3's KL term in the student loss, R alone in its advantage; reward: Alg. 1
    beta_student: float = -1.0  # with student_kl=loss: the student KL term's weight apart from β (< 0: β itself)
    student_baseline: bool = True  # with student_kl=loss: the student's advantage R − group mean; False: R (Eq. 3)
    steps: int = 400  # sampling rounds (150 to session 12, 300 in 13: the student still rose at round 300, README)
    tasks: int = 16  # tasks per round
    k: int = 4  # episodes per task
    temperature: float = 0.75
    lr: float = 1e-4  # 2e-4 (the first base's) broke the curriculum base's teacher in 3-8 rounds (README)
    grad_steps: int = 2  # gradient steps per round
    clip: float = 0.2  # ratio clip range [1 - clip, 1 + clip]
    dual_clip: float = 3.0  # cap of the student's off-policy ratio where A < 0 (0 = none, as in the paper)
    token_norm: str = "batch"  # clipped terms over the round's agent tokens (batch) or over the tokens they use (kept)
    frozen_teacher: bool = False  # diagnostic: the teacher view is a frozen copy of the start (needs alpha=0)
    eval_every: int = 50
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


def student_advantages(rewards, k, baseline=True):
    """The student term's advantages on the teacher's episodes: rewards (B,) in groups of k -> (adv (B,), keep (B,)).

    With the baseline: R − group mean, groups all alike dropped (Algorithm 1, step 3; grpo.centred_advantages).
    Without: R itself, Eq. 3 as written (E_{o ~ π^T}[π^S / sg π^T · R]) — every rewarded teacher episode teaches the
    student, also in a group where all four succeeded, which has no advantage to give; episodes with R = 0 send
    nothing."""
    if baseline:
        return centred_advantages(rewards, k)
    return rewards.clone(), rewards != 0


class View(NamedTuple):
    """One view of a batch of distinct teacher episodes, on the device: ids, agent mask (B, T); logp_old = π^T_old at
    the sampled tokens (B, T); adv (B,); weight (B,) how much each episode counts in the clipped term: its number of
    copies in its group where the term uses it (informative groups; for the student without its baseline the
    rewarded episodes, student_advantages), else 0; count (B,) its copies, the weight of its tokens in Eq. 3's KL
    term (None: 1 each). A batch of distinct episodes weighted by their copies gives the loss and gradient of the
    batch with every copy in it (rollout.distinct), for a third of the forward and backward passes."""
    ids: torch.Tensor
    mask: torch.Tensor
    logp_old: torch.Tensor
    adv: torch.Tensor
    weight: torch.Tensor
    count: torch.Tensor = None


def distill_loss(model, teacher, student, alpha, temperature, clip, beta=0.0, lp_t=None, dual_clip=None,
                 n_tokens=None):
    """α·L_T + (1 − α)·(L_S + β·KL(sg π^T ‖ π^S)) on the teacher's episodes (Eq. 4 with Eq. 2 and Eq. 3).

    teacher, student: Views of the same episodes (teacher None: no teacher term). L_T: clipped ratio π^T_θ / π^T_old
    (Eq. 2); L_S: clipped ratio π^S_θ / sg π^T_old on the same tokens (Eq. 3); each over the agent tokens of the
    episodes it uses, weighted by View.weight and normalised by the weighted token count — or by `n_tokens`, the
    batch's agent tokens (pi_distill's default, `token_norm`: a round with few informative groups then moves the
    weights by little, instead of as much as a round full of them); the student term's
    off-policy ratio is also capped at `dual_clip` for A < 0. With `lp_t` (N, V), the teacher's log-softmax at every
    agent token of the student view (row-major order, detached), Eq. 3's own KL term is added as a mean over those
    tokens (each weighted by its episode's count), with gradient into the student only.
    Returns (loss, entropy of the last view scored)."""
    loss, ent = 0.0, None
    for weight, v, is_student in ((alpha, teacher, False), (1 - alpha, student, True)):
        if weight == 0 or v is None:
            continue
        count = torch.ones_like(v.adv) if v.count is None else v.count  # each distinct episode's copies
        logits, _ = model(v.ids)
        logp = token_logprobs(logits / temperature, v.ids)
        loss = loss + weight * clipped_surrogate(logp, v.logp_old, v.adv, v.mask * v.weight[:, None], clip,
                                                 dual_clip if is_student else None, n_tokens)
        if is_student and lp_t is not None and beta > 0:
            kl = kl_div(lp_t.detach(), vocab_logprobs(logits, v.mask))  # (N,) one per agent token
            w = count.repeat_interleave(v.mask[:, 1:].sum(1).long())  # each token weighted by its episode's copies
            loss = loss + weight * beta * (kl * w).sum() / w.sum()
        ent = entropy(logits.detach(), v.mask * count[:, None])
    return loss, ent


def view(episodes, adv, keep, rows, inverse, device, all_rows=False):
    """A View on `device` of the distinct episodes `episodes` (rollout.distinct's, with its `rows` and `inverse`),
    given the whole batch's advantages and kept episodes, adv and keep (B,): each distinct episode's clipped-term
    weight is its copies where kept, else 0. Trimmed to every distinct episode with `all_rows` (Eq. 3's KL term needs
    them all), else to those with a weight (the clipped term sends nothing through the rest); None if none is left."""
    count = torch.bincount(inverse).float()
    weight = keep[rows].float() * count
    use = torch.ones_like(weight, dtype=torch.bool) if all_rows else weight > 0
    if not use.any():
        return None
    return View(*trimmed(episodes, device, use), adv[rows][use].to(device), weight[use].to(device),
                count[use].to(device))


def distill_round(model, opt, cfg, seeds, has_pi, alpha, generator, teacher_model=None):
    """One round of Algorithm 1 over `seeds`; those without PI are student GRPO. -> (stats, teacher episodes).

    The teacher's advantage comes from R − β·KL_seq (Eq. 2). The student's depends on `cfg.student_kl`: `loss` (the
    default) takes R alone and adds Eq. 3's β·KL(sg π^T ‖ π^S) as a loss term on every teacher episode; `reward` is
    Algorithm 1 verbatim, the same folded reward for both terms and no student KL term. `teacher_model` (not the
    paper: --frozen_teacher) samples and scores the teacher view instead of `model`, which then learns as the
    student only: what the student term teaches when nothing it learns can move its teacher."""
    t0, device, K = time.time(), next(model.parameters()).device, cfg.k
    pi_seeds, plain_seeds = [s for s in seeds if has_pi(s)], [s for s in seeds if not has_pi(s)]
    model.eval()
    batches, stats, shown, tokens = [], {"alpha": alpha}, None, 0

    if pi_seeds:
        played = play(teacher_model or model, pi_seeds, K, level=cfg.level, pi=cfg.pi, temperature=cfg.temperature,
                      generator=generator)
        uniq, rows, inverse = distinct(played, K)  # copies of an episode: scored and trained once, weighted
        kl, lp_t = kl_teacher_student(model, uniq, cfg.pi, with_teacher=True,
                                      teacher=teacher_model)  # (B',), (N, V) of the distinct episodes; no gradient
        kl = kl[inverse]  # every episode's KL_seq, copies included, for the group means
        reward = played.rewards - cfg.beta * kl  # Algorithm 1: the KL folded into the teacher's reward
        adv_t, keep_t = centred_advantages(reward, K)
        adv_s, keep_s = (student_advantages(played.rewards, K, cfg.student_baseline) if cfg.student_kl == "loss"
                         else (adv_t, keep_t))
        lp_t = lp_t if cfg.student_kl == "loss" else None
        teacher = view(uniq.episodes, adv_t, keep_t, rows, inverse, device)
        student = view(student_view(uniq, cfg.pi), adv_s, keep_s, rows, inverse, device, all_rows=lp_t is not None)
        batches.append((teacher, student, lp_t, alpha, played.episodes.mask.sum().item()))
        stats.update(teacher_success=played.rewards.mean().item(), reward=reward.mean().item(),
                     kl=kl.mean().item(), zero_adv=1 - keep_t.float().mean().item(),
                     zero_adv_student=1 - keep_s.float().mean().item(), distinct=len(rows) / len(inverse),
                     len=played.episodes.lengths.float().mean().item())
        tokens, shown = tokens + played.episodes.mask.sum().item(), played
    if plain_seeds:
        plain = play(model, plain_seeds, K, level=cfg.level, temperature=cfg.temperature, generator=generator)
        adv, keep = centred_advantages(plain.rewards, K)
        uniq, rows, inverse = distinct(plain, K)
        own = view(uniq.episodes, adv, keep, rows, inverse, device)  # the student term alone on its own samples
        batches.append((None, own, None, 0.0, plain.episodes.mask.sum().item()))
        stats.update(student_success=plain.rewards.mean().item(), zero_adv_plain=1 - keep.float().mean().item())
        tokens, shown = tokens + plain.episodes.mask.sum().item(), shown or plain
    stats["tok_s"] = tokens / (time.time() - t0)
    model.train()
    n_total, loss = sum(b[4] for b in batches), 0.0
    beta_s = cfg.beta if cfg.beta_student < 0 else cfg.beta_student  # Eq. 3's KL weight (β unless set apart)
    for _ in range(cfg.grad_steps):
        loss = 0.0
        for teacher, student, lp_t, a, n in batches:  # each part weighted by its share of the round's agent tokens
            if student is not None:
                term, ent = distill_loss(model, teacher, student, a, cfg.temperature, cfg.clip, beta_s, lp_t,
                                         cfg.dual_clip or None, n if cfg.token_norm == "batch" else None)
                loss = loss + term * n / n_total
        if torch.is_tensor(loss):
            update(model, opt, loss)
    if torch.is_tensor(loss):
        stats.update(loss=loss.item(), entropy=ent)
    return stats, shown


def main(argv=None):
    cfg = parse_args(Config(), argv)
    if not 0 <= cfg.alpha <= 1:
        raise SystemExit(f"error: --alpha must lie in [0, 1], got {cfg.alpha}")
    if cfg.token_norm not in ("batch", "kept"):
        raise SystemExit(f"error: --token_norm must be batch or kept, got {cfg.token_norm!r}")
    if cfg.student_kl not in ("loss", "reward"):
        raise SystemExit(f"error: --student_kl must be loss or reward, got {cfg.student_kl!r}")
    if cfg.student_kl == "reward" and not cfg.student_baseline:
        raise SystemExit("error: --student_baseline=0 needs --student_kl=loss (reward shares the teacher's advantages)")
    if cfg.frozen_teacher and cfg.alpha != 0:
        raise SystemExit("error: --frozen_teacher=1 trains the student term alone; it needs --alpha=0")
    pool, with_pi = pi_tasks(cfg)
    cfg.run = cfg.run or (f"pi_distill_{cfg.pi}_a{cfg.alpha}_b{cfg.beta}_c{cfg.pi_coverage}"
                          f"{f'_bs{cfg.beta_student}' if cfg.beta_student != Config.beta_student else ''}"
                          f"{'_r' if cfg.student_kl == 'reward' else ''}{'' if cfg.student_baseline else '_nb'}"
                          f"{'_frozen' if cfg.frozen_teacher else ''}{'_kept' if cfg.token_norm == 'kept' else ''}"
                          f"_s{cfg.seed}")
    run = Run(cfg, cfg.run)
    model, ckpt = run.load_model()
    opts = {"opt": torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.99))}
    phase, step = run.restore(ckpt, opts) if cfg.resume else ("rl", 0)
    teacher_model = run.load_start().eval().requires_grad_(False) if cfg.frozen_teacher else None
    test, train = list(TEST_SEEDS), list(TRAIN_SEEDS)

    def evaluate_both(n, row):
        """Held-out student success (greedy) and the teacher's success with PI on training tasks (sampled)."""
        model.eval()
        row["heldout_success"] = evaluate(model, test[:n], level=cfg.level)["success"]
        row["teacher_pi_success"] = evaluate(teacher_model or model, train[:n], pi=cfg.pi, level=cfg.level,
                                             temperature=cfg.temperature)["success"]
        model.train()
        return row

    model.train()
    while phase == "rl" and step < cfg.steps:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        stats, played = distill_round(model, opts["opt"], cfg, run.rng.sample(pool, cfg.tasks), with_pi.__contains__,
                                      alpha_at(step, cfg), g, teacher_model)
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
    if cfg.pi_coverage > 0 and cfg.student_kl == "reward":
        method += " (Algorithm 1's folded KL)"
    if cfg.pi_coverage > 0 and (cfg.pi != "full" or cfg.beta != Config.beta or cfg.pi_coverage < 1):
        method += f" ({cfg.pi}, β={cfg.beta:g}, coverage {cfg.pi_coverage:g})"
    if cfg.pi_coverage > 0 and cfg.beta_student != Config.beta_student:
        method += f" (student KL weight {cfg.beta if cfg.beta_student < 0 else cfg.beta_student:g})"
    if cfg.pi_coverage > 0 and not cfg.student_baseline:
        method += " (student advantage R, no baseline)"
    if cfg.frozen_teacher:
        method += " (frozen teacher)"
    if cfg.token_norm == "kept":
        method += " (clipped terms over their own tokens)"
    if 0 < cfg.alpha < 1 and cfg.alpha_warmup != Config.alpha_warmup:
        method += f" (α warm-up {cfg.alpha_warmup})"
    if cfg.steps != Config.steps:  # a row of its own in the results table, not pooled with the default budget
        method += f" ({cfg.steps} rounds)"
    knobs = [f"{k} {getattr(cfg, k):g}" for k in ("lr", "grad_steps", "tasks", "k")
             if getattr(cfg, k) != getattr(Config, k)]
    if knobs:  # likewise: a run at another learning rate or batch is not pooled with the default row
        method += f" ({', '.join(knobs)})"
    return run.finish(method, heldout_success=final["heldout_success"], teacher_pi_success=final["teacher_pi_success"],
                      n=cfg.final_n)


if __name__ == "__main__":
    main()
