"""toy_shop: the gates of docs/env.md that need no model (G1, G2, G3, G6, G7), tool errors, and the reward."""

import random

import pytest

from env import PI_FORMS, PRETRAIN_SEED0, TEST_SEEDS, TRAIN_SEEDS, expert_act, make, render, solve, state, strip_pi
from worlds import LEVELS, build_world


def run_expert(env, seed, cot, style="draft"):
    env.reset(seed)
    plan, acted = solve(env.world), []
    reward, done = 0.0, False
    while not done:
        action = expert_act(render(env.history), cot=cot, style=style)
        acted.append(action.split("<|/think|>")[-1].strip())
        _, reward, done, info = env.step(action)
    return plan, acted, reward, info


@pytest.mark.parametrize("level", list(LEVELS))
def test_g1_g2_expert_solves_every_seed_and_reads_only_the_transcript(level):
    """G1: the expert scores 1 on 2,000 seeds; G2: what it reads off the transcript equals solve(world); with either
    chain of thought (draft on seeds 0 mod 4, list on 2 mod 4), the action after it is the plan's."""
    env = make("toy_shop", level)
    for seed in range(2000):
        plan, acted, reward, info = run_expert(env, seed, cot=seed % 2 == 0, style=["draft", "list"][seed % 4 // 2])
        assert acted == plan, (seed, plan, acted)
        assert reward == 1.0, (seed, info)


def test_answers_are_unique():
    """Prices are distinct within a world, so 'the cheapest' / 'the priciest' names exactly one row."""
    for seed in range(500):
        w = build_world(seed, "L3")
        prices = [r.price for r in w.rows] + [r.price for o in w.orders.values() for r in o.items]
        assert len(prices) == len(set(prices))
        ids = [r.id for r in w.rows] + [r.id for o in w.orders.values() for r in o.items]
        assert len(ids) == len(set(ids))


def heuristic_plan(world, pick, pay):
    """A shallow policy: the canonical tools, the write's row chosen by `pick`, payment always `pay`."""
    plan = solve(world)
    if plan[-1] == "say none" or world.family == "RETURN" and plan[2].startswith("cancel"):
        plan = plan[:2] + [None, None]
    rows = world.rows if world.family != "RETURN" else world.orders[world.order_id].items
    colour = [r for r in rows if r.color == world.color] or rows
    row = {"cheapest_of_colour": lambda: min(colour, key=lambda r: r.price),
           "cheapest": lambda: min(rows, key=lambda r: r.price),
           "priciest": lambda: max(rows, key=lambda r: r.price),
           "first": lambda: rows[0],
           "random": lambda: random.Random(world.gift).choice(rows)}[pick]()
    w, o = world, world.order_id
    write = {"BUY": f"buy {row.id} {w.qty} {pay}", "RETURN": f"return {o} {row.id}",
             "EXCHANGE": f"exchange {o} {w.orders.get(o).items[0].id if o else ''} {row.id} {pay}"}[w.family]
    return plan[:-2] + [write]


@pytest.mark.parametrize("level", ["L2", "OOD"])
@pytest.mark.parametrize("pick", ["cheapest_of_colour", "cheapest", "priciest", "first", "random"])
@pytest.mark.parametrize("pay", ["card", "gift"])
def test_g3_shallow_heuristics_stay_weak(pick, pay, level):
    env, wins, n = make("toy_shop", level), 0.0, 1500
    for seed in range(n):
        env.reset(seed)
        obs = ""
        for action in heuristic_plan(env.world, pick, pay):
            obs, _, _, _ = env.step(action)
        _, reward, done, _ = env.step("say " + " ".join(obs.split()[1:3]) if obs.startswith("ok") else "say none")
        assert done
        wins += reward
    assert wins / n <= 0.30, (pick, pay, wins / n)


def test_g3_always_none_is_rare():
    env, n = make("toy_shop", "L2"), 2000
    wins = 0.0
    for seed in range(n):
        env.reset(seed)
        wins += env.step("say none")[1]
    assert wins / n <= 0.03


def test_g6_pi_only_in_the_teacher_view():
    env = make("toy_shop", "L2")
    for seed in range(200):
        run_expert(env, seed, cot=False)
        student = env.transcript()
        assert "<|pi|>" not in student and all("<|pi|>" not in t for _, t in env.history)
        for form in PI_FORMS:
            teacher = env.transcript(form)
            assert teacher.count("<|pi|>") == 1 and strip_pi(teacher) == student
            pi_body = teacher.split("<|pi|> ")[1].split(" <|/pi|>")[0]
            assert pi_body.split(" : ")[0] == form
            assert all(pi_body not in text for _, text in env.history)  # no observation repeats the PI


def test_g7_determinism_and_no_global_rng():
    a, b = make("toy_shop"), make("toy_shop")
    for seed in range(100):
        random.seed(seed + 12345)  # whatever the global RNG does must not matter
        wa = build_world(seed)
        random.random()
        wb = build_world(seed)
        assert wa == wb
        ra, rb = run_expert(a, seed, cot=True), run_expert(b, seed, cot=True)
        assert ra == rb and a.history == b.history
    assert build_world(1) != build_world(2)


def test_seed_ranges_are_disjoint():
    assert TRAIN_SEEDS.stop <= TEST_SEEDS.start and TEST_SEEDS.stop <= PRETRAIN_SEED0


def test_tool_errors_are_observations_and_change_nothing():
    env = make("toy_shop", "L2")
    seed = next(s for s in range(100) if build_world(s).family == "BUY")
    env.reset(seed)
    before = state(env.world, env.new_orders)
    plan = solve(env.world)
    assert env.step(plan[2])[0] == "error auth"  # a write before `profile`
    assert env.step("fly to rome")[0] == "error format"
    assert env.step("<|tool|> hello")[0] == "error format"
    assert env.step("")[0] == "error format"
    assert env.step("profile u0")[0] == "error unknown user"
    env.step(plan[0])
    assert env.step("search spaceship")[0] == "error no such category"
    assert env.step("buy zz 1 card")[0] == "error bad arguments"
    assert env.step("buy " + env.world.rows[0].id + " two card")[0] == "error bad arguments"
    assert state(env.world, env.new_orders) == before
    assert env.step(plan[2])[0].startswith("ok")
    assert env.step(plan[2])[0] == "error one write"
    obs, reward, done, info = env.step(plan[3])
    assert done and reward == 1.0 and all(info["checks"].values())


def test_wrong_write_scores_zero_with_its_breakdown():
    env = make("toy_shop", "L2")
    seed = next(s for s in range(100) if build_world(s).family == "BUY" and solve(build_world(s))[-1] != "say none")
    env.reset(seed)
    plan = solve(env.world)
    wrong_pay = "card" if plan[2].endswith("gift") else "gift"
    env.step(plan[0])
    env.step(plan[1])
    obs = env.step(plan[2].rsplit(" ", 1)[0] + " " + wrong_pay)[0]
    _, reward, done, info = env.step("say " + " ".join(obs.split()[1:3]) if obs.startswith("ok") else "say none")
    assert done and reward == 0.0 and not info["checks"]["args"]


def test_failed_write_then_none_does_not_score():
    """docs/env.md, the reward: `say none` pays only when nothing satisfies the request and no write was attempted."""
    env = make("toy_shop", "L3")
    seed = next(s for s in range(3000) if solve(build_world(s, "L3"))[-1] == "say none")
    env.reset(seed)
    assert env.step("say none")[1] == 1.0
    env.reset(seed)
    env.step(f"profile {env.world.user}")
    env.step(f"search {env.world.category}")
    assert env.step(f"buy {env.world.rows[0].id} 9 card")[0].startswith("error")
    assert env.step("say none")[1] == 0.0


def test_max_turns_ends_the_episode():
    env = make("toy_shop")
    env.reset(0)
    for turn in range(env.max_turns):
        _, reward, done, _ = env.step("nonsense")
    assert done and reward == 0.0


def test_unknown_env_or_level_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown env 'toy_zoo'; valid: toy_shop"):
        make("toy_zoo")
    with pytest.raises(ValueError, match="unknown level 'L9'; valid: L1, L2, L3"):
        make("toy_shop", level="L9")
