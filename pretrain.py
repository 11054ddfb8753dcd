"""The base model: a from-scratch GPT pretrained like an LLM, by next-token prediction (ENV.md §7).

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
at once (README: the base model). With no episodes in it, though, the copy of the PI line's payment never formed
afterwards; the shipped base (BASE_RECIPE) keeps 30% weak-agent episodes, with their PI lines, inside the
curriculum (`curriculum_episodes`), and both skills formed together.

The loss is on agent tokens (and on skill answers, and on the amounts in a write's `ok …` reply, which are
predictable from the rows): the random parts of tool replies (fresh ids, prices) would only add noise (ENV.md §11).
Knobs (the defaults were set by measuring the calibration table in the README): rho and pi_frac set how strongly the
teacher follows its PI; skill_steps and skill_frac how well the base reads; the weak-agent mix sets the student's
own success.
"""

import itertools
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

import tokenizer as tk
from config import parse_args
from eval import evaluate, pi_copy
from grpo import update
from env import COLORS, PRETRAIN_SEED0, SYS_LINE, TRAIN_SEEDS, build_world, make, pi_line, pi_text
from model import GPT, IGNORE_INDEX, CheckpointError, GPTConfig, load_checkpoint, pick_device, save_checkpoint

BASE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "base", "{env}.pt")

# The shipped base as it was made (session 9; README, "the base model"): two runs back to back. The first, with
# weak-agent episodes inside the lookup curriculum, is cut at step 1,500 of a 10,000-step schedule; the second starts
# again from its weights with a fresh optimizer, warm-up and corpus draws, along a 7,500-step cosine whose first
# 3,000 steps finish the curriculum (~2 hours on a 2-core CPU in all). Only so did both skills form in one model: the
# colour lookup (99.5%) and the copy of the PI line's payment (0.91). Whether the restart matters was not measured.
BASE_RECIPE = ("--curriculum_episodes=0.3 --eval_every=500 --stop_at=1500",
               "--curriculum_episodes=0.3 --steps=7500 --skill_steps=3000 --warmup=50 --eval_every=500 --seed=1")


@dataclass
class PretrainConfig:
    env: str = "toy_shop"
    level: str = "L2"
    model: str = "tiny"  # tiny | small
    steps: int = 10000  # optimizer steps (the curriculum base: 10,000, 60 min on a 2-core CPU); 0: `minutes`
    minutes: float = 50.0  # with --steps=0, the wall-clock budget; the step count is estimated from the first steps
    batch_size: int = 64  # sequences per step (episodes or skill documents)
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup: int = 200
    rho: float = 0.8  # P(the hindsight PI line comes from the episode's own actions)
    pi_frac: float = 0.5  # share of episodes with a PI line
    skill_frac: float = 0.3  # share of skill documents in the corpus
    sized: float = 0.0  # share of colour questions (on tables with sizes) that also name a size; shipped base: 0
    skill_steps: int = 5000  # curriculum: the first skill_steps batches are lookup skill documents alone
    curriculum_episodes: float = 0.0  # share of weak-agent episodes mixed into the curriculum (BASE_RECIPE: 0.3)
    stop_at: int = 0  # end at this step, on the schedule of `steps` (0: at `steps`); BASE_RECIPE's first run
    eval_every: int = 1000  # steps between calibration checks (student / teacher success on training seeds)
    eval_episodes: int = 128
    temperature: float = 0.75  # the algorithms' sampling temperature
    out: str = ""  # checkpoint path; default base/<env>.pt
    init: str = ""  # continue from this checkpoint (its size; --model is ignored) instead of from scratch; needs --out
    workers: int = 0  # processes writing the corpus beside the training loop (0: in the loop; same batches)
    device: str = "auto"
    seed: int = 0


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


def transcript_pieces(history, pi=None, reply_loss=False):
    """A finished episode as [(text, has_loss)]: the loss is on the agent's turns (chain of thought included) and,
    with `reply_loss`, on the amounts of a write's `ok …` reply. sft_rl_baseline.py uses it for expert episodes."""
    pieces = [(SYS_LINE, False)] + ([(pi_line(pi), False)] if pi else [])
    for i, (role, text) in enumerate(history):
        end = "<|eos|>" if i == len(history) - 1 else "\n"
        if role == "agent":
            pieces += [("<|agent|>", False), (f" {text}{end}", True)]
        elif role == "tool" and reply_loss and text.startswith("ok "):  # the amounts follow from the rows
            pieces += [("<|tool|> ok", False), (f" {text[3:]}{end}", True)]
        else:
            pieces.append((f"<|{role}|> {text}{end}", False))
    return pieces


SKILLS = ["price", "stock", "colour", "minmax", "calc", "sized"]  # the skill questions (sized: colour and size)


def skill_table(rng):
    """A skill document's table: a fresh L2 world's search reply, or its order -> (rows, text, has stock column)."""
    w = build_world(rng.randrange(PRETRAIN_SEED0, 2 * PRETRAIN_SEED0), "L2")
    rows = w.rows or w.orders[w.order_id].items
    text = "<|tool|> " + (" | ".join(r.render() for r in rows) if w.rows else w.orders[w.order_id].render())
    return rows, text, bool(w.rows)


def skill_question(rng, rows, has_stock=True, kind=None, sized=0.0):
    """One question about `rows` and its answer: (question, answer). `kind` (one of SKILLS) or, when None, drawn at
    the corpus's rates (price 30%, stock 15%, ids of a colour 15%, min/max 20%, a sum or difference 20%); on a
    table without stock (order items), stock and colour questions fall through to min/max. Asked for by `kind`, a
    colour question names a colour present in the table (the corpus's random colour is often absent: `none`).
    With `sized` > 0, that share of the colour questions over a table with sizes also names a size — the ids of a
    colour in one size, EXCHANGE's lookup (`green mid`); kind `sized` always does. The shipped base has sized = 0."""
    r = rng.choice(rows)
    prices = [x.price for x in rng.sample(rows, min(len(rows), rng.randint(2, 4)))]
    u = rng.random() if kind is None else {"price": 0.0, "stock": 0.3, "colour": 0.45, "sized": 0.45, "minmax": 0.6,
                                           "calc": 0.8}[kind]
    if u < 0.3:
        return f"price {r.id}", str(r.price)
    if u < 0.45 and has_stock:
        return f"stock {r.id}", str(r.stock)
    if u < 0.6 and has_stock:
        c = rng.choice(COLORS) if kind is None else r.color
        z = r.size if r.size and (kind == "sized" or (sized > 0 and rng.random() < sized)) else ""  # no draw at 0
        ids = [x.id for x in rows if x.color == c and (not z or x.size == z)]
        return f"{c} {z}".rstrip(), " ".join(ids) or "none"
    if u < 0.8:
        f = rng.choice(["min", "max"])
        return f"{f} " + " ".join(map(str, prices)), str(min(prices) if f == "min" else max(prices))
    n = rng.randint(2, 3) if rng.random() < 0.5 else 1
    if n > 1:
        return f"calc {' + '.join([str(r.price)] * n)}", str(r.price * n)
    return f"calc {prices[0]} - {prices[1]}", str(prices[0] - prices[1])


def skill_doc(table, questions):
    """A skill document as [(text, has_loss)]: the table, then each (question, answer); the answers carry the loss."""
    pieces = [("<|sys|> skill\n", False), (table + "\n", False)]
    for q, a in questions:
        pieces += [(f"<|user|> {q}\n<|agent|>", False), (f" {a}\n", True)]
    return pieces


LOOKUPS = ["price", "stock", "colour", "colour"]  # the curriculum's first phase: a row by its id or (half) its colour


def skill_pieces(rng, kinds=None, sized=0.0):
    """A corpus skill document: a fresh table and four questions drawn at the corpus's rates, or, with `kinds`,
    of those kinds alone (drawn from the list; over a catalogue, since stock and colour questions need one).
    `sized`: the share of colour questions that also name a size (skill_question)."""
    rows, table, has_stock = skill_table(rng)
    while kinds and not has_stock:
        rows, table, has_stock = skill_table(rng)
    return skill_doc(table, [skill_question(rng, rows, has_stock, kinds and rng.choice(kinds), sized)
                             for _ in range(4)])


@torch.no_grad()
def reading(model, n=200, seed=0):
    """The base model's reading, measured: per skill kind, the share of n one-question documents whose answer it
    gets exactly right greedily. Scored in one teacher-forced pass (greedy decoding writes the answer iff every
    answer token, its newline included, is the argmax given the right prefix), so it costs a forward per kind."""
    device, rng, out = next(model.parameters()).device, random.Random(seed), {}
    for kind in SKILLS:
        docs = []
        while len(docs) < n:
            rows, table, has_stock = skill_table(rng)
            needs = {"stock": has_stock, "colour": has_stock, "sized": has_stock and bool(rows[0].size)}
            if needs.get(kind, True):  # stock and colour questions need a catalogue, sized ones one with sizes
                docs.append(encode_pieces(skill_doc(table, [skill_question(rng, rows, has_stock, kind)])))
        x, y = collate(docs, device)
        logits, _ = model(x)
        scored = y != IGNORE_INDEX
        out[kind] = ((logits.argmax(-1) == y) | ~scored).all(1).float().mean().item()
    return out


def encode_pieces(pieces):
    """-> (ids, loss flags): each piece encodes on its own, which equals encoding the whole text (pieces end at a
    newline or a special token, where the tokenizer's split pattern cuts anyway)."""
    ids, flags = [], []
    for text, has_loss in pieces:
        t = tk.encode(text)
        ids += t
        flags += [has_loss] * len(t)
    return ids, flags


def get_batch(cfg, rng, env, device="cpu", step=None):
    """x, y (B, T) for next-token prediction; y = -1 where a token carries no loss, and on padding. Batches before
    step `cfg.skill_steps` are lookup documents alone (the curriculum), or with `curriculum_episodes` > 0 that share
    of weak-agent episodes among them (their PI lines from the first step: where the first base learned to copy)."""
    curriculum = step is not None and step < cfg.skill_steps
    if curriculum and cfg.curriculum_episodes == 0:  # the curriculum base's curriculum, batch for batch
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


def collate(seqs, device):
    """[(ids, loss flags)] -> x, y (B, T): y[t] = ids[t+1] where that token has loss, else -1; padded."""
    T = max(len(ids) for ids, _ in seqs) - 1
    x = torch.full((len(seqs), T), tk.special("<|pad|>"), dtype=torch.long)
    y = torch.full((len(seqs), T), IGNORE_INDEX, dtype=torch.long)
    for b, (ids, flags) in enumerate(seqs):
        n = len(ids) - 1
        x[b, :n] = torch.tensor(ids[:-1])
        y[b, :n] = torch.tensor([t if f else IGNORE_INDEX for t, f in zip(ids[1:], flags[1:])])
    return x.to(device), y.to(device)


# ----------------------------------------------------------------------------------------------------------------
# training


def lr_at(step, total, cfg):
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, total - cfg.warmup))
    return cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def calibration(model, cfg, n=None, seed=0):
    """Success of the student view and of the teacher with `full` / `key` PI on training seeds (ENV.md §7), and how
    far the teacher copies its PI line's row id and payment (eval.pi_copy: copy_pay 0.5 = ignores the payment)."""
    seeds = list(TRAIN_SEEDS[: n or cfg.eval_episodes])
    out = {view or "student": evaluate(model, seeds, pi=view, level=cfg.level, temperature=cfg.temperature,
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


def ensure_base(env="toy_shop"):
    """The path of the env's base model, pretraining it first (with a message) when it does not exist yet."""
    path = BASE_PATH.format(env=env)
    if not os.path.isfile(path):
        print(f"no base model at {path}: pretraining it now (python pretrain.py --env={env}: BASE_RECIPE, two runs, "
              "~2 hours on 2 cores)")
        make_base(env)
    return path


def cli(args):
    """`python pretrain.py [--env= --device= --workers=]`: the shipped base by BASE_RECIPE; with any other option,
    one run with those options."""
    if all(a.split("=")[0] in ("--env", "--device", "--workers") for a in args):
        env = next((a.split("=", 1)[1] for a in args if a.startswith("--env=")), "toy_shop")
        return make_base(env, extra=[a for a in args if not a.startswith("--env=")])
    return main(args)


if __name__ == "__main__":
    cli(sys.argv[1:])
