"""toy_shop's worlds: each seed builds one from its own random.Random — a catalogue of rows with per-episode ids,
users with gift balances, an order — at one of the levels L1-L3 or on the OOD split (docs/env.md). Pure data, no
tools and no rendering: env.py acts on a World, the expert plans from it.
"""

import random
from dataclasses import dataclass, field

COLORS = ["red", "blue", "green", "black", "white"]
BUY_CATEGORIES = ["mug", "lamp", "book", "bag", "hat"]
SIZED_CATEGORIES = ["shirt", "shoe"]
SIZES = ["small", "mid", "large"]
ID_LETTERS = "bdfghjkmnpqz"  # ids are letter+digit, one token each; u, o, s, x, t, v, c, w stay free for words
ITEM_IDS = [f"{a}{d}" for a in ID_LETTERS for d in range(1, 10)]
LEVELS = {  # rows per search, max qty, families, stock filter, unique answer (no arg-min), budget, share of `none`,
    # items per order and share of pending orders (RETURN)
    "L1": dict(rows=4, max_qty=1, families=["BUY"], stock=False, unique=True, budget=False, none=0.0, items=4,
               pending=0.5),
    "L2": dict(rows=5, max_qty=1, families=["BUY", "RETURN", "EXCHANGE"], stock=True, unique=True, budget=False,
               none=0.03, items=4, pending=0.5),
    "L3": dict(rows=7, max_qty=3, families=["BUY", "RETURN", "EXCHANGE"], stock=True, unique=False, budget=True,
               none=0.10, items=5, pending=0.3),
    # out of distribution (docs/env.md, "The OOD split"): L2's rules, tables and request forms on category-family
    # pairs L2 never draws — a BUY of a sized item (shirt, shoe), an EXCHANGE of an unsized one (mug, lamp, ...);
    # no RETURN (its requests would repeat L2's)
    "OOD": dict(rows=5, max_qty=1, families=["BUY", "EXCHANGE"], stock=True, unique=True, budget=False, none=0.03,
                items=4, pending=0.5, swapped=True),
}


@dataclass
class Row:
    id: str
    color: str
    price: int
    stock: int
    size: str = ""  # only for sized categories

    def render(self):
        return " ".join(x for x in (self.id, self.color, self.size, str(self.price), f"st{self.stock}") if x)


@dataclass
class Order:
    id: str
    status: str  # delivered | pending | cancelled
    pay: str  # gift | card
    items: list  # Rows (stock unused)
    category: str = ""

    def render(self):
        items = " | ".join(f"{r.id} {self.category} {r.color} {r.size} {r.price}".replace("  ", " ")
                           if self.category else f"{r.id} {r.color} {r.price}" for r in self.items)
        return f"{self.id} {self.status} paid {self.pay} : {items}"


@dataclass
class World:
    family: str
    user: str
    gift: int
    category: str
    rows: list  # the catalogue `search` returns
    orders: dict = field(default_factory=dict)
    qty: int = 1
    color: str = ""
    mode: str = ""  # RETURN: priciest | cheapest
    order_id: str = ""  # RETURN / EXCHANGE: the order named in the request
    budget: int = 0  # L3 BUY only

    def request(self):
        if self.family == "BUY":
            return f"i am {self.user} . buy {self.qty} {self.color} {self.category}" + (
                f" , max {self.budget}" if self.budget else "")
        if self.family == "RETURN":
            return f"i am {self.user} . return the {self.mode} item of {self.order_id}"
        return f"i am {self.user} . swap my {self.category} in {self.order_id} for a {self.color} one"


# ----------------------------------------------------------------------------------------------------------------
# worlds, built by construction so that shallow heuristics stay weak (docs/env.md: the answer's row position is
# uniform, the cheapest row of the colour is often out of stock or the wrong size, the cheapest overall the wrong
# colour). Every draw comes from the seed's own random.Random.


def _pay_threshold(rng, amount):
    """A gift balance that covers `amount` half the time, 3-40 away from it, independent of anything else."""
    return amount + rng.randint(3, 40) if rng.random() < 0.5 else max(0, amount - rng.randint(3, 40))


def _catalogue(rng, n, color, need, size="", none=False, stock=True, unique=False):
    """n rows; the target is the cheapest with `color` (and `size`) and stock >= need, at a uniform position.

    Traps: cheaper rows of the colour that fail stock (or size), and cheaper rows of other colours. With `unique`
    every other row of the colour fails a filter, so the answer is a lookup, not an arg-min. With `none`, no row
    passes the filter. Returns (rows, target row or None)."""
    prices = sorted(rng.sample(range(10, 100), n))
    t = rng.randrange(1, n - 1)  # the target's rank by price: room for cheaper traps and pricier alternatives
    others = [c for c in COLORS if c != color]

    def fail(r):  # a row of the colour that does not pass the filter
        if not (stock or size):
            r.color = rng.choice(others)
        elif size and (not stock or rng.random() < 0.5):
            r.size, r.stock = rng.choice([s for s in SIZES if s != size]), rng.randint(need, 5)
        else:
            r.size, r.stock = size, rng.randint(0, need - 1)

    rows = []
    for i, (rid, p) in enumerate(zip(rng.sample(ITEM_IDS, n), prices)):
        r = Row(rid, rng.choice(others), p, rng.randint(0, 5) if stock else 5, rng.choice(SIZES) if size else "")
        if i == t:
            r.color, r.stock, r.size = color, rng.randint(need, 5) if stock else 5, size
        elif (i < t and rng.random() < 0.6) or (i > t and rng.random() < 0.5):
            r.color = color  # cheaper rows of the colour fail a filter; pricier ones may pass unless `unique`
            if i < t or unique:
                fail(r)
        rows.append(r)
    target = rows[t]
    if none:
        target = None
        for r in rows:
            if r.color == color and r.size == size:
                r.stock = min(r.stock, need - 1)
    rng.shuffle(rows)
    return rows, target


def build_world(seed, level="L2"):
    rng = random.Random(seed)
    lv = LEVELS[level]
    family = rng.choice(lv["families"])
    user = f"u{rng.randint(1, 9)}"
    swapped = lv.get("swapped", False)  # OOD: each family takes the other family's categories
    if family == "BUY":
        qty, color = rng.randint(1, lv["max_qty"]), rng.choice(COLORS)
        cat = rng.choice(SIZED_CATEGORIES if swapped else BUY_CATEGORIES)
        none = rng.random() < lv["none"]
        rows, target = _catalogue(rng, lv["rows"], color, qty, none=none, stock=lv["stock"], unique=lv["unique"])
        if swapped:  # a sized item's rows show a size; the request names none, so any fits
            for r in rows:
                r.size = rng.choice(SIZES)
        total = target.price * qty if target else rng.randint(20, 150)
        w = World(family, user, _pay_threshold(rng, total), cat, rows, qty=qty, color=color)
        if lv["budget"] and target:  # over budget makes it a `none` world too, at the level's share
            w.budget = total + rng.randint(0, 40) if rng.random() >= lv["none"] else rng.randint(max(1, total - 20), total - 1)
        elif lv["budget"]:
            w.budget = rng.randint(40, 200)
        return w
    oid = f"o{rng.randint(1, 9)}"
    if family == "RETURN":  # L1/L2 name the item by its colour; L3 by price (an arg-max or arg-min)
        n = lv["items"]
        items = [Row(i, c, p, 0) for i, c, p in zip(rng.sample(ITEM_IDS, n), rng.sample(COLORS, n),
                                                    rng.sample(range(10, 100), n))]
        status = "pending" if rng.random() < lv["pending"] else "delivered"
        order = Order(oid, status, rng.choice(["gift", "card"]), items)
        mode = rng.choice(items).color if lv["unique"] else rng.choice(["priciest", "cheapest"])
        return World(family, user, rng.randint(0, 150), "", [], {oid: order}, mode=mode, order_id=oid)
    cat, size = rng.choice(BUY_CATEGORIES if swapped else SIZED_CATEGORIES), "" if swapped else rng.choice(SIZES)
    old_color, color = rng.sample(COLORS, 2)
    rows, target = _catalogue(rng, lv["rows"], color, 1, size=size, unique=lv["unique"])
    old_ids = [i for i in ITEM_IDS if i not in {r.id for r in rows}]
    old = Row(rng.choice(old_ids), old_color, rng.choice([p for p in range(10, 100) if p not in {r.price for r in rows}]), 0, size)
    order = Order(oid, "delivered", rng.choice(["gift", "card"]), [old], cat)
    diff = target.price - old.price  # settled with the order's own payment; a gift order's balance covers it
    gift = max(0, diff) + rng.randint(0, 60) if order.pay == "gift" else rng.randint(0, 150)
    return World(family, user, gift, cat, rows, {oid: order}, color=color, order_id=oid)
