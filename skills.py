"""Skill documents: a rendered table and questions about it (a price or a stock by id, the ids of a colour, min/max,
a sum). The pretraining corpus is partly made of them (an LLM's general reading and arithmetic), its curriculum
starts with the lookups alone, and diagnostics.reading asks them of a model."""

from env import PRETRAIN_SEED0
from worlds import COLORS, build_world


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
