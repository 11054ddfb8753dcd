"""The GPT: shapes, causality, the loss's ignore index, rotary relativity, log-prob helpers, the KV cache, checkpoints."""

import math

import pytest
import torch
import torch.nn.functional as F

from model import (GPT, IGNORE_INDEX, CheckpointError, GPTConfig, KVCache, apply_rotary, load_checkpoint,
                   rotary_tables, save_checkpoint, token_logprobs, vocab_logprobs)

V = 37  # a tiny vocabulary: brute-force references stay cheap


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=V, block_size=64, n_layer=2, n_head=2, n_embd=16)
    return GPT(GPTConfig(**{**cfg, **kw})).eval()


def test_presets_sizes():
    tiny = GPT(GPTConfig.preset("tiny")).num_params()
    small = GPT(GPTConfig.preset("small")).num_params()
    assert 0.7e6 < tiny < 1.3e6 and 4e6 < small < 6e6
    with pytest.raises(ValueError, match="unknown model preset 'huge'; valid: tiny, small"):
        GPTConfig.preset("huge")


def test_forward_shapes_and_block_size():
    m = tiny_model()
    logits, loss = m(torch.randint(0, V, (3, 10)))
    assert logits.shape == (3, 10, V) and loss is None
    with pytest.raises(ValueError, match="exceeds block_size 64"):
        m(torch.randint(0, V, (1, 65)))


def test_causality():
    """Changing token j changes no logit before j, and does change the logits from j on."""
    m = tiny_model()
    idx = torch.randint(0, V, (2, 20))
    j = 12
    other = idx.clone()
    other[:, j] = (idx[:, j] + 1) % V
    a, _ = m(idx)
    b, _ = m(other)
    assert torch.allclose(a[:, :j], b[:, :j], atol=1e-6)
    assert not torch.allclose(a[:, j:], b[:, j:], atol=1e-4)


def test_loss_ignore_index_against_brute_force():
    m = tiny_model()
    idx = torch.randint(0, V, (2, 8))
    targets = torch.randint(0, V, (2, 8))
    targets[0, :3] = IGNORE_INDEX
    targets[1, 5:] = IGNORE_INDEX
    logits, loss = m(idx, targets)
    terms = []
    for b in range(2):
        for t in range(8):
            if targets[b, t] != IGNORE_INDEX:
                z = logits[b, t].double()
                terms.append(math.log(z.exp().sum().item()) - z[targets[b, t]].item())
    assert len(terms) == 16 - 3 - 3
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_rotary_depends_only_on_relative_position():
    cos, sin = rotary_tables(64, 8)
    q, k = torch.randn(8), torch.randn(8)

    def score(m, n):
        return (apply_rotary(q, cos[m], sin[m]) * apply_rotary(k, cos[n], sin[n])).sum()

    assert score(10, 3) == pytest.approx(score(40, 33).item(), abs=1e-5)
    assert score(10, 3) != pytest.approx(score(10, 4).item(), abs=1e-3)


def test_token_logprobs_against_log_softmax_gather():
    logits = torch.randn(3, 7, V)
    idx = torch.randint(0, V, (3, 7))
    got = token_logprobs(logits, idx)
    assert got.shape == (3, 7) and (got[:, 0] == 0).all()
    for b in range(3):
        for t in range(1, 7):
            ref = torch.log_softmax(logits[b, t - 1].double(), -1)[idx[b, t]]
            assert got[b, t].item() == pytest.approx(ref.item(), abs=1e-5)


def test_vocab_logprobs_selects_the_predicting_positions():
    logits = torch.randn(2, 6, V)
    mask = torch.tensor([[0, 0, 1, 1, 0, 1], [0, 1, 0, 0, 1, 0]])
    got = vocab_logprobs(logits, mask)
    positions = [(0, 2), (0, 3), (0, 5), (1, 1), (1, 4)]  # row-major order of the mask's ones
    assert got.shape == (len(positions), V)
    for n, (b, t) in enumerate(positions):
        assert torch.allclose(got[n], F.log_softmax(logits[b, t - 1], -1), atol=1e-6)
    # and it agrees with token_logprobs on the tokens themselves
    idx = torch.randint(0, V, (2, 6))
    picked = got.gather(-1, idx[mask.bool()][:, None]).squeeze(-1)
    assert torch.allclose(picked, token_logprobs(logits, idx)[mask.bool()], atol=1e-6)


def test_kv_cache_matches_full_forward():
    """Prefill, then a multi-token chunk, then single steps: every logit equals the uncached forward's."""
    m = tiny_model()
    idx = torch.randint(0, V, (3, 20))
    full, _ = m(idx)
    cache = KVCache(m.config, 3, 20, "cpu")
    parts = [m(idx[:, :7], kv_cache=cache)[0], m(idx[:, 7:12], kv_cache=cache)[0]]
    parts += [m(idx[:, t : t + 1], kv_cache=cache)[0] for t in range(12, 20)]
    assert cache.lengths.tolist() == [20, 20, 20]
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)


def test_kv_cache_ragged_chunks_match_full_forward():
    """Rows feed different numbers of tokens per call (the rest padding): each real position's logits equal the
    uncached forward's, and each row's cache advances by its own count."""
    m = tiny_model()
    idx = torch.randint(0, V, (3, 20))
    full, _ = m(idx)
    cache, done = KVCache(m.config, 3, 20, "cpu"), torch.zeros(3, dtype=torch.long)
    for counts in ([3, 5, 7], [4, 1, 2], [1, 6, 3], [12, 8, 8]):
        n = torch.tensor(counts)
        x = torch.randint(0, V, (3, int(n.max())))  # padding: arbitrary tokens
        for r in range(3):
            x[r, : n[r]] = idx[r, done[r] : done[r] + n[r]]
        logits, _ = m(x, kv_cache=cache, n_new=n)
        for r in range(3):
            assert torch.allclose(logits[r, : n[r]], full[r, done[r] : done[r] + n[r]], atol=1e-5)
        done += n
    assert cache.lengths.tolist() == done.tolist() == [20, 20, 20]


def test_kv_cache_keep_and_repeat():
    m = tiny_model()
    idx = torch.randint(0, V, (2, 9))
    cache = KVCache(m.config, 2, 9, "cpu")
    m(idx[:, :5], kv_cache=cache)
    cache.repeat(3)  # rows: 0 0 0 1 1 1
    cache.keep(torch.tensor([1, 4]))  # one copy of each prompt
    steps = torch.cat([m(idx[:, t : t + 1], kv_cache=cache)[0] for t in range(5, 9)], dim=1)
    assert torch.allclose(steps, m(idx)[0][:, 5:], atol=1e-5)
    with pytest.raises(ValueError, match="KV cache overflow"):
        m(idx[:, :1], kv_cache=cache)


def test_checkpoint_round_trip(tmp_path):
    m = tiny_model(seed=3)
    path = tmp_path / "run" / "ckpt.pt"
    save_checkpoint(str(path), m, step=42)
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # the temp file was renamed away
    loaded, ckpt = load_checkpoint(str(path), device="cpu")
    assert ckpt["step"] == 42 and loaded.config == m.config
    idx = torch.randint(0, V, (2, 10))
    assert torch.equal(loaded.eval()(idx)[0], m(idx)[0])


def test_checkpoint_errors_are_one_line_and_name_the_path(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="no checkpoint at .*nope.pt"):
        load_checkpoint(str(missing))
    corrupt = tmp_path / "corrupt.pt"
    save_checkpoint(str(corrupt), tiny_model())
    corrupt.write_bytes(corrupt.read_bytes()[:200])  # a truncated write
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(str(corrupt))
    assert str(corrupt) in str(err.value) and "\n" not in str(err.value)
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot load checkpoint .*garbage.pt"):
        load_checkpoint(str(garbage))
