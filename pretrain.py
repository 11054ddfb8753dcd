"""The base model: a from-scratch GPT pretrained like an LLM, by next-token prediction (docs/base_model.md).

    python pretrain.py                     # the shipped base by BASE_RECIPE (two runs, ~2 h on a 2-core CPU)
    python pretrain.py --steps=2000 --skill_steps=1000 --out=out/try.pt    # a shorter run, e.g. to try a knob
    python pretrain.py --init=base/toy_shop.pt --skill_steps=0 --skill_frac=1 --steps=1500 --lr=1e-3 --out=out/s.pt
                                           # continue the base on skill documents alone

It stands in for the pretrained LLM the paper starts from: it knows the protocol, can read a tool reply, and has
learned that a PI line predicts the actions that follow — but nothing about which answer is right. The corpus:

- weak-agent episodes: the canonical tool plan with plausible-but-wrong decisive arguments (a random row, the
  cheapest of the colour ignoring stock, the cheapest overall, a random row of the colour; card 60% of the time;
  return/cancel blind to the order's status and to the item asked for). Together they succeed ~12% of the time;
- on `pi_frac` of them, a hindsight PI line built from the episode's *own* actions, which therefore matches what
  follows with probability `rho`; otherwise it is taken from another weak rollout of the same task. The model learns
  "the PI line predicts my next actions", never what is right. Forms full/key/tools/answer; `hint` never appears;
- `skill_frac` skill documents over rendered rows: look up a price or a stock, list the ids of a colour (with
  `sized`, some of a colour in one size), min/max, sums and differences — an LLM's general reading and arithmetic.
  Every check logs `reading` (per kind of question, greedy exact match on fresh documents) beside the calibration.

A curriculum comes first: `skill_steps` batches of lookup documents alone (a price or a stock by id; half of the
questions the ids of a colour). In the mixed corpus the lookup by colour — the decisive step of every task — never
formed, not with up to 2.8x the training on a GPU either; alone it sits at chance for ~1,500 steps and then forms
at once (docs/base_model.md). With no episodes in it, though, the copy of the PI line's payment never formed
afterwards; the shipped base (BASE_RECIPE) keeps 30% weak-agent episodes, with their PI lines, inside the
curriculum (`curriculum_episodes`), and both skills formed together.

The loss is on agent tokens (and on skill answers, and on the amounts in a write's `ok …` reply, which are
predictable from the rows): the random parts of tool replies (fresh ids, prices) would only add noise (docs/env.md).
Knobs (the defaults were set by measuring the calibration table in docs/base_model.md): rho and pi_frac set how
strongly the teacher follows its PI; skill_steps and skill_frac how well the base reads; the weak-agent mix sets the
student's own success.
"""

import itertools
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, fields

import torch
from tqdm import tqdm

import tokenizer as tk
from config import parse_args
from diagnostics import pi_copy, reading
from env import PRETRAIN_SEED0, TRAIN_SEEDS, make, pi_text
from eval import evaluate
from grpo import update
from model import GPT, CheckpointError, GPTConfig, load_checkpoint, pick_device, save_checkpoint
from rollout import TEMPERATURE
from run import BASE_PATH
from skills import LOOKUPS, skill_pieces
from transcripts import collate, encode_pieces, transcript_pieces

# The shipped base (docs/base_model.md): two runs back to back. The first, with weak-agent episodes inside the lookup
# curriculum, is cut at step 1,500 of a 10,000-step schedule; the second starts again from its weights with a fresh
# optimizer, warm-up and corpus draws, along a 7,500-step cosine whose first 3,000 steps finish the curriculum (~2
# hours on a 2-core CPU in all). It forms both skills in one model: the colour lookup (99.5%) and the copy of the PI
# line's payment (0.91); docs/experiments.md, "A base that copies its PI's payment".
BASE_RECIPE = ("--curriculum_episodes=0.3 --eval_every=500 --stop_at=1500",
               "--curriculum_episodes=0.3 --steps=7500 --skill_steps=3000 --warmup=50 --eval_every=500 --seed=1")


@dataclass
class PretrainConfig:
    env: str = "toy_shop"  # the environment whose episodes make the corpus
    level: str = "L2"  # the level of the weak-agent episodes and the calibration
    model: str = "tiny"  # tiny (0.87M parameters) | small (4.9M)
    steps: int = 10000  # optimizer steps (10,000 take about 60 min on a 2-core CPU); 0: `minutes`
    minutes: float = 50.0  # with --steps=0, the wall-clock budget; the step count is estimated from the first steps
    batch_size: int = 64  # sequences per step (episodes or skill documents)
    lr: float = 2e-3  # peak learning rate; cosine to 10% of it
    weight_decay: float = 0.1  # AdamW weight decay on the matrices
    warmup: int = 200  # steps of linear warm-up
    rho: float = 0.8  # P(the hindsight PI line comes from the episode's own actions)
    pi_frac: float = 0.5  # share of episodes with a PI line
    skill_frac: float = 0.3  # share of skill documents in the corpus
    sized: float = 0.0  # share of colour questions (on tables with sizes) that also name a size; shipped base: 0
    skill_steps: int = 5000  # curriculum: the first skill_steps batches are lookup skill documents alone
    curriculum_episodes: float = 0.0  # share of weak-agent episodes mixed into the curriculum (BASE_RECIPE: 0.3)
    stop_at: int = 0  # end at this step, on the schedule of `steps` (0: at `steps`); BASE_RECIPE's first run
    eval_every: int = 1000  # steps between calibration checks (student / teacher success on training seeds)
    eval_episodes: int = 128  # training seeds per calibration check
    out: str = ""  # checkpoint path; default base/<env>.pt
    init: str = ""  # continue from this checkpoint (its size; --model is ignored) instead of from scratch; needs --out
    workers: int = 0  # processes writing the corpus beside the training loop (0: in the loop; same batches)
    device: str = "auto"  # auto | cpu | cuda | mps
    seed: int = 0  # seeds the corpus draws and the initialisation


# ----------------------------------------------------------------------------------------------------------------
# the corpus


def weak_plan(world, rng):
    """A weak agent's actions (without the final `say`): the canonical tools, plausible-but-wrong arguments."""
    w = world
    if w.family == "BUY":
        colour = [r for r in w.rows if r.color == w.color] or w.rows
        u = rng.random()
        row = (rng.choice(w.rows) if u < 0.25 else min(colour, key=lambda r: r.price) if u < 0.5 else
               min(w.rows, key=lambda r: r.price) if u < 0.65 else rng.choice(colour))
        pay = "card" if rng.random() < 0.6 else "gift"
        return [f"profile {w.user}", f"search {w.category}", f"buy {row.id} {w.qty} {pay}"]
    order = w.orders[w.order_id]
    if w.family == "RETURN":
        if rng.random() < 0.1:  # blind to the status
            return [f"profile {w.user}", f"order {order.id}", f"cancel {order.id}"]
        misread = [r for r in order.items if r.color != w.mode] or order.items  # an item of another colour
        item = rng.choice(order.items) if rng.random() < 0.5 else rng.choice(misread)
        return [f"profile {w.user}", f"order {order.id}", f"return {order.id} {item.id}"]
    colour = [r for r in w.rows if r.color == w.color] or w.rows
    u = rng.random()
    row = (rng.choice(colour) if u < 0.2 else min(colour, key=lambda r: r.price) if u < 0.5 else
           min(w.rows, key=lambda r: r.price) if u < 0.7 else rng.choice(w.rows))
    pay = "card" if rng.random() < 0.6 else "gift"
    return [f"profile {w.user}", f"order {order.id}", f"search {w.category}",
            f"exchange {order.id} {order.items[0].id} {row.id} {pay}"]


def weak_episode(env, seed, rng):
    """Play a weak plan; the final `say` repeats the write's reply (`ok total 62` -> `say total 62`) or says none."""
    env.reset(seed)
    plan = weak_plan(env.world, rng)
    obs = ""
    for action in plan:
        obs, _, _, _ = env.step(action)
    say = "say " + " ".join(obs.split()[1:3]) if obs.startswith("ok") else "say none"
    env.step(say)
    return plan + [say]


def episode_pieces(env, seed, cfg, rng):
    """One weak episode as [(text, has_loss)], maybe with a hindsight PI line."""
    actions = weak_episode(env, seed, rng)
    pi = None
    if rng.random() < cfg.pi_frac:
        form = rng.choices(["full", "key", "tools", "answer"], weights=[4, 3, 1.5, 1.5])[0]
        source = actions
        if rng.random() >= cfg.rho:  # the line comes from another weak rollout of the same task
            source = weak_episode(make(cfg.env, cfg.level), seed, rng)
        pi = pi_text(env.world, form, source)
    return transcript_pieces(env.history, pi, reply_loss=True)


def get_batch(cfg, rng, env, device="cpu", step=None):
    """x, y (B, T) for next-token prediction; y = -1 where a token carries no loss, and on padding. Batches before
    step `cfg.skill_steps` are lookup documents alone (the curriculum), or with `curriculum_episodes` > 0 that share
    of weak-agent episodes among them (with their PI lines, so the PI copy forms beside the lookup)."""
    curriculum = step is not None and step < cfg.skill_steps
    if curriculum and cfg.curriculum_episodes == 0:  # lookup documents alone
        return collate([encode_pieces(skill_pieces(rng, LOOKUPS, cfg.sized)) for _ in range(cfg.batch_size)], device)
    seqs = []
    for _ in range(cfg.batch_size):
        if (rng.random() >= cfg.curriculum_episodes) if curriculum else (rng.random() < cfg.skill_frac):
            pieces = skill_pieces(rng, LOOKUPS if curriculum else None, cfg.sized)
        else:
            pieces = episode_pieces(env, rng.randrange(PRETRAIN_SEED0, 2 * PRETRAIN_SEED0), cfg, rng)
        seqs.append(encode_pieces(pieces))
    return collate(seqs, device)


class Corpus(torch.utils.data.IterableDataset):
    """The endless stream of batches: batch `step` is drawn from its own Random(seed, step), so a DataLoader's workers
    (worker i writes the steps i, i + n, …, handed out in order) give the same batches as the loop alone."""

    def __init__(self, cfg):
        self.cfg = cfg

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        i, n = (info.id, info.num_workers) if info else (0, 1)
        env = make(self.cfg.env, self.cfg.level)
        for step in itertools.count(i, n):
            yield get_batch(self.cfg, random.Random(self.cfg.seed * 10**9 + step), env, step=step)


# ----------------------------------------------------------------------------------------------------------------
# training


def lr_at(step, total, cfg):
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, total - cfg.warmup))
    return cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def calibration(model, cfg, n=None, seed=0):
    """Success of the student view and of the teacher with `full` / `key` PI on training seeds (docs/base_model.md),
    and how far the teacher copies its PI line's row id and payment (diagnostics.pi_copy: copy_pay 0.5 = ignores
    the payment)."""
    seeds = list(TRAIN_SEEDS[: n or cfg.eval_episodes])
    out = {view or "student": evaluate(model, seeds, pi=view, level=cfg.level, temperature=TEMPERATURE,
                                       seed=seed)["success"] for view in (None, "full", "key")}
    copy = pi_copy(model, seeds, cfg.level)
    return {**out, "copy_id": copy["teacher_id"], "copy_pay": copy["teacher_pay"]}


def main(argv=None):
    cfg = parse_args(PretrainConfig(), argv)
    if cfg.init and not cfg.out:
        raise SystemExit("error: --init needs --out (the default, base/<env>.pt, is the shipped base model)")
    out = cfg.out or BASE_PATH.format(env=cfg.env)
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    # the corpus workers start (fork) before CUDA does
    batches = iter(torch.utils.data.DataLoader(Corpus(cfg), batch_size=None, num_workers=cfg.workers,
                                               prefetch_factor=8 if cfg.workers else None))
    if cfg.init:
        try:
            model, _ = load_checkpoint(cfg.init, device)
        except CheckpointError as e:
            raise SystemExit(f"error: {e}") from None
    else:
        model = GPT(GPTConfig.preset(cfg.model, vocab_size=tk.get_tokenizer().n_vocab, block_size=512)).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0}],
                            lr=cfg.lr, betas=(0.9, 0.95))
    print(f"pretraining the {cfg.env} base model ({model.num_params() / 1e6:.2f}M params) on {device} -> {out}")
    print(json.dumps(asdict(cfg)))
    log_path = os.path.splitext(out)[0] + ".log.jsonl"  # base/toy_shop.pt -> base/toy_shop.log.jsonl
    os.makedirs(os.path.dirname(out), exist_ok=True)
    log = open(log_path, "w")

    # Time-budgeted runs estimate the step count from the first steps (again at 200 and 1,000: workers, warm-up), so the
    # cosine schedule ends on time.
    total = cfg.steps or 10**9
    t_start, tokens, step = time.time(), 0, 0
    bar = tqdm(total=cfg.steps or None, desc="pretrain", unit="step", mininterval=5)
    while step < total and not 0 < cfg.stop_at <= step:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, cfg)
        x, y = (t.to(device) for t in next(batches))
        _, loss = model(x, y)
        update(model, opt, loss)
        step += 1
        tokens += x.numel()
        elapsed = time.time() - t_start
        if not cfg.steps and step in (50, 200, 1000):
            total = max(100, int(cfg.minutes * 60 / (elapsed / step)))
            bar.total = total
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{tokens / elapsed:.0f}", refresh=False)
        if step % cfg.eval_every == 0 or step in (total, cfg.stop_at):
            model.eval()
            calib = calibration(model, cfg)
            calib.update({f"read_{k}": v for k, v in reading(model).items()})
            model.train()
            row = {"step": step, "loss": round(loss.item(), 4), "minutes": round(elapsed / 60, 1),
                   "tok_s": round(tokens / elapsed), **{k: round(v, 3) for k, v in calib.items()}}
            log.write(json.dumps(row) + "\n")
            log.flush()
            tqdm.write(" | ".join(f"{k} {v}" for k, v in row.items()))
            save_checkpoint(out, model, pretrain_config=asdict(cfg), step=step)
    bar.close()
    save_checkpoint(out, model, pretrain_config=asdict(cfg), step=step)
    summary = {"checkpoint": out, "steps": step, "minutes": round((time.time() - t_start) / 60, 1),
               "tokens": tokens}
    print(json.dumps(summary))
    return summary


def make_base(env="toy_shop", recipe=BASE_RECIPE, extra=()):
    """BASE_RECIPE: its first run writes base/<env>.stage1.pt, the second continues from it into base/<env>.pt.
    `extra` options go to both runs (e.g. --device)."""
    out = BASE_PATH.format(env=env)
    stage1 = os.path.splitext(out)[0] + ".stage1.pt"
    main([f"--env={env}", *recipe[0].split(), *extra, f"--out={stage1}"])
    return main([f"--env={env}", *recipe[1].split(), *extra, f"--init={stage1}", f"--out={out}"])


def cli(argv):
    """`python pretrain.py [--env E] [--device D] [--workers N]`: the shipped base by BASE_RECIPE; with any other
    option, one run with those options."""
    cfg, default = parse_args(PretrainConfig(), argv), PretrainConfig()
    if all(getattr(cfg, f.name) == getattr(default, f.name) for f in fields(cfg)
           if f.name not in ("env", "device", "workers")):
        extra = [f"--{k}={getattr(cfg, k)}" for k in ("device", "workers") if getattr(cfg, k) != getattr(default, k)]
        return make_base(cfg.env, extra=extra)
    return main(argv)


if __name__ == "__main__":
    cli(sys.argv[1:])
