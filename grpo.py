"""The GRPO pieces every RL script shares (sft_rl_baseline.py, pi_distill.py, opsd.py): small pure tensor functions.

As in the paper's setup: group-centred advantages **without** the division by the std, groups whose advantages
are all zero dropped, a token-level clipped ratio in [1 − CLIP, 1 + CLIP], several gradient steps per sampling round,
and no KL to the base model. Every script normalises its clipped term by the round's agent tokens, dropped groups
included (docs/experiments.md, "Token normalisation"), so every RL row of the results table takes the same step.

A GRPO loss near 0 is normal: advantages are centred per group, so the surrogate starts at ~0 every round. Watch
success, reward and the zero-advantage fraction instead.
"""

import torch

CLIP = 0.2  # the ratio clip range [1 - CLIP, 1 + CLIP] of every RL term (the paper's [0.8, 1.2])


def group_advantages(rewards):
    """A_k = R_k − mean_group(R) for rewards (G, K): -> (G, K). No std normalisation (Dr. GRPO; Algorithm 1,
    step 3)."""
    return rewards - rewards.mean(dim=1, keepdim=True)


def informative_groups(advantages, eps=1e-8):
    """(G,) True for groups with at least one nonzero advantage; all-equal groups carry no gradient and are dropped."""
    return (advantages.abs() > eps).any(dim=1)


def centred_advantages(rewards, k):
    """Episode rewards (B,) in groups of k -> (advantages (B,), keep (B,) True where the episode's group is
    informative): group_advantages and informative_groups in the flat episode order every script uses."""
    adv = group_advantages(rewards.view(-1, k))
    return adv.flatten(), informative_groups(adv).repeat_interleave(k)


def clipped_surrogate(logp_new, logp_old, advantages, mask, clip=CLIP, dual_clip=None, n_tokens=None):
    """The PPO clipped objective per token, as a loss to minimise, normalised by the number of agent tokens.

        L = −Σ_t mask_t · min(ρ_t A, clip(ρ_t, 1 − clip, 1 + clip) A) / N,   ρ_t = exp(logp_new − logp_old)

    N = Σ_t mask_t, the tokens the term uses, unless `n_tokens` gives another count (the scripts pass every agent
    token of the round's batch, those of dropped groups included).

    logp_new, logp_old, mask: (B, T); advantages: (B,) one per episode, broadcast over its tokens, or (B, T) one
    per token (OPSD's --kl token: a per-token KL penalty on top of the episode's advantage). `logp_old` is
    detached here: it is π_old in GRPO, π^T_old in π-Distill's student term (the ratio π^S_θ / sg π^T_old).
    Where the ratio leaves the clip range on the side that would increase the objective, the min picks the
    clipped, constant term and that token sends no gradient.

    With `dual_clip` = c (dual-clip PPO, Ye et al. 2020), a token with A < 0 contributes at most c·|A|: where
    ρ_t > c it sends no gradient. On-policy ρ stays near 1 and this never binds; π-Distill's student ratio
    π^S_θ / π^T_old is off-policy and can be huge, and without the cap a few such tokens dominate the update.

    Simplification: the scripts take both log-probs at the sampling temperature (logits / T), so π_old is exactly
    the distribution the sampler drew from (rollout.generate's logp) and no extra no-grad forward is needed.
    """
    ratio = torch.exp(logp_new - logp_old.detach())  # (B, T); the old policy is a constant (stop-gradient)
    adv = advantages[:, None] if advantages.dim() == 1 else advantages  # (B, 1) or (B, T)
    objective = torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)  # (B, T)
    if dual_clip is not None:
        objective = torch.where(adv < 0, torch.maximum(objective, dual_clip * adv), objective)
    return -(objective * mask).sum() / (mask.sum().clamp_min(1) if n_tokens is None else n_tokens)


def entropy(logits, mask):
    """Mean entropy (nats) of the predictive distributions at the agent tokens: logits (B, T, V), mask (B, T)."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    ent = -(logp.exp() * logp).sum(-1)  # (B, T-1): position t-1 predicts token t
    m = mask[:, 1:].float()
    return ((ent * m).sum() / m.sum().clamp_min(1)).item()


def update(model, opt, loss, max_norm=1.0):
    """One optimizer step on `loss`, with the gradient norm clipped to max_norm (every script's update)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    opt.step()
