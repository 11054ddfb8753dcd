"""Diagnostics: what a model does at the places the task turns on, apart from whether it succeeds.

- buy_selection: where the bought row lands in BUY episodes (a row at all, the colour, in stock, the expert's row,
  the payment);
- pi_copy: whether the teacher view copies its PI line's row id and payment (teacher-forced, true or altered PI);
- decisions: the decisive turn teacher-forced on the expert's transcript, per family (with or without its CoT);
- reading: the skill questions of the pretraining corpus, after a rendered table.

eval.py prints all of them; pretrain.py logs pi_copy and reading at every check.
"""

import random

import torch

from env import expert_act, make, render, solve
from model import IGNORE_INDEX
from skills import SKILLS, skill_doc, skill_question, skill_table
from tokenizer import encode
from transcripts import collate, encode_pieces
from worlds import build_world


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
    (docs/base_model.md: an earlier base's teacher copied the id and not the payment.)"""
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
    its own text. (docs/experiments.md, "Chain-of-thought styles".)"""
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
