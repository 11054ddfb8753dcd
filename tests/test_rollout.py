"""The KV-cache sampler against the plain generator, token for token; forced tokens, masks and log-probs."""

import pytest
import torch

import rollout
from model import GPT, GPTConfig, token_logprobs
from rollout import generate, generate_plain, next_token

V, STOP = 37, 5


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=V, block_size=96, n_layer=2, n_head=2, n_embd=16)).eval()


class ScriptedEnv:
    """A stand-in environment: after each agent turn it replies with forced tokens; row r ends after r % 3 + 1 turns,
    so rows finish at different times. It records every turn it was shown."""

    def __init__(self):
        self.turns = {}

    def __call__(self, row, turn):
        seen = self.turns.setdefault(row, [])
        seen.append(list(turn))
        reply = [30 + row % 4] * (1 + (row + len(seen)) % 3) + [31]  # varied lengths, 31 = "agent turn starts"
        return reply, len(seen) >= row % 3 + 1


PROMPTS = [[1, 2, 3, 4, 5, 6], [7, 8, 9], [10, 11, 12, 13]]  # different lengths: part of each is forced


def both(temperature, top_k=None, k=2, seed=7, max_len=60):
    out = []
    for sampler in (generate, generate_plain):
        env = ScriptedEnv()
        g = torch.Generator().manual_seed(seed)
        ep = sampler(tiny_model(), PROMPTS, k, max_len=max_len, on_turn_end=env, stop_ids=[STOP], max_turn_tokens=6,
                     temperature=temperature, top_k=top_k, generator=g, pad_id=0)
        out.append((ep, env, g.get_state()))
    return out


@pytest.mark.parametrize("temperature, top_k, chunk", [(0.0, None, 8), (1.0, None, 8), (0.7, 5, 8), (1.0, None, 1),
                                                       (0.7, None, 2)])
def test_kv_sampler_equals_plain_generator(temperature, top_k, chunk, monkeypatch):
    """Prompts and replies fed whole (chunk 8 here), one token per step (1), or split across steps (2): all equal."""
    monkeypatch.setattr(rollout, "CHUNK", chunk)
    (a, env_a, g_a), (b, env_b, g_b) = both(temperature, top_k)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.mask, b.mask)
    assert torch.equal(a.lengths, b.lengths) and torch.equal(a.done, b.done)
    assert torch.allclose(a.logp, b.logp, atol=1e-5)
    assert env_a.turns == env_b.turns
    assert torch.equal(g_a, g_b)  # the same uniforms drawn: a later draw from the generator does not depend on which
    # the scenario really exercised what it claims: rows ended at different times, by the callback
    assert a.done.all() and len(set(a.lengths.tolist())) > 2


@pytest.mark.parametrize("max_len, chunk", [(14, 8), (17, 8), (21, 2), (26, 3)])
def test_kv_sampler_equals_plain_generator_when_max_len_cuts_rows(max_len, chunk, monkeypatch):
    """max_len cuts rows mid-turn and mid-reply (done False, length max_len) while others finish: still equal."""
    monkeypatch.setattr(rollout, "CHUNK", chunk)
    (a, env_a, g_a), (b, env_b, g_b) = both(1.0, max_len=max_len)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.mask, b.mask)
    assert torch.equal(a.lengths, b.lengths) and torch.equal(a.done, b.done)
    assert env_a.turns == env_b.turns and torch.equal(g_a, g_b)
    assert not a.done.all() and (a.lengths[~a.done] == max_len).all()


def test_forced_tokens_masks_and_padding():
    (ep, env, _), _ = both(1.0)
    for row in range(len(PROMPTS) * 2):
        prompt = PROMPTS[row // 2]
        n = ep.lengths[row].item()
        ids, mask = ep.ids[row, :n].tolist(), ep.mask[row, :n].tolist()
        assert ids[: len(prompt)] == prompt and not any(mask[: len(prompt)])
        assert (ep.ids[row, n:] == 0).all() and not ep.mask[row, n:].any()
        # rebuild the stream from the callback's record: prompt, then each turn and its reply
        expected, sampled = list(prompt), []
        for i, turn in enumerate(env.turns[row]):
            reply = [30 + row % 4] * (1 + (row + i + 1) % 3) + [31]
            expected += turn + reply
            sampled += [1] * len(turn) + [0] * len(reply)
            assert turn[-1] == STOP or len(turn) == 6
        assert ids == expected and mask == [0] * len(prompt) + sampled
        assert len(env.turns[row]) == row % 3 + 1


def test_logp_is_the_log_prob_of_the_sampling_distribution():
    """At temperature 1 the sampled tokens' log-probs equal token_logprobs from one forward over the episode."""
    for temperature in (1.0, 0.5):
        g = torch.Generator().manual_seed(1)
        m = tiny_model()
        ep = generate(m, PROMPTS, 2, max_len=40, on_turn_end=ScriptedEnv(), stop_ids=[STOP], max_turn_tokens=6,
                      temperature=temperature, generator=g)
        ref = token_logprobs(m(ep.ids)[0] / temperature, ep.ids)
        sel = ep.mask.bool()
        assert sel.sum() > 20
        assert torch.allclose(ep.logp[sel], ref[sel], atol=1e-5)
        assert (ep.logp[~sel] == 0).all()


def test_greedy_ignores_the_seed_and_top_k_1_is_greedy():
    m = tiny_model()
    runs = [generate(m, PROMPTS, 1, max_len=30, temperature=t, top_k=k, generator=torch.Generator().manual_seed(s))
            for t, k, s in [(0.0, None, 1), (0.0, None, 2), (1.0, 1, 3)]]
    assert torch.equal(runs[0].ids, runs[1].ids) and torch.equal(runs[0].ids, runs[2].ids)
    assert not runs[0].done.any() and (runs[0].lengths == 30).all()  # no callback: rows run to max_len


def test_same_seed_same_samples_different_seed_different():
    m = tiny_model()
    a, b, c = (generate(m, PROMPTS, 2, max_len=40, generator=torch.Generator().manual_seed(s)) for s in (4, 4, 5))
    assert torch.equal(a.ids, b.ids) and not torch.equal(a.ids, c.ids)


def test_next_token_follows_the_distribution():
    probs = torch.tensor([0.1, 0.4, 0.0, 0.2, 0.3])
    n = 20000
    tok, lp = next_token(probs.log().expand(n, 5), torch.rand(n, generator=torch.Generator().manual_seed(0)), 1.0, None)
    freq = torch.bincount(tok, minlength=5).float() / n
    assert torch.allclose(freq, probs, atol=0.015) and freq[2] == 0
    assert torch.allclose(lp, probs.log()[tok])
    tok, _ = next_token(probs.log().expand(n, 5), torch.rand(n, generator=torch.Generator().manual_seed(0)), 1.0, 2)
    assert set(tok.tolist()) == {1, 4}  # top-2 keeps only the two likeliest


def test_bad_arguments():
    m = tiny_model()
    with pytest.raises(ValueError, match="leaves no room"):
        generate(m, [[1] * 10], max_len=10)
    with pytest.raises(ValueError, match="exceeds the model's block_size"):
        generate(m, [[1]], max_len=200)
    with pytest.raises(ValueError, match="at least one token"):
        generate(m, [[]], max_len=10)
