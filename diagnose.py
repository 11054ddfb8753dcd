"""The anatomy of a round: where the KL between the views sits, where its gradient goes, and how each view does,
round by round, in the first rounds of OPSD or π-Distill. The measurement behind the collapse entries of
docs/experiments_collapse.md.

    python diagnose.py opsd --teacher shared --lr 2e-4 --rounds 30     # OPSD on the shared network: the collapse
    python diagnose.py pi_distill --alpha 0 --teacher shared --rounds 40  # the student term alone, shared
    python diagnose.py opsd --rounds 30                                  # OPSD at its defaults (frozen teacher)

The first argument names the script; the rest are that script's options, plus --rounds. The script's own round
function trains the model, so the rounds are the run's rounds; after each, on the round's episodes (the student's
samples in OPSD, the teacher's in π-Distill) and at the updated weights, it records:
- the script's KL (OPSD: KL(π^S ‖ π^T); π-Distill: KL(π^T ‖ π^S)) per agent token, its share and the norm of its
  gradient in three parts of each episode: the agent turns before the episode's first departure from the expert
  (what the expert would write given the same transcript), that turn, and the turns after it; and per token kind:
  a turn's first token (the tool name), its other tokens (the arguments), its closing newline;
- each view's entropy at those tokens;
- the teacher view's success with its PI and the student view's, sampled, on 64 fixed training tasks.
One JSON line per round goes to out/<run>/diagnose.jsonl.
"""

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass

import torch

import opsd
import pi_distill
from config import parse_args, run_name
from env import TRAIN_SEEDS, expert_act, render
from eval import evaluate
from model import kl_div, vocab_logprobs
from rollout import TEMPERATURE, student_view, teacher_view, trimmed
from run import Run, pi_tasks

SCRIPTS = {"opsd": opsd, "pi_distill": pi_distill}
PARTS = ("before", "departure", "after")
KINDS = ("tool", "args", "newline")


def departures(played):
    """Per episode, the index of its first agent turn that differs from what the expert writes given the same
    transcript (the number of agent turns if none does)."""
    out = []
    for env in played.envs:
        turn, history = 0, []
        for role, text in env.history:
            if role == "agent":
                expert = expert_act(render(history))
                if text.split("<|/think|>")[-1].strip() != expert.split("<|/think|>")[-1].strip():
                    break
                turn += 1
            history.append((role, text))
        out.append(turn)
    return out


def token_classes(mask, first_off):
    """(part, kind) of every agent token, row-major as vocab_logprobs orders them: part 0/1/2 = before / at / after
    the episode's first departure, kind 0/1/2 = the turn's first token / a middle one / its last (the newline).
    An agent turn is a run of consecutive mask-1 tokens."""
    parts, kinds = [], []
    for row in range(mask.size(0)):
        m, turn, t = mask[row].tolist(), -1, 0
        while t < len(m):
            if not m[t]:
                t += 1
                continue
            turn, end = turn + 1, t
            while end < len(m) and m[end]:
                end += 1
            part = 0 if turn < first_off[row] else 1 if turn == first_off[row] else 2
            for u in range(t, end):
                parts.append(part)
                kinds.append(0 if u == t else 2 if u == end - 1 else 1)
            t = end
    return torch.tensor(parts), torch.tensor(kinds)


def anatomy(model, teacher, played, pi, reverse):
    """The KL and entropy statistics of one round's `played` episodes (student samples when `reverse`, OPSD's
    KL(π^S ‖ sg π^T); else teacher samples, π-Distill's KL(sg π^T ‖ π^S))."""
    device = next(model.parameters()).device
    if reverse:
        s_ep, t_ep = played.episodes, teacher_view(played, pi)
    else:
        s_ep, t_ep = student_view(played, pi), played.episodes
    (ids_s, mask_s, _), (ids_t, mask_t, _) = trimmed(s_ep, device), trimmed(t_ep, device)
    with torch.no_grad():
        lp_t = vocab_logprobs(teacher(ids_t)[0], mask_t)
    lp_s = vocab_logprobs(model(ids_s)[0], mask_s)
    kl = kl_div(lp_s, lp_t) if reverse else kl_div(lp_t, lp_s)  # (N,) the teacher side detached
    first_off = departures(played)
    part, kind = token_classes(mask_s.cpu(), first_off)
    out = {"kl_token": kl.mean().item(),
           "entropy_student": -(lp_s.exp() * lp_s).sum(-1).mean().item(),
           "entropy_teacher": -(lp_t.exp() * lp_t).sum(-1).mean().item()}
    total = kl.sum().item() or 1.0
    for names, cls in ((PARTS, part), (KINDS, kind)):
        for i, name in enumerate(names):
            sel = (cls == i).to(device)
            out[f"tokens_{name}"] = sel.float().mean().item()
            out[f"kl_share_{name}"] = kl[sel].sum().item() / total
            if names is PARTS and sel.any():  # the norm of the gradient this part alone sends into the weights
                grads = torch.autograd.grad(kl[sel].sum() / len(kl), list(model.parameters()), retain_graph=True,
                                            allow_unused=True)
                out[f"grad_{name}"] = torch.sqrt(sum((g ** 2).sum() for g in grads if g is not None)).item()
    turns = [sum(role == "agent" for role, _ in env.history) for env in played.envs]
    out["departed"] = sum(f < n for f, n in zip(first_off, turns)) / len(turns)  # episodes that leave the expert
    return out


@dataclass
class Rounds:
    rounds: int = 30  # rounds to run and measure


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SCRIPTS:
        raise SystemExit(f"usage: python diagnose.py {{{' | '.join(SCRIPTS)}}} [that script's options] --rounds N")
    script = SCRIPTS[argv[0]]
    config = dataclass(type("Config", (script.Config, Rounds), {}))
    cfg = parse_args(config(), argv[1:])
    if script is pi_distill:  # the options left at 0 set as the script sets them, the run named before
        cfg = pi_distill.resolved(dataclasses.replace(cfg, run=cfg.run or run_name(f"diagnose_{argv[0]}", cfg)))
    pool, with_pi = pi_tasks(cfg)
    run = Run(cfg, f"diagnose_{argv[0]}")
    model, _ = run.load_model()
    teacher = run.teacher(model, pi_distill.teacher_kind(cfg) if script is pi_distill else cfg.teacher)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.99))
    probe = list(TRAIN_SEEDS[:64])
    with open(os.path.join(run.dir, "diagnose.jsonl"), "w") as f:
        for step in range(cfg.rounds + 1):
            row = {"round": step}
            if step:
                g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step - 1)
                seeds = run.rng.sample(pool, cfg.tasks)
                t0 = time.time()
                if script is opsd:
                    stats, played = opsd.opsd_round(model, opt, cfg, seeds, with_pi.__contains__, g, teacher)
                else:
                    stats, played = pi_distill.distill_round(model, opt, cfg, seeds, with_pi.__contains__,
                                                             pi_distill.alpha_at(step - 1, cfg), g, teacher)
                row.update(round_s=time.time() - t0, round_success=stats.get("success", stats.get("teacher_success")))
                model.eval()
                row.update(anatomy(model, teacher, played, cfg.pi, reverse=script is opsd))
            model.eval()
            row["teacher_pi_success"] = evaluate(model, probe, pi=cfg.pi, temperature=TEMPERATURE)["success"]
            student = evaluate(model, probe, temperature=TEMPERATURE)
            row.update(student_success=student["success"], student_protocol_errors=student["protocol_errors"])
            model.train()
            row = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
            f.write(json.dumps(row) + "\n")
            f.flush()
            print(" | ".join(f"{k} {v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
