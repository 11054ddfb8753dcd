"""The GRPO pieces against hand-worked numbers and a brute-force reference; which side of the clip passes gradient."""

import math

import torch

from grpo import centred_advantages, clipped_surrogate, entropy, group_advantages, informative_groups


def test_group_advantages_hand_worked():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.9, -0.2, 0.3, 1.0]])
    adv = group_advantages(rewards)
    expected = torch.tensor([[0.75, -0.25, -0.25, -0.25], [0, 0, 0, 0], [0, 0, 0, 0], [0.4, -0.7, -0.2, 0.5]])
    assert torch.allclose(adv, expected, atol=1e-6)  # no division by the std: [0.75, -0.25, ...] not [1.5, -0.5, ...]
    assert informative_groups(adv).tolist() == [True, False, False, True]


def test_centred_advantages_in_the_flat_episode_order():
    """Hand-worked: one group where all four succeeded (dropped), one where one of four did."""
    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    adv, keep = centred_advantages(rewards, 4)
    assert adv.tolist() == [0.0, 0.0, 0.0, 0.0, 0.75, -0.25, -0.25, -0.25]
    assert keep.tolist() == [False] * 4 + [True] * 4


def brute_force_surrogate(logp_new, logp_old, adv, mask, clip):
    total, count = 0.0, 0
    for b in range(logp_new.shape[0]):
        for t in range(logp_new.shape[1]):
            if mask[b, t]:
                r = float(torch.exp(logp_new[b, t] - logp_old[b, t]))
                clipped = min(max(r, 1 - clip), 1 + clip)
                total += min(r * float(adv[b]), clipped * float(adv[b]))
                count += 1
    return -total / count


def test_clipped_surrogate_against_brute_force():
    g = torch.Generator().manual_seed(0)
    logp_new, logp_old = -torch.rand(3, 7, generator=g) * 3, -torch.rand(3, 7, generator=g) * 3
    adv = torch.tensor([0.5, -0.25, 1.0])
    mask = (torch.rand(3, 7, generator=g) > 0.3).float()
    got = clipped_surrogate(logp_new, logp_old, adv, mask, 0.2)
    assert abs(got.item() - brute_force_surrogate(logp_new, logp_old, adv, mask, 0.2)) < 1e-6


def test_which_side_of_the_clip_passes_gradient():
    """Per token: ratio 1.5 / 0.5 with advantage +1 / −1. The min keeps the gradient only where the ratio has not
    yet moved past the clip in the direction the advantage pushes it."""
    ratios = torch.tensor([[1.5, 0.5, 1.5, 0.5, 1.1]])
    adv_per_token = [1.0, 1.0, -1.0, -1.0, 1.0]
    expect_grad = [False, True, True, False, True]
    for t, (a, want) in enumerate(zip(adv_per_token, expect_grad)):
        logp_old = torch.zeros(1, 5, requires_grad=True)
        logp_new = ratios.log().clone().requires_grad_(True)
        mask = torch.zeros(1, 5)
        mask[0, t] = 1
        clipped_surrogate(logp_new, logp_old, torch.tensor([a]), mask, 0.2).backward()
        g = logp_new.grad[0, t].item()
        assert (abs(g) > 1e-8) == want, (t, g)
        if want:  # d(−ρA)/d logp = −ρA
            assert abs(g + ratios[0, t].item() * a) < 1e-6
        assert logp_old.grad is None or (logp_old.grad == 0).all()  # the old policy is a constant


def test_dual_clip_caps_negative_advantage_tokens_only():
    """With dual_clip = 3, a token with A < 0 and ratio 5 adds the constant 3·|A| to the loss and no gradient;
    ratio 2 still passes ρA's gradient; positive advantages keep the usual clip; without it, ratio 5 costs 5·|A|."""
    for ratio, a, want_loss, want_grad in ((5.0, -1.0, 3.0, False), (2.0, -1.0, 2.0, True), (5.0, 1.0, -1.2, False),
                                           (0.5, 1.0, -0.5, True)):
        logp_new = torch.tensor([[math.log(ratio)]], requires_grad=True)
        loss = clipped_surrogate(logp_new, torch.zeros(1, 1), torch.tensor([a]), torch.ones(1, 1), 0.2, dual_clip=3.0)
        loss.backward()
        assert abs(loss.item() - want_loss) < 1e-5, (ratio, a, loss.item())
        assert (abs(logp_new.grad.item()) > 1e-8) == want_grad, (ratio, a)
    big = torch.tensor([[math.log(5.0)]])
    assert abs(clipped_surrogate(big, torch.zeros(1, 1), torch.tensor([-1.0]), torch.ones(1, 1), 0.2).item() - 5) < 1e-5


def test_normalised_by_agent_token_count():
    logp = torch.zeros(2, 4)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]]).float()
    loss = clipped_surrogate(logp, logp, torch.tensor([1.0, -1.0]), mask, 0.2)
    assert abs(loss.item() - (-(3 * 1.0 + 1 * -1.0) / 4)) < 1e-6  # token-sum / tokens, not a mean of episode means
    loss = clipped_surrogate(logp, logp, torch.tensor([1.0, -1.0]), mask, 0.2, n_tokens=10)  # a batch of 10 tokens,
    assert abs(loss.item() - (-(3 * 1.0 + 1 * -1.0) / 10)) < 1e-6  # 6 of them in dropped groups


def test_entropy_uniform_and_peaked():
    V = 8
    uniform = torch.zeros(1, 3, V)
    mask = torch.tensor([[0, 1, 1]])
    assert abs(entropy(uniform, mask) - torch.log(torch.tensor(float(V))).item()) < 1e-5
    peaked = torch.full((1, 3, V), -1e4)
    peaked[..., 0] = 0
    assert entropy(peaked, mask) < 1e-4
