"""Measure a model on toy_shop: held-out student success, and the premise statistics per PI form.

    python eval.py --env=toy_shop                      # the cached base model (pretrained first if absent)
    python eval.py --ckpt=out/run/ckpt.pt --pi=all     # + per PI form on training seeds: teacher success, Δ, KL
    python eval.py --pi=all --json=1                   # last line: one JSON object with every number
    python eval.py --curves="out/curve_*"              # held-out success vs step of those runs (markdown);
                                                       # --readme=NAME writes it between <!-- NAME --> markers

What it prints (PAPER.md §6-7):
- the student view (no PI) on held-out seeds, greedy and sampled at the algorithms' temperature, with its protocol
  error rate — every score this project reports is this one;
- with --pi: on training seeds, the teacher view's success per PI form, the PI utility Δ = teacher − student, and the
  initial divergence KL(π^T ‖ π^S) per episode (full-vocabulary, summed over the teacher's sampled agent tokens),
  and whether the teacher copies its PI line's row id and payment (pi_copy, teacher-forced on the expert's write);
- the decisive turn, teacher-forced on the expert's transcript (with --cot=1 its chain of thought): how often the model
  names the expert's row, and writes the whole turn (decisions);
- the model's reading: skill questions after a rendered table (a price or stock by id, the ids of a colour, min/max,
  a sum), the skills the task is built from (pretrain.reading);
- the scripted expert and a random agent on the same held-out seeds: ceiling and floor.
"""

import glob
import json
import os
import random
import re
import sys
from dataclasses import dataclass

import torch
from tqdm import tqdm

from config import parse_args
from env import LEVELS, PI_FORMS, TEST_SEEDS, TRAIN_SEEDS, build_world, expert_act, make, render, solve
from grpo import trimmed
from model import CheckpointError, kl_div, load_checkpoint, pick_device, vocab_logprobs
from rollout import play, student_view
from tokenizer import encode


@dataclass
class EvalConfig:
    env: str = "toy_shop"
    level: str = "L2"
    ckpt: str = ""  # a checkpoint; default: the env's base model
    n: int = 500  # episodes per measurement
    pi: str = ""  # "" | all | a comma-separated list of PI forms
    cot: bool = False  # the decisive-turn probe scores the expert's turns with its chain of thought (--cot=1 models)
    temperature: float = 0.75  # the algorithms' sampling temperature
    batch: int = 128  # episodes sampled in lockstep
    seed: int = 0
    device: str = "auto"
    json: bool = False  # print the results as one JSON object on the last line
    table: bool = False  # gather out/*/summary.json into the results table (and write it into README.md)
    curves: str = ""  # globs of run folders, comma-separated, e.g. "out/curve_*": their learning curves as markdown
    readme: str = ""  # with --curves: also write the table between README.md's <!-- NAME --> <!-- /NAME --> markers


@torch.no_grad()
def evaluate(model, seeds, pi=None, level="L2", temperature=0.0, seed=0, batch=128, kl=False, progress=False):
    """One episode per seed in one view: success rate, protocol-error rate (an unparsable turn, or cut off by the
    context), mean tokens per episode, and with `kl` the mean KL_seq(π^T ‖ π^S) over the (teacher) episodes."""
    wins, errors, tokens, kls, envs = 0.0, 0, 0, [], []
    chunks = range(0, len(seeds), batch)
    for i in tqdm(chunks, desc=f"{pi or 'student'}", leave=False, disable=not progress):
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        p = play(model, seeds[i : i + batch], 1, level=level, pi=pi, temperature=temperature, generator=g)
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


@torch.no_grad()
def kl_teacher_student(model, played, pi, with_teacher=False, teacher=None):
    """KL_seq(π^T ‖ π^S) per episode: Σ over agent tokens of Σ_v p_T(v) (log p_T(v) − log p_S(v)), exact over the
    vocabulary, scored on the teacher's own samples (the quantity in π-Distill's reward, Eq. 2). With
    `with_teacher`, also the teacher's log-softmax at those tokens (N, V), the sg π^T of π-Distill's student term.
    `teacher`: another network for the teacher view (pi_distill.py --frozen_teacher); by default `model` is both."""
    ep, device = played.episodes, model.wte.weight.device
    (ids_t, mask_t, _), (ids_s, mask_s, _) = trimmed(ep, device), trimmed(student_view(played, pi), device)
    lp_t = vocab_logprobs((teacher or model)(ids_t)[0], mask_t)  # (N, V), agent tokens, row-major order
    lp_s = vocab_logprobs(model(ids_s)[0], mask_s)  # (N, V), the same tokens, same order
    per_token = kl_div(lp_t, lp_s).cpu()  # (N,) KL(π^T ‖ π^S) at each agent token
    rows = torch.arange(ep.ids.size(0)).repeat_interleave(ep.mask.sum(1))
    kl_seq = torch.zeros(ep.ids.size(0)).index_add_(0, rows, per_token)
    return (kl_seq, lp_t) if with_teacher else kl_seq


def buy_selection(envs, level):
    """Where the bought id lands in BUY episodes (the reading check and the learnability probe): the share of buys
    naming a row id at all, one of the requested colour, one also in stock, the expert's row, and the right payment."""
    counts = dict(buys=0, in_rows=0, colour=0, stock=0, cheapest=0, payment=0)
    for env in envs:
        if env.world.family != "BUY":
            continue
        world = build_world(env.seed, level)  # the world before any write
        actions = [t.split("<|/think|>")[-1].split() for r, t in env.history if r == "agent"]  # after any CoT
        buys = [a for a in actions if a[:1] == ["buy"]]
        if not buys or solve(world)[-1] == "say none":
            continue
        act, expert = buys[0] + ["", "", ""], solve(world)[2].split()
        row = next((r for r in world.rows if r.id == act[1]), None)
        counts["buys"] += 1
        counts["in_rows"] += row is not None
        counts["colour"] += row is not None and row.color == world.color
        counts["stock"] += row is not None and row.color == world.color and row.stock >= world.qty
        counts["cheapest"] += act[1] == expert[1]
        counts["payment"] += act[3] == expert[3]
    n = max(1, counts.pop("buys"))
    return {k: v / n for k, v in counts.items()}


def _write_variants(world, rng):
    """The expert's `full` PI line for a BUY / EXCHANGE task three ways — as written, with the write's payment
    flipped, with the write's row id swapped for another row's — each with the write it names: [(pi, write)]."""
    plan = solve(world)
    write = plan[-2].split()
    id_at = 1 if write[0] == "buy" else 3
    other = rng.choice([r.id for r in world.rows if r.id != write[id_at]])
    flipped = write[:-1] + ["card" if write[-1] == "gift" else "gift"]
    swapped = write[:id_at] + [other] + write[id_at + 1:]
    return [("full : " + " ; ".join(plan[:-2] + [" ".join(w)] + plan[-1:]), w) for w in (write, flipped, swapped)]


def padded_chunks(texts, device, size=64):
    """-> (i, batch): texts[i : i + size] as one (B, T) tensor, padded at the end with id 0 (a causal model's logits
    at a text's own positions do not see the padding); for the teacher-forced probes below."""
    for i in range(0, len(texts), size):
        chunk = texts[i : i + size]
        T = max(map(len, chunk))
        yield i, torch.tensor([t + [0] * (T - len(t)) for t in chunk], device=device)


@torch.no_grad()
def pi_copy(model, seeds, level="L2"):
    """Does the teacher view read its PI line at the write's two decisive arguments, the row id and the payment?

    Teacher-forced on the expert's transcript up to its write (BUY and EXCHANGE tasks that have one), the `full` PI
    line as the expert wrote it, with its payment flipped (gift <-> card), or with its row id swapped for another row
    of the table, and the write line the PI names. Returns the mean probability of the named token:
      teacher_id / teacher_pay: the teacher view, over the true and the altered PI lines (the id over true and
        swapped, the payment over true and flipped): 1 = copies its PI, whatever it says; a teacher that ignores
        its PI gives the payment ~0.5 (the two lines name opposite payments);
      student_id / student_pay: the student view (no PI line) at the expert's own tokens: what reading alone gives.
    (A diagnostic of this project: the curriculum base's teacher, sessions 5-10, copied the id and not the payment.)"""
    device, rng, env = model.wte.weight.device, random.Random(0), make("toy_shop", level)
    texts, probes = [], []  # probes: (text index, position, token id, which number)
    for seed in seeds:
        world = build_world(seed, level)
        plan = solve(world)
        if world.family == "RETURN" or plan[-1] == "say none":
            continue
        env.reset(seed)
        for action in plan[:-2]:
            env.step(action)
        for k, (pi, write) in enumerate(_write_variants(world, rng)):
            for view_pi, who in ((pi, "teacher"), (None, "student")):
                if who == "student" and k > 0:
                    continue
                id_at = 1 if write[0] == "buy" else 3
                ids = encode(render(env.history, view_pi) + "<|agent|> " + " ".join(write[:id_at]))
                row, pay, middle = encode(" " + write[id_at]), encode(" " + write[-1]), write[id_at + 1:-1]
                if len(row) != 1 or len(pay) != 1:
                    raise ValueError(f"write {write}: a row id or payment that is not one token")
                if k in (0, 2):
                    probes.append((len(texts), len(ids) - 1, row[0], f"{who}_id"))
                ids = ids + row + (encode(" " + " ".join(middle)) if middle else [])  # buy's quantity
                if k in (0, 1):
                    probes.append((len(texts), len(ids) - 1, pay[0], f"{who}_pay"))
                ids = ids + pay
                texts.append(ids)
    sums, counts = {}, {}
    for i, batch in padded_chunks(texts, device):
        probs = model(batch)[0].float().softmax(-1).cpu()
        for j, pos, tok, name in probes:
            if i <= j < i + len(batch):
                sums[name] = sums.get(name, 0.0) + probs[j - i, pos, tok].item()
                counts[name] = counts.get(name, 0) + 1
    return {name: sums[name] / counts[name] for name in sorted(sums)}


@torch.no_grad()
def decisions(model, seeds, cot=False, level="L2"):
    """Is the decision learned, apart from the text around it? Teacher-forced on the expert's transcript up to its
    decisive turn (the write, or the `say none` that stands for it), that turn as the expert writes it — with its
    draft chain of thought when `cot` — and per family the share of tasks where the model's greedy tokens are the
    expert's: `row` at the row the turn first names (the draft's id, else the write's; a pending order's cancel and
    a `none` as their whole first clause), `turn` at every token of the turn. -> {family: {"row", "turn", "n"}}.

    A model trained with CoT is scored with cot=True, one trained without with cot=False: the same decision, each in
    its own text. (A diagnostic of this project, for G4's "CoT learns faster at small data": README.)"""
    device, env, tasks = model.wte.weight.device, make("toy_shop", level), []
    for seed in seeds:
        env.reset(seed)
        while True:
            text = render(env.history)
            drafted = expert_act(text, cot=True)
            if "<|think|>" in drafted:  # the decisive turn
                break
            env.step(drafted)
        words = (drafted if cot else expert_act(text)).split(" ")
        if cot:  # the draft's first clause: `<|think|> buy j5 .`, `<|think|> o2 pending cancel .`, ...
            end = next(k for k, w in enumerate(words) if w in (".", "<|/think|>"))
            row = (end - 1, end) if words[1] in ("buy", "exchange", "return") else (1, end)
        else:
            at = {"buy": 1, "exchange": 3, "return": 2}.get(words[0])
            row = (at, at + 1) if at else (0, len(words))
        prefix = text + "<|agent|>"
        start = [len(encode(prefix + "".join(" " + w for w in words[:k]))) for k in range(len(words) + 1)]
        tasks.append((env.world.family, encode(prefix + " " + " ".join(words)), start, row))
    hits = {}
    for i, batch in padded_chunks([ids for _, ids, _, _ in tasks], device):
        right = (model(batch)[0].argmax(-1)[:, :-1] == batch[:, 1:]).cpu()  # right[b, t]: token t+1 is the argmax
        for b, (family, ids, start, (w0, w1)) in enumerate(tasks[i : i + len(batch)]):
            h = hits.setdefault(family, {"row": 0, "turn": 0, "n": 0})
            h["row"] += right[b, start[w0] - 1 : start[w1] - 1].all().item()
            h["turn"] += right[b, start[0] - 1 : len(ids) - 1].all().item()
            h["n"] += 1
    return {f: {"row": h["row"] / h["n"], "turn": h["turn"] / h["n"], "n": h["n"]} for f, h in sorted(hits.items())}


def scripted_success(seeds, level, agent):
    """Success of a scripted agent: 'expert' (ENV.md §6) or 'random' (the canonical tools, random arguments)."""
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


ROW_ORDER = ["base", "SFT w/ CoT", "SFT w/o CoT", "RL", "SFT w/o CoT + RL", "SFT w/ CoT + RL", "OPSD",
             "π-Distill α=0", "π-Distill α=0.5", "π-Distill α=1", "expert"]


def results_table(base_success, expert, n, runs_dir="out"):
    """Markdown: one row per method (mean ± std over its runs' held-out success, how many seeds, the teacher view's
    success with PI where the method has one, wall-clock per run), in PAPER.md §4's order, then any other methods
    found (ablations)."""
    rows = {"base": [{"heldout_success": base_success}], "expert": [{"heldout_success": expert}]}
    for path in sorted(glob.glob(os.path.join(runs_dir, "*", "summary.json"))):
        with open(path) as f:
            summary = json.load(f)
        rows.setdefault(summary["method"], []).append(summary)

    def cell(values, scale=100, digits=1):
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
        return f"{scale * mean:.{digits}f}" + (f" ± {scale * std:.{digits}f}" if len(values) > 1 else "")

    lines = [f"| method | held-out success % (greedy, {n} tasks) | seeds | teacher with PI % | minutes per run |",
             "|---|---|---|---|---|"]
    for method in ROW_ORDER + sorted(set(rows) - set(ROW_ORDER)):
        runs = rows.get(method)
        if not runs:
            lines.append(f"| {method} | not run yet | 0 | | |")
            continue
        teacher = [r["teacher_pi_success"] for r in runs if "teacher_pi_success" in r]
        minutes = [r["wall_clock_s"] / 60 for r in runs if "wall_clock_s" in r]
        seeds = "-" if method in ("base", "expert") else len(runs)
        lines.append(f"| {method} | {cell([r['heldout_success'] for r in runs])} | {seeds} | "
                     f"{cell(teacher) if teacher else ''} | {cell(minutes, 1, 1) if minutes else ''} |")
    return "\n".join(lines)


def learning_curves(pattern):
    """Markdown: held-out success % against the step at which it was measured, one row per run folder matching the
    glob `pattern` (several globs: comma-separated), from its log.jsonl (SFT and RL steps are numbered apart,
    `sft 400` / `rl 150`), and the final number from summary.json (more tasks)."""
    runs = {}
    for folder in sorted({f for p in pattern.split(",") for f in glob.glob(p)}):
        try:
            with open(os.path.join(folder, "log.jsonl")) as f:
                rows = [json.loads(line) for line in f if line.strip()]
        except OSError:
            continue
        points = {f"{r['phase']} {r['step']}": r["heldout_success"] for r in rows if "heldout_success" in r}
        final = os.path.join(folder, "summary.json")
        if os.path.isfile(final):
            with open(final) as f:
                points["final"] = json.load(f)["heldout_success"]
        runs[os.path.basename(folder)] = points
    if not runs:
        raise SystemExit(f"error: no run folder with a log.jsonl matches {pattern!r}")
    columns = []
    for points in runs.values():
        columns += [c for c in points if c not in columns and c != "final"]
    columns.sort(key=lambda c: (c.split()[0] != "sft", int(c.split()[1])))
    columns.append("final")
    lines = ["| run | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, points in runs.items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * points[c]:.1f}" if c in points else "" for c in columns)
                     + " |")
    return "\n".join(lines)


def write_table_into_readme(table, path="README.md", marker="results table"):
    """Replace what stands between <!-- {marker} --> and <!-- /{marker} --> in the README."""
    with open(path) as f:
        text = f.read()
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    if start not in text or end not in text:
        raise SystemExit(f"error: {path} has no {start} ... {end} block to write into")
    head, rest = text.split(start, 1)
    with open(path, "w") as f:
        f.write(head + start + "\n" + table + "\n" + end + rest.split(end, 1)[1])


def main(argv=None):
    from pretrain import ensure_base, reading  # pretrain.py imports this file, so import it only here

    cfg = parse_args(EvalConfig(), argv)
    if cfg.readme and not cfg.curves:
        sys.exit("error: --readme names where to write --curves' table; give --curves too")
    if cfg.curves:
        curves = learning_curves(cfg.curves)
        if cfg.readme:
            write_table_into_readme(curves, marker=cfg.readme)
        print(curves)
        return curves
    if cfg.level not in LEVELS:
        sys.exit(f"error: unknown level {cfg.level!r}; valid: {', '.join(LEVELS)}")
    forms = PI_FORMS if cfg.pi == "all" else [f for f in cfg.pi.split(",") if f]
    bad = [f for f in forms if f not in PI_FORMS]
    if bad:
        sys.exit(f"error: unknown PI form {bad[0]!r}; valid: all, {', '.join(PI_FORMS)}")
    try:
        make(cfg.env)
        if not cfg.ckpt:
            cfg.ckpt = ensure_base(cfg.env)
        model, _ = load_checkpoint(cfg.ckpt, pick_device(cfg.device))
    except (ValueError, CheckpointError) as e:
        sys.exit(f"error: {e}")
    model.eval()
    test, train = list(TEST_SEEDS[: cfg.n]), list(TRAIN_SEEDS[: cfg.n])
    if cfg.table:  # the base row is measured now; every other row comes from a run's summary.json
        base = evaluate(model, test, level=cfg.level, batch=cfg.batch)["success"]
        table = results_table(base, scripted_success(test, cfg.level, "expert"), cfg.n)
        write_table_into_readme(table)
        print(table)
        return table
    run = dict(level=cfg.level, seed=cfg.seed, batch=cfg.batch, progress=True)
    res = {"ckpt": cfg.ckpt, "n": cfg.n, "temperature": cfg.temperature}
    print(f"{cfg.ckpt}: {cfg.env} {cfg.level}, {cfg.n} episodes per number")
    for name, temp in (("greedy", 0.0), ("sampled", cfg.temperature)):
        r = evaluate(model, test, temperature=temp, **run)
        res[f"student_{name}"], res[f"protocol_errors_{name}"] = r["success"], r["protocol_errors"]
        res[f"mean_len_{name}"] = r["mean_len"]
        res[f"buy_{name}"] = r["buy"]
        print(f"student (held-out, {name:7s}) success {r['success']:.3f} | protocol errors {r['protocol_errors']:.3f}"
              f" | {r['mean_len']:.0f} tokens/episode")
        print("  BUY selection: " + " | ".join(f"{k} {v:.3f}" for k, v in r["buy"].items()))
    res["decisions"] = {f: {k: round(v, 3) for k, v in d.items()}
                        for f, d in decisions(model, test, cot=cfg.cot, level=cfg.level).items()}
    print(f"decisive turn (teacher-forced on the expert's, {'with' if cfg.cot else 'without'} CoT; the row it names "
          "/ the whole turn): " + " | ".join(f"{f} {d['row']:.3f} / {d['turn']:.3f}"
                                               for f, d in res["decisions"].items()))
    if forms:
        base = evaluate(model, train, temperature=cfg.temperature, **run)["success"]
        res["student_train"] = base
        print(f"on training seeds, T={cfg.temperature}: student {base:.3f}")
        for form in forms:
            r = evaluate(model, train, pi=form, temperature=cfg.temperature, kl=True, **run)
            res[f"teacher_{form}"], res[f"delta_{form}"], res[f"kl_{form}"] = r["success"], r["success"] - base, r["kl"]
            print(f"teacher {form:6s} success {r['success']:.3f} | Δ {r['success'] - base:+.3f} | "
                  f"KL(T‖S) {r['kl']:.2f} nats/episode | protocol errors {r['protocol_errors']:.3f}")
        copy = pi_copy(model, train, cfg.level)
        res["pi_copy"] = {k: round(v, 3) for k, v in copy.items()}
        print(f"PI copy (teacher-forced, expert transcripts, `full` PI true or altered): the teacher names its PI's "
              f"row id {copy['teacher_id']:.3f}, payment {copy['teacher_pay']:.3f} (0.5: ignores it) | the student, "
              f"the expert's id {copy['student_id']:.3f}, payment {copy['student_pay']:.3f}")
    res["reading"] = {k: round(v, 3) for k, v in reading(model).items()}
    print("reading (skill questions after a rendered table, greedy exact match, 200 each): "
          + " | ".join(f"{k} {v:.3f}" for k, v in res["reading"].items()))
    res["expert"] = scripted_success(test, cfg.level, "expert")
    res["random"] = scripted_success(test, cfg.level, "random")
    print(f"expert {res['expert']:.3f} | random agent {res['random']:.3f}")
    if cfg.json:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}))
    return res


if __name__ == "__main__":
    main()
