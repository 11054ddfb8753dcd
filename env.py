"""toy_shop: a τ-bench-like retail task, its scripted expert with chain of thought, and the five PI forms.

    env = make("toy_shop", level="L2")
    obs, info = env.reset(seed)           # obs: the user's request
    obs, reward, done, info = env.step("profile u3")

Each seed builds a small world (worlds.py): a catalogue of rows with per-episode ids (one token each, see
tokenizer.py), a user with a gift balance, an order. Three task families (docs/env.md):

    BUY       i am u3 . buy 1 red mug          the row of the colour in stock -> gift covers the price, else card
    RETURN    i am u5 . return the red item of o2          pending -> cancel the order, delivered -> return that item
    EXCHANGE  i am u8 . swap my shirt in o1 for a white one    the colour, same size, in stock -> settle the difference

The reward is 1 iff the final world state equals the one the expert's writes produce and the final `say`
carries the required output. Tool errors and unparsable turns come back as observations, never exceptions.

The expert has two faces that must agree on every seed: `solve(world)` plans from the hidden state, and
`expert_act(transcript)` reads only the rendered transcript (which proves the task is observable). Its chain of
thought, written only before the decisive write, drafts that write and checks its row, the arithmetic and the
thresholds (style "draft"), or spells out each candidate first (style "list").

L2 is a lookup, by measurement (docs/experiments.md, "The L2 lookup"): SFT without CoT did not learn an arg-min
task, so at L2 exactly one row passes the filter, qty is 1, RETURN names the item by colour and an exchange is
settled with the order's own payment. L3 keeps the arg-min, qty up to 3 and a budget with `none` answers (no `ask`
slot or fee rule). L2 has no budget: one drawn near the total leaks the payment (docs/env.md).
"""

import re

from worlds import LEVELS, build_world

PI_FORMS = ["full", "tools", "key", "answer", "hint"]
COT_STYLES = ["draft", "list"]  # expert_act's chains of thought; draft is SFT w/ CoT's default
ENVS = ["toy_shop"]
# seed ranges never overlap: training tasks, held-out tasks, and the base model's pretraining corpus
TRAIN_SEEDS, TEST_SEEDS, PRETRAIN_SEED0 = range(0, 100_000), range(100_000, 200_000), 1_000_000


# ----------------------------------------------------------------------------------------------------------------
# the expert: the canonical shortest plan from the hidden state, and the same plan read off the transcript


def solve(world):
    """The expert's plan from the hidden world: a list of actions (the last one is `say`)."""
    w = world
    if w.family == "BUY":
        ok = [r for r in w.rows if r.color == w.color and r.stock >= w.qty]
        best = min(ok, key=lambda r: r.price) if ok else None
        total = best.price * w.qty if best else 0
        if best is None or (w.budget and total > w.budget):
            return [f"profile {w.user}", f"search {w.category}", "say none"]
        pay = "gift" if w.gift >= total else "card"
        return [f"profile {w.user}", f"search {w.category}", f"buy {best.id} {w.qty} {pay}", f"say total {total}"]
    order = w.orders[w.order_id]
    if w.family == "RETURN":
        if order.status == "pending":
            total = sum(r.price for r in order.items)
            return [f"profile {w.user}", f"order {order.id}", f"cancel {order.id}", f"say refund {total}"]
        if w.mode in ("priciest", "cheapest"):
            pick = (max if w.mode == "priciest" else min)(order.items, key=lambda r: r.price)
        else:
            pick = next(r for r in order.items if r.color == w.mode)
        return [f"profile {w.user}", f"order {order.id}", f"return {order.id} {pick.id}", f"say refund {pick.price}"]
    old = order.items[0]
    ok = [r for r in w.rows if r.color == w.color and r.size == old.size and r.stock >= 1]
    best = min(ok, key=lambda r: r.price)
    diff = best.price - old.price
    pay = order.pay  # an exchange is settled with the order's own payment, either way
    out = f"pay {diff}" if diff > 0 else f"refund {-diff}"
    return [f"profile {w.user}", f"order {order.id}", f"search {w.category}", f"exchange {order.id} {old.id} {best.id} {pay}",
            f"say {out}"]


ROW_RE = re.compile(r"([a-z]\d) ([a-z]+) (?:(small|mid|large) )?(\d+) st(\d+)")


def _lines(transcript, tag):
    return [m.group(1).strip() for m in re.finditer(rf"<\|{tag}\|>([^\n<]*)", transcript)]


def expert_act(transcript, cot=False, style="draft"):
    """The expert's next agent message, read from the rendered student transcript alone (no hidden state).

    With `cot`, the decisive write is preceded by `<|think|> … <|/think|>`, in one of two styles:
      draft  the write drafted first, then its row as the tool line writes it, the arithmetic in digits and the
             payment test: `buy j5 . j5 red 58 st2 ok . total 58 . gift 37 < 58 card` (the default)
      list   every candidate ok/no, the best row, the arithmetic and the payment test:
             `red qty 1 : k2 70 st0 no . j5 58 st2 ok . best j5 58 . total 58 . gift 37 < 58 card`
    The draft is the default by measurement (docs/experiments.md, "Chain-of-thought styles"): SFT on the list style
    learns the row worse than SFT without CoT (it copies each candidate's fields and picks from its own copy); the
    draft style picks the row where SFT without CoT does, then checks it."""
    if style not in COT_STYLES:
        raise ValueError(f"unknown CoT style {style!r}; valid: {', '.join(COT_STYLES)}")
    draft = style == "draft"
    request = _lines(transcript, "user")[0]
    tools = _lines(transcript, "tool")
    agent = [a.split("<|/think|>")[-1].strip() for a in re.findall(r"<\|agent\|>([^\n]*)", transcript)]
    n = len(agent)
    user = request.split()[2]
    if n == 0:
        return f"profile {user}"
    gift = int(tools[0].split()[-1])
    think = ""
    m = re.match(r"i am \w+ \. buy (\d) (\w+) (\w+)(?: , max (\d+))?", request)
    if m:
        qty, color, cat, budget = int(m.group(1)), m.group(2), m.group(3), m.group(4)
        if n == 1:
            return f"search {cat}"
        if n == 3:
            return f"say {tools[2].split(' ', 1)[1]}" if tools[2].startswith("ok ") else "say none"
        rows = [(i, c, int(p), int(s)) for i, c, _, p, s in ROW_RE.findall(tools[1])]
        notes = [f"{i} {p} st{s} {'ok' if s >= qty else 'no'}" for i, c, p, s in rows if c == color]
        ok = [(p, i, s) for i, c, p, s in rows if c == color and s >= qty]
        think = f"{color} qty {qty} : " + " . ".join(notes)
        if not ok:
            return _with_think(f"say none . {color} none" if draft else think + " . none", "say none", cot)
        p, i, s = min(ok)
        total = p * qty
        think = f"buy {i} . {i} {color} {p} st{s} ok . " if draft else think + f" . best {i} {p} . "
        think += f"{' + '.join([str(p)] * qty)} = {total}" if qty > 1 else f"total {total}"
        if budget and total > int(budget):
            return _with_think(think + f" . {total} > {budget} none", "say none", cot)
        if budget:
            think += f" . {total} <= {budget} ok"
        pay = "gift" if gift >= total else "card"
        think += f" . gift {gift} {'>=' if pay == 'gift' else '<'} {total} {pay}"
        return _with_think(think, f"buy {i} {qty} {pay}", cot)
    oid = re.search(r"\b(o\d)\b", request).group(1)
    if n == 1:
        return f"order {oid}"
    _, status, _, paid, _, items = tools[1].split(" ", 5)
    words = request.split()  # i am u5 . return the priciest item of o2 | i am u8 . swap my shirt in o1 for a white one
    if words[4] == "return":
        if n == 3:
            return f"say {tools[2].split(' ')[1]} {tools[2].split(' ')[2]}"
        if status == "pending":
            return _with_think(f"{oid} pending cancel", f"cancel {oid}", cot)
        listed = re.findall(r"([a-z]\d) ([a-z]+) (\d+)", items)  # (id, colour, price)
        mode = words[6]
        if mode in ("priciest", "cheapest"):
            prices = [(int(p), i) for i, c, p in listed]
            p, i = max(prices) if mode == "priciest" else min(prices)
            think = f"{oid} delivered . {mode} : " + " ".join(f"{i} {p}" for p, i in prices) + f" . best {i} {p}"
        else:
            i, p = next((i, p) for i, c, p in listed if c == mode)
            think = f"{oid} delivered . {mode} : " + " . ".join(f"{i} {c} {'ok' if c == mode else 'no'}"
                                                               for i, c, p in listed)
        if draft:
            think = f"return {oid} {i} . {i} {next(c for j, c, _ in listed if j == i)} {p} ok"
        return _with_think(think, f"return {oid} {i}", cot)
    cat = words[6]
    if n == 2:
        return f"search {cat}"
    if n == 4:
        return f"say {tools[3].split(' ')[1]} {tools[3].split(' ')[2]}"
    fields = items.split()  # `id category colour [size] price`: an unsized item (OOD) has no size
    old_id, old_price, size = fields[0], fields[-1], fields[3] if len(fields) == 5 else ""
    color = words[11]
    rows = [(i, c, z, int(p), int(s)) for i, c, z, p, s in ROW_RE.findall(tools[2])]
    notes = [f"{i} {z} {p} st{s} {'ok' if z == size and s >= 1 else 'no'}" for i, c, z, p, s in rows if c == color]
    p, i, s = min((p, i, s) for i, c, z, p, s in rows if c == color and z == size and s >= 1)
    diff = p - int(old_price)
    named = f"{color} {size}".strip()  # an unsized item (OOD) has no size to name
    think = (f"exchange {oid} {old_id} {i} . {i} {named} {p} st{s} ok . " if draft else
             f"{named} : " + " . ".join(notes) + f" . best {i} {p} . ")
    think += f"{p} - {old_price} = {diff} . {'pay' if diff > 0 else 'refund'} by {paid}"
    return _with_think(think, f"exchange {oid} {old_id} {i} {paid}", cot)


def _with_think(think, action, cot):
    return f"<|think|> {think} <|/think|> {action}" if cot else action


# ----------------------------------------------------------------------------------------------------------------
# PI forms: one line in the system segment of the teacher's context (docs/env.md)


HINTS = {"BUY": "cheapest {color} with stock {qty} ; gift covers total or card",
         "RETURN": "pending cancel , delivered return the {mode} one",
         "EXCHANGE": "cheapest {color} same size in stock ; settle with the order payment"}


def pi_text(world, form, plan=None):
    """The privileged information of one form, from a plan (default: the expert's, actions only). pretrain.py
    passes a weak agent's own actions instead, for its hindsight PI lines."""
    plan = plan or solve(world)
    if form == "full":
        return "full : " + " ; ".join(plan)
    if form == "tools":
        return "tools : " + " ; ".join(a.split()[0] for a in plan)
    if form == "key":  # the decisive arguments: the write's ids and payment, not what the request already says
        write = plan[-2].split() if len(plan) > 3 else ["none"]
        keep = {"buy": [1, 3], "return": [2], "cancel": [0], "exchange": [3, 4]}.get(write[0], [0])
        return "key : " + " ".join(write[k] for k in keep if k < len(write))
    if form == "answer":
        return "answer : " + plan[-1].partition(" ")[2]
    if form == "hint":
        return "hint : " + HINTS[world.family].format(color=world.color, qty=world.qty, mode=world.mode)
    raise ValueError(f"unknown PI form {form!r}; valid: {', '.join(PI_FORMS)}")


SYS_LINE = "<|sys|> shop\n"


def pi_line(pi):
    return f"<|pi|> {pi} <|/pi|>\n"


def render(history, pi=None, done=False):
    """The transcript text of an episode. `history` is [(role, text)]: roles user, agent, tool. With `pi`, the PI
    line goes right after the system line (the teacher view); without, the student view. `strip_pi` undoes it.
    Every turn is one line; a finished episode ends with <|eos|> instead of its last newline."""
    out = SYS_LINE + (pi_line(pi) if pi else "")
    for role, text in history:
        out += f"<|{role}|> {text}\n"
    return out[:-1] + "<|eos|>" if done else out


def strip_pi(text):
    return re.sub(r"<\|pi\|>[^\n]*\n", "", text)


# ----------------------------------------------------------------------------------------------------------------
# the environment


def state(world, new_orders):
    """Everything a write can change: what the reward compares with the expert's replay."""
    return (tuple((r.id, r.stock) for r in world.rows), world.gift,
            tuple((o.id, o.status, tuple(r.id for r in o.items)) for o in world.orders.values()), tuple(new_orders))


class ToyShop:
    def __init__(self, level="L2"):
        if level not in LEVELS:
            raise ValueError(f"unknown level {level!r}; valid: {', '.join(LEVELS)}")
        self.level = level
        self.max_turns = 8

    def reset(self, seed):
        self.seed, self.world = seed, build_world(seed, self.level)
        self.plan = solve(self.world)
        self.pi = {form: pi_text(self.world, form) for form in PI_FORMS}  # from the fresh world, before any write
        self.authed, self.wrote, self.write_attempted, self.new_orders = False, None, False, []
        self.turns, self.said, self.done = 0, None, False
        self.history = [("user", self.world.request())]
        return self.history[0][1], {"family": self.world.family, "seed": seed}

    def step(self, text):
        """One agent turn -> (observation, reward, done, info). Never raises on the agent's text."""
        self.turns += 1
        action = text.split("<|/think|>")[-1].strip()
        self.history.append(("agent", text.strip()))
        if "<|" in action or not action:
            obs = "error format"
        else:
            obs = self._tool(action.split())
        done = self.done = self.said is not None or self.turns >= self.max_turns
        if self.said is not None:
            self.history.append(("user", obs))
        else:
            self.history.append(("tool", obs))
        reward, info = (self._reward() if done else (0.0, {}))
        return obs, reward, done, info

    def _tool(self, a):
        w, name, args = self.world, a[0], a[1:]
        try:
            if name == "say":
                self.said = " ".join(args)
                return "bye"
            if name == "profile":
                if args != [w.user]:
                    return "error unknown user"
                self.authed = True
                return f"{w.user} gift {w.gift}"
            if name == "search":
                if args != [w.category] or not w.rows:
                    return "error no such category"
                return " | ".join(r.render() for r in w.rows)
            if name == "order":
                if len(args) != 1 or args[0] not in w.orders:
                    return "error unknown order"
                return w.orders[args[0]].render()
            if name not in ("buy", "return", "cancel", "exchange"):
                return "error format"
            if not self.authed:
                return "error auth"
            if self.wrote:
                return "error one write"
            self.write_attempted = True
            return getattr(self, f"_{name}")(*args)
        except (TypeError, ValueError, KeyError, StopIteration):  # wrong arity, non-numbers, unknown ids
            return "error bad arguments"

    def _buy(self, item, qty, pay):
        w, qty = self.world, int(qty)
        row = next(r for r in w.rows if r.id == item)
        total = row.price * qty
        if pay not in ("gift", "card") or qty < 1:
            return "error bad arguments"
        if row.stock < qty:
            return "error stock"
        if pay == "gift" and w.gift < total:
            return "error gift low"
        row.stock -= qty
        w.gift -= total if pay == "gift" else 0
        self.new_orders.append((item, qty, pay))
        self.wrote = ("buy", item, qty, pay)
        return f"ok total {total}"

    def _return(self, oid, item):
        order = self.world.orders[oid]
        row = next(r for r in order.items if r.id == item)
        if order.status != "delivered":
            return f"error order {order.status}"
        order.items.remove(row)
        self.world.gift += row.price if order.pay == "gift" else 0
        self.wrote = ("return", oid, item)
        return f"ok refund {row.price} to {order.pay}"

    def _cancel(self, oid):
        order = self.world.orders[oid]
        if order.status != "pending":
            return f"error order {order.status}"
        order.status = "cancelled"
        total = sum(r.price for r in order.items)
        self.world.gift += total if order.pay == "gift" else 0
        self.wrote = ("cancel", oid)
        return f"ok refund {total}"

    def _exchange(self, oid, old_id, new_id, pay):
        w, order = self.world, self.world.orders[oid]
        old = next(r for r in order.items if r.id == old_id)
        new = next(r for r in w.rows if r.id == new_id)
        if order.status != "delivered" or pay not in ("gift", "card"):
            return "error bad arguments"
        if new.stock < 1:
            return "error stock"
        diff = new.price - old.price
        if diff > 0 and pay == "gift" and w.gift < diff:
            return "error gift low"
        new.stock -= 1
        order.items[order.items.index(old)] = new
        if diff > 0:
            w.gift -= diff if pay == "gift" else 0
        else:
            w.gift += -diff if order.pay == "gift" else 0
        self.wrote = ("exchange", oid, old_id, new_id, pay if diff > 0 else order.pay)
        return f"ok pay {diff}" if diff > 0 else f"ok refund {-diff}"

    def _reward(self):
        """r = 1 iff the world equals the expert's replay and the `say` carries the required output (docs/env.md)."""
        replay = ToyShop(self.level)
        replay.reset(self.seed)
        for action in replay.plan[:-1]:
            replay._tool(action.split())
        required = self.plan[-1].split(" ", 1)[1]
        expected_write = replay.wrote
        checks = {
            "state": state(self.world, self.new_orders) == state(replay.world, replay.new_orders),
            "write": (self.wrote or ("none",))[0] == (expected_write or ("none",))[0],
            "args": self.wrote == expected_write,
            "output": self.said == required,
            "none_clean": required != "none" or not self.write_attempted,
        }
        return float(checks["state"] and checks["output"] and checks["none_clean"]), {"checks": checks, "said": self.said}

    def transcript(self, pi_form=None):
        return render(self.history, self.pi[pi_form] if pi_form else None, self.done)


def make(name, level="L2"):
    if name not in ENVS:
        raise ValueError(f"unknown env {name!r}; valid: {', '.join(ENVS)}")
    return ToyShop(level)
