"""π-Distill (the paper's Eq. 2-4, Algorithm 1): one network, a teacher view that sees the PI and a student view
that does not, trained on the teacher's samples. The project's main command.

    python pi_distill.py --env toy_shop               # α = 0: the student learns from a fixed teacher (~5 min)
    python pi_distill.py --alpha 0.5                  # the paper's joint training of both views (~6 min)
    python pi_distill.py --alpha 1 --pi tools         # teacher only, least informative PI: the collapse setting
    python pi_distill.py --pi_coverage 0              # no PI at all: plain GRPO on the same budget

Each round (Algorithm 1), for the tasks that have PI (distill_round):
 1. K episodes per task from the teacher view π^T(·|s, I) (rollout.play with the PI line in the prompt);
 2. the teacher's reward R − β·KL_seq(π^T ‖ sg π^S), the exact KL summed over the agent tokens (Eq. 2;
    rollout.kl_teacher_student);
 3. group-centred advantages without the std; groups whose advantages are all zero are dropped (grpo.py);
 4. teacher term L_T: clipped ratio π^T_θ / π^T_old on the teacher's context (Eq. 2; distill_loss);
 5. student term L_S: clipped ratio π^S_θ / sg π^T_old on the same tokens without the PI line, plus Eq. 3's
    β·KL(sg π^T ‖ π^S) at every teacher token (Eq. 3; distill_loss);
 6. loss α·L_T + (1 − α)·L_S (Eq. 4), normalised by the round's agent tokens, `grad_steps` steps.
Tasks without PI (1 − pi_coverage of them) train as student-view GRPO in the same batch. No KL to the base model.

Deviations (each measured; docs/deviations.md):
- the student's advantage is R − group mean, and its KL is Eq. 3's loss term, not folded into its reward
  (`--student_kl reward` runs Algorithm 1 as written: the student did not learn);
- the student's off-policy ratio is also capped at DUAL_CLIP where A < 0 (dual-clip PPO);
- α is at its value from the first round (`--alpha_warmup N`: the paper's linear rise over N rounds);
- at α = 0 nothing trains the teacher view, and a fixed copy of the start plays it (`--teacher auto`): sharing the
  student's drifting weights, it collapsed on every seed (`--teacher shared` runs it; docs/experiments_collapse.md);
- the default is α = 0 (the paper's α = 0.5 is `--alpha 0.5`), and rounds, tasks per round, K and the learning rate
  follow the teacher view (BY_TEACHER): the fixed teacher cannot break, so the student takes larger steps on more
  tasks and its rise comes by round 150-250 on every seed (docs/experiments.md, "A teacher that cannot break").
Speed, not a change of the algorithm: each distinct teacher episode is scored and trained once, weighted by its
copies in its group (rollout.distinct, View): the same loss and gradient as the full batch (tested).
"""

import dataclasses
import time
from dataclasses import dataclass
from typing import NamedTuple

import torch

from config import label, parse_args, run_name
from env import TEST_SEEDS, TRAIN_SEEDS
from eval import evaluate, transfer
from grpo import CLIP, centred_advantages, clipped_surrogate, entropy, update
from model import kl_div, token_logprobs, vocab_logprobs
from rollout import (TEMPERATURE, distinct, episode_sums, kl_teacher_student, play, show_episode, student_view,
                     trimmed)
from run import Run, RunConfig, pi_tasks

DUAL_CLIP = 3.0  # cap of the student's off-policy ratio where A < 0 (docs/deviations.md)


@dataclass
class Config(RunConfig):
    pi: str = "full"  # PI form the teacher view sees: full | tools | key | answer | hint
    pi_coverage: float = 1.0  # share of the training tasks that have PI (the rest train as plain GRPO)
    n_tasks: int = 2000  # training tasks (the expert budget: PI exists for the first pi_coverage * n_tasks)
    alpha: float = 0.0  # Eq. 4: weight of the teacher term; 0 = student only, 1 = teacher only
    alpha_warmup: int = 0  # rounds of the paper's linear rise of α from 0 (0: α from the first round)
    beta: float = 0.25  # weight of the KL between the views: in the teacher's reward and in the student's loss
    student_kl_scale: float = 1.0  # Eq. 3's KL term weighs β × this in the student's loss (1: the paper)
    student_kl: str = "loss"  # loss: Eq. 3's KL term in the student loss | reward: folded into its reward (Alg. 1)
    teacher: str = "auto"  # teacher view's weights: auto (frozen at α = 0, else shared) | shared (paper) | frozen
    steps: int = 0  # sampling rounds (0: by the teacher view, BY_TEACHER)
    tasks: int = 0  # tasks per round (0: BY_TEACHER)
    k: int = 0  # episodes per task, the group size (0: BY_TEACHER)
    lr: float = 0.0  # AdamW learning rate (0: BY_TEACHER)
    grad_steps: int = 2  # gradient steps per round on the same episodes


# The defaults that depend on who plays the teacher view (docs/experiments.md, "A teacher that cannot break"): a
# frozen teacher cannot break, so the student takes twice the step on twice the tasks per round; on the shared
# network a larger step, K = 2, a stronger student KL and more gradient steps each broke the teacher.
BY_TEACHER = {"frozen": dict(steps=300, tasks=32, k=2, lr=2e-4), "shared": dict(steps=400, tasks=16, k=4, lr=1e-4)}


def teacher_kind(cfg):
    """--teacher auto: frozen at α = 0, where nothing trains the teacher view, else shared (docs/deviations.md)."""
    return cfg.teacher if cfg.teacher != "auto" else "frozen" if cfg.alpha == 0 else "shared"


def resolved(cfg):
    """cfg with each option left at 0 (steps, tasks, k, lr) set from BY_TEACHER for its teacher view."""
    auto = BY_TEACHER[teacher_kind(cfg)]
    return dataclasses.replace(cfg, **{key: value for key, value in auto.items() if getattr(cfg, key) == 0})


def alpha_at(step, cfg):
    """α at round `step`: its value, or with `alpha_warmup` the paper's linear rise from 0 (0 < α < 1)."""
    if 0 < cfg.alpha < 1 and cfg.alpha_warmup > 0:
        return cfg.alpha * min(1.0, step / cfg.alpha_warmup)
    return cfg.alpha


class View(NamedTuple):
    """One view of a batch of distinct teacher episodes, on the device: ids, agent mask (B, T); logp_old = π^T_old at
    the sampled tokens (B, T); adv (B,); weight (B,) how much each episode counts in the clipped term: its number of
    copies in its group where its group is informative, else 0; count (B,) its copies, the weight of its tokens in
    Eq. 3's KL term (None: 1 each). A batch of distinct episodes weighted by their copies gives the loss and gradient
    of the batch with every copy in it (rollout.distinct), for about a third of the forward and backward passes."""
    ids: torch.Tensor
    mask: torch.Tensor
    logp_old: torch.Tensor
    adv: torch.Tensor
    weight: torch.Tensor
    count: torch.Tensor = None


def distill_loss(model, teacher, student, alpha, temperature=TEMPERATURE, clip=CLIP, beta=0.0, lp_t=None,
                 dual_clip=None, n_tokens=None, record=None):
    """α·L_T + (1 − α)·(L_S + β·KL(sg π^T ‖ π^S)) on the teacher's episodes (Eq. 4 with Eq. 2 and Eq. 3).

    teacher, student: Views of the same episodes (teacher None: no teacher term). L_T: clipped ratio π^T_θ / π^T_old
    (Eq. 2); L_S: clipped ratio π^S_θ / sg π^T_old on the same tokens (Eq. 3), its off-policy ratio also capped at
    `dual_clip` where A < 0; each over the agent tokens of the episodes it uses, weighted by View.weight, normalised
    by `n_tokens` (the scripts: the round's agent tokens) or else by the weighted token count. With `lp_t` (N, V),
    the teacher's log-softmax at every agent token of the student view (row-major order, detached), Eq. 3's KL term
    is added as a mean over those tokens, each weighted by its episode's copies, with gradient into the student only;
    a dict `record` receives its per-token values, detached (N,). Returns (loss, entropy of the last view scored)."""
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
            if record is not None:
                record["kl"] = kl.detach()
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


def distill_round(model, opt, cfg, seeds, has_pi, alpha, generator, teacher=None):
    """One round of Algorithm 1 over `seeds`; those without PI are student GRPO. -> (stats, teacher episodes).
    `teacher`: the weights that sample and score the teacher view (default `model`; --teacher frozen: the start's).

    The teacher's advantage comes from R − β·KL_seq (Eq. 2). With `student_kl=loss` the student's comes from R alone
    and Eq. 3's β·KL(sg π^T ‖ π^S) is a loss term on every teacher episode; with `reward` both terms share the
    teacher's folded advantage and there is no student KL term (Algorithm 1 as written)."""
    t0, device, K = time.time(), next(model.parameters()).device, cfg.k
    pi_seeds, plain_seeds = [s for s in seeds if has_pi(s)], [s for s in seeds if not has_pi(s)]
    model.eval()
    batches, stats, shown, tokens = [], {"alpha": alpha}, None, 0

    if pi_seeds:
        played = play(teacher or model, pi_seeds, K, level=cfg.level, pi=cfg.pi, temperature=TEMPERATURE,
                      generator=generator, keep_dist=True)  # the teacher's distributions for the KL, from the sampler
        uniq, rows, inverse = distinct(played, K)  # copies of an episode: scored and trained once, weighted
        # The teacher's reward needs KL_seq before the loss (α > 0, or folded into the student's). At α = 0 it is only
        # logged, and the first gradient step's KL term measures it on the same weights: one forward pass fewer.
        late_kl = alpha == 0 and cfg.student_kl == "loss" and cfg.beta * cfg.student_kl_scale > 0
        if late_kl:
            kl, lp_t = None, torch.cat(uniq.episodes.dist).to(device)
        else:
            kl, lp_t = kl_teacher_student(model, uniq, cfg.pi, True, teacher)  # (B',), (N, V); no gradient
            kl = kl[inverse]  # every episode's KL_seq, copies included, for the group means
        reward = played.rewards - cfg.beta * (0 if late_kl else kl)  # Algorithm 1: the teacher's reward
        adv_t, keep_t = centred_advantages(reward, K)
        if cfg.student_kl == "loss":
            adv_s, keep_s = centred_advantages(played.rewards, K)
        else:
            (adv_s, keep_s), lp_t = (adv_t, keep_t), None
        teacher = view(uniq.episodes, adv_t, keep_t, rows, inverse, device)
        student = view(student_view(uniq, cfg.pi), adv_s, keep_s, rows, inverse, device, all_rows=lp_t is not None)
        batches.append((teacher, student, lp_t, alpha, played.episodes.mask.sum().item()))
        stats.update(teacher_success=played.rewards.mean().item(), zero_adv=1 - keep_t.float().mean().item(),
                     zero_adv_student=1 - keep_s.float().mean().item(), distinct=len(rows) / len(inverse),
                     len=played.episodes.lengths.float().mean().item())
        tokens, shown, pi_inverse = tokens + played.episodes.mask.sum().item(), played, inverse
    if plain_seeds:
        plain = play(model, plain_seeds, K, level=cfg.level, temperature=TEMPERATURE, generator=generator)
        adv, keep = centred_advantages(plain.rewards, K)
        uniq, rows, inverse = distinct(plain, K)
        own = view(uniq.episodes, adv, keep, rows, inverse, device)  # the student term alone on its own samples
        batches.append((None, own, None, 0.0, plain.episodes.mask.sum().item()))
        stats.update(student_success=plain.rewards.mean().item(), zero_adv_plain=1 - keep.float().mean().item())
        tokens, shown = tokens + plain.episodes.mask.sum().item(), shown or plain
    stats["tok_s"] = tokens / (time.time() - t0)
    model.train()
    n_total, loss = sum(b[4] for b in batches), 0.0
    for grad_step in range(cfg.grad_steps):
        loss = 0.0
        for i, (teacher, student, lp_t, a, n) in enumerate(batches):  # each part weighted by its token share
            if student is not None:
                record = {} if pi_seeds and late_kl and grad_step == 0 and i == 0 else None
                term, ent = distill_loss(model, teacher, student, a, beta=cfg.beta * cfg.student_kl_scale, lp_t=lp_t,
                                         dual_clip=DUAL_CLIP, n_tokens=n, record=record)
                loss = loss + term * n / n_total
                if record:  # α = 0: KL_seq per episode from the first step's KL term, before any update
                    kl = episode_sums(record["kl"], student.mask[:, 1:])[pi_inverse]
        if torch.is_tensor(loss):
            update(model, opt, loss)
    if pi_seeds:
        stats.update(reward=(played.rewards - cfg.beta * kl).mean().item(), kl=kl.mean().item())
    if torch.is_tensor(loss):
        stats.update(loss=loss.item(), entropy=ent)
    return stats, shown


def main(argv=None):
    cfg = parse_args(Config(), argv)
    if not 0 <= cfg.alpha <= 1:
        raise SystemExit(f"error: --alpha must lie in [0, 1], got {cfg.alpha}")
    if cfg.student_kl not in ("loss", "reward"):
        raise SystemExit(f"error: --student_kl must be loss or reward, got {cfg.student_kl!r}")
    if cfg.teacher not in ("auto", "shared", "frozen"):
        raise SystemExit(f"error: --teacher must be auto, shared or frozen, got {cfg.teacher!r}")
    if cfg.teacher == "frozen" and cfg.alpha > 0:
        raise SystemExit("error: --teacher frozen trains no teacher view; it needs --alpha 0")
    if min(cfg.steps, cfg.tasks, cfg.k, cfg.lr) < 0:
        raise SystemExit("error: --steps, --tasks, --k and --lr must be positive (0: the default for the teacher view)")
    asked = cfg  # names the run and its row: the options set on the command line
    cfg = resolved(dataclasses.replace(asked, run=asked.run or run_name("pi_distill", asked)))
    kind = teacher_kind(cfg)
    pool, with_pi = pi_tasks(cfg)
    run = Run(cfg, "pi_distill")
    model, ckpt = run.load_model()
    teacher = run.teacher(model, kind)
    opts = {"opt": torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.99))}
    phase, step = run.restore(ckpt, opts) if cfg.resume else ("rl", 0)
    test, train = list(TEST_SEEDS), list(TRAIN_SEEDS)

    def evaluate_both(n, row, n_teacher):
        """Held-out student success (greedy, n tasks); on n_teacher training tasks (sampled) the teacher's success
        with its PI, and with the next task's PI in its place (as high: the teacher no longer reads its PI)."""
        model.eval()
        row["heldout_success"] = evaluate(model, test[:n], level=cfg.level)["success"]
        if cfg.pi_coverage > 0:
            for key, pi_seeds in (("teacher_pi_success", None), ("teacher_other_pi_success", train[1:n_teacher + 1])):
                row[key] = evaluate(model, train[:n_teacher], pi=cfg.pi, level=cfg.level, temperature=TEMPERATURE,
                                    pi_seeds=pi_seeds)["success"]
        model.train()
        return row

    model.train()
    while phase == "rl" and step < cfg.steps:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        stats, played = distill_round(model, opts["opt"], cfg, run.rng.sample(pool, cfg.tasks), with_pi.__contains__,
                                      alpha_at(step, cfg), g, teacher)
        step += 1
        if step % cfg.eval_every == 0 or step == cfg.steps:
            run.log(phase, step, evaluate_both(cfg.eval_n, stats, cfg.eval_n // 2))
            run.save(model, opts, phase, step)
            print(show_episode(played))
        else:
            run.log(phase, step, stats)
    final = evaluate_both(cfg.final_n, {}, cfg.final_n)
    run.save(model, opts, "done", step)
    if cfg.pi_coverage > 0:
        method = label(f"π-Distill α={cfg.alpha:g}", asked, ("alpha",))
    else:
        method = label("RL (π-Distill script, no PI)", asked, ("pi_coverage",))
    model.eval()
    teacher_numbers = {k: final[k] for k in ("teacher_pi_success", "teacher_other_pi_success") if k in final}
    return run.finish(method, heldout_success=final["heldout_success"], **teacher_numbers, n=cfg.final_n, teacher=kind,
                      **transfer(model, cfg.final_n))


if __name__ == "__main__":
    main()
