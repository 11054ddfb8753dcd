"""diagnose.py: an episode's first departure from the expert and the classes of its agent tokens, by hand."""

from types import SimpleNamespace

import torch

from diagnose import departures, token_classes
from env import expert_act, make, render


def test_departures_find_the_first_turn_that_leaves_the_expert():
    envs = []
    for wrong_at in (0, 2, None):  # a wrong first turn, a wrong third turn, the expert throughout
        env = make("toy_shop", "L2")
        env.reset(3)
        for turn in range(8):
            if env.done:
                break
            off = wrong_at is not None and turn >= wrong_at  # from the wrong turn on, the expert cannot read on
            wrong = "profile u0" if turn == wrong_at else "say none"
            env.step(wrong if off else expert_act(render(env.history)))
        envs.append(env)
    n_turns = sum(role == "agent" for role, _ in envs[2].history)
    assert departures(SimpleNamespace(envs=envs)) == [0, 2, n_turns]


def test_token_classes_by_hand():
    """Two episodes: turns are runs of mask-1 tokens; part 0/1/2 = before / at / after the departure turn, kind
    0/1/2 = a turn's first token / a middle one / its last."""
    mask = torch.tensor([[0, 1, 1, 1, 0, 0, 1, 1, 0, 1],
                         [0, 0, 1, 0, 1, 1, 1, 0, 0, 0]])
    part, kind = token_classes(mask, [1, 0])
    #                          row 0: turn 0 (3 tokens), turn 1 (2), turn 2 (1) | row 1: turn 0 (1), turn 1 (3)
    assert part.tolist() == [0, 0, 0, 1, 1, 2, 1, 2, 2, 2]
    assert kind.tolist() == [0, 1, 2, 0, 2, 0, 0, 0, 1, 2]
