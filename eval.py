"""Measure a model on toy_shop: held-out student success, and the premise statistics per PI form.

    python eval.py --env toy_shop                    # the shipped base model
    python eval.py --ckpt out/run/ckpt.pt --pi all   # + per PI form on training seeds: teacher success, Δ, KL
    python eval.py --pi all --json 1                 # last line: one JSON object with every number
    python eval.py --split ood                       # the same on the out-of-distribution split (docs/env.md)

What it prints (the paper's premise statistics, and this project's diagnostics):
- the student view (no PI) on held-out seeds, greedy and sampled at the algorithms' temperature, with its protocol
  error rate — every score this project reports is this one — and where its BUY episodes' row lands;
- with --pi: on training seeds, the teacher view's success per PI form, the PI utility Δ = teacher − student, and the
  initial divergence KL(π^T ‖ π^S) per episode (full-vocabulary, summed over the teacher's sampled agent tokens),
  and whether the teacher copies its PI line's row id and payment (diagnostics.pi_copy);
- the decisive turn, teacher-forced on the expert's transcript (diagnostics.decisions; --cot 1 with its CoT);
- the model's reading of a rendered table (diagnostics.reading): the forgetting probe, a skill of the base that no
  post-training trains directly;
- the scripted expert and a random agent on the same held-out seeds: ceiling and floor.
"""

import json
import random
import re
import sys
from dataclasses import dataclass

import torch
from tqdm import tqdm

from config import parse_args
from diagnostics import buy_selection, decisions, pi_copy, reading
from env import PI_FORMS, TEST_SEEDS, TRAIN_SEEDS, expert_act, make, render
from model import CheckpointError, load_checkpoint, pick_device
from rollout import TEMPERATURE, kl_teacher_student, play
from run import base_checkpoint
from worlds import LEVELS


@dataclass
class EvalConfig:
    env: str = "toy_shop"  # the environment
    level: str = "L2"  # the task level (L1 | L2 | L3)
    ckpt: str = ""  # a checkpoint; default: the env's base model
    n: int = 500  # episodes per measurement
    pi: str = ""  # "" | all | a comma-separated list of PI forms (full, tools, key, answer, hint)
    cot: bool = False  # the decisive-turn probe scores the expert's turns with its chain of thought (--cot 1 models)
    batch: int = 128  # episodes sampled in lockstep
    seed: int = 0  # seeds the sampled evaluations
    device: str = "auto"  # auto | cpu | cuda | mps
    json: bool = False  # print the results as one JSON object on the last line
    split: str = "id"  # id: held-out tasks of --level | ood: held-out tasks of the OOD split (docs/env.md)


@torch.no_grad()
def evaluate(model, seeds, pi=None, level="L2", temperature=0.0, seed=0, batch=128, kl=False, progress=False,
             pi_seeds=None):
    """One episode per seed in one view: success rate, protocol-error rate (an unparsable turn, or cut off by the
    context), mean tokens per episode, and with `kl` the mean KL_seq(π^T ‖ π^S) over the (teacher) episodes.
    `pi_seeds`: the teacher view is shown these tasks' PI instead of its own (rollout.play)."""
    wins, errors, tokens, kls, envs = 0.0, 0, 0, [], []
    chunks = range(0, len(seeds), batch)
    for i in tqdm(chunks, desc=f"{pi or 'student'}", leave=False, disable=not progress):
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        p = play(model, seeds[i : i + batch], 1, level=level, pi=pi, temperature=temperature, generator=g,
                 pi_seeds=None if pi_seeds is None else pi_seeds[i : i + batch])
        wins += p.rewards.sum().item()
        errors += sum(not d or any(t == "error format" for _, t in e.history)
                      for e, d in zip(p.envs, p.episodes.done.tolist()))
        tokens += p.episodes.lengths.sum().item()
        envs += p.envs
        if kl and pi:
            kls += kl_teacher_student(model, p, pi).tolist()
    n = len(seeds)
    out = {"success": wins / n, "protocol_errors": errors / n, "mean_len": tokens / n,
           "buy": buy_selection(envs, level)}
    if kls:
        out["kl"] = sum(kls) / len(kls)
    return out


def transfer(model, n=500):
    """Table 1's out-of-distribution column and the forgetting probe, for any trained model: greedy success on the
    first n held-out tasks of the OOD split (level OOD; docs/env.md, "The OOD split"), its protocol-error rate, and
    `reading`, the mean over skill kinds of diagnostics.reading — the base's table reading, which no method trains."""
    ood, read = evaluate(model, list(TEST_SEEDS[:n]), level="OOD"), reading(model)
    return {"ood_success": ood["success"], "ood_protocol_errors": ood["protocol_errors"],
            "reading": sum(read.values()) / len(read)}


def scripted_success(seeds, level, agent):
    """Success of a scripted agent: 'expert' (env.expert_act) or 'random' (the canonical tools, random arguments)."""
    env, rng, wins = make("toy_shop", level), random.Random(0), 0.0
    for seed in seeds:
        env.reset(seed)
        reward, done = 0.0, False
        while not done:
            text = render(env.history)
            action = expert_act(text) if agent == "expert" else random_act(text, rng)
            _, reward, done, _ = env.step(action)
        wins += reward
    return wins / len(seeds)


def random_act(transcript, rng):
    """The expert's tool sequence with every decisive argument drawn at random from what the transcript shows."""
    agent = re.findall(r"<\|agent\|> (\w+)", transcript)
    if agent and agent[-1] in ("buy", "return", "cancel", "exchange"):  # after the write: repeat its reply
        last = re.findall(r"<\|tool\|> ([^\n]*)", transcript)[-1].split()
        return "say " + (" ".join(last[1:3]) if last[0] == "ok" else "none")
    action = expert_act(transcript).split()
    ids = re.findall(r"\b([bdfghjkmnpqz][1-9])\b", transcript.split("<|user|>")[1])
    if action[0] == "buy":
        action[1], action[3] = rng.choice(ids), rng.choice(["gift", "card"])
    elif action[0] in ("return", "cancel"):
        action = rng.choice([["cancel", action[1]], ["return", action[1], rng.choice(ids)]])
    elif action[0] == "exchange":
        action[3], action[4] = rng.choice(ids), rng.choice(["gift", "card"])
    return " ".join(action)


def main(argv=None):
    cfg = parse_args(EvalConfig(), argv)
    if cfg.level not in LEVELS:
        sys.exit(f"error: unknown level {cfg.level!r}; valid: {', '.join(LEVELS)}")
    if cfg.split not in ("id", "ood"):
        sys.exit(f"error: --split must be id or ood, got {cfg.split!r}")
    level = "OOD" if cfg.split == "ood" else cfg.level
    forms = PI_FORMS if cfg.pi == "all" else [f for f in cfg.pi.split(",") if f]
    bad = [f for f in forms if f not in PI_FORMS]
    if bad:
        sys.exit(f"error: unknown PI form {bad[0]!r}; valid: all, {', '.join(PI_FORMS)}")
    try:
        make(cfg.env)
        cfg.ckpt = cfg.ckpt or base_checkpoint(cfg.env)
        model, _ = load_checkpoint(cfg.ckpt, pick_device(cfg.device))
    except (ValueError, CheckpointError) as e:
        sys.exit(f"error: {e}")
    model.eval()
    test, train = list(TEST_SEEDS[: cfg.n]), list(TRAIN_SEEDS[: cfg.n])
    run = dict(level=level, seed=cfg.seed, batch=cfg.batch, progress=True)
    res = {"ckpt": cfg.ckpt, "level": level, "n": cfg.n, "temperature": TEMPERATURE}
    print(f"{cfg.ckpt}: {cfg.env} {level}, {cfg.n} episodes per number")
    for name, temp in (("greedy", 0.0), ("sampled", TEMPERATURE)):
        r = evaluate(model, test, temperature=temp, **run)
        res[f"student_{name}"], res[f"protocol_errors_{name}"] = r["success"], r["protocol_errors"]
        res[f"mean_len_{name}"] = r["mean_len"]
        res[f"buy_{name}"] = r["buy"]
        print(f"student (held-out, {name:7s}) success {r['success']:.3f} | protocol errors {r['protocol_errors']:.3f}"
              f" | {r['mean_len']:.0f} tokens/episode")
        print("  BUY selection: " + " | ".join(f"{k} {v:.3f}" for k, v in r["buy"].items()))
    res["decisions"] = {f: {k: round(v, 3) for k, v in d.items()}
                        for f, d in decisions(model, test, cot=cfg.cot, level=level).items()}
    print(f"decisive turn (teacher-forced on the expert's, {'with' if cfg.cot else 'without'} CoT; the row it names "
          "/ the whole turn): " + " | ".join(f"{f} {d['row']:.3f} / {d['turn']:.3f}"
                                               for f, d in res["decisions"].items()))
    if forms:
        base = evaluate(model, train, temperature=TEMPERATURE, **run)["success"]
        res["student_train"] = base
        print(f"on training seeds, T={TEMPERATURE}: student {base:.3f}")
        for form in forms:
            r = evaluate(model, train, pi=form, temperature=TEMPERATURE, kl=True, **run)
            res[f"teacher_{form}"], res[f"delta_{form}"], res[f"kl_{form}"] = r["success"], r["success"] - base, r["kl"]
            print(f"teacher {form:6s} success {r['success']:.3f} | Δ {r['success'] - base:+.3f} | "
                  f"KL(T‖S) {r['kl']:.2f} nats/episode | protocol errors {r['protocol_errors']:.3f}")
        copy = pi_copy(model, train, level)
        res["pi_copy"] = {k: round(v, 3) for k, v in copy.items()}
        print(f"PI copy (teacher-forced, expert transcripts, `full` PI true or altered): the teacher names its PI's "
              f"row id {copy['teacher_id']:.3f}, payment {copy['teacher_pay']:.3f} (0.5: ignores it) | the student, "
              f"the expert's id {copy['student_id']:.3f}, payment {copy['student_pay']:.3f}")
    res["reading"] = {k: round(v, 3) for k, v in reading(model).items()}
    print("reading (skill questions after a rendered table, greedy exact match, 200 each): "
          + " | ".join(f"{k} {v:.3f}" for k, v in res["reading"].items()))
    res["expert"] = scripted_success(test, level, "expert")
    res["random"] = scripted_success(test, level, "random")
    print(f"expert {res['expert']:.3f} | random agent {res['random']:.3f}")
    if cfg.json:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}))
    return res


if __name__ == "__main__":
    main()
