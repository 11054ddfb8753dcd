"""A compact GPT: the one network θ that plays both the teacher π^T(·|s, I) and the student π^S(·|s).

nanoGPT in spirit: pre-norm blocks, causal attention through F.scaled_dot_product_attention, tied input/output
embeddings. Two choices made for this project:

- Rotary positions (RoPE) instead of learned ones. The teacher's context carries one extra PI line, so every later
  token sits at a different absolute position in the two views. Attention with rotary embeddings depends only on
  relative offsets, so that shift changes nothing the model can see except the line itself.
- `forward` returns logits for *every* position, never only the last: the distillation losses score every agent
  token of an episode under two contexts.

Everything the algorithms need from the model lives here: the forward pass (with an optional KV cache for the
sampler in rollout.py), the per-token log-probs of given tokens, the full-vocabulary log-softmax at chosen positions
(for the KL terms), and atomic checkpoints that carry their config.
"""

import math
import os
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

IGNORE_INDEX = -1  # targets equal to this carry no loss (prompt, PI line, tool replies, padding)


@dataclass
class GPTConfig:
    vocab_size: int = 768  # the tokenizer's vocabulary (~500-700 tokens) rounded up to a multiple of 64
    block_size: int = 512  # the longest sequence the rotary tables cover
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128

    @classmethod
    def preset(cls, name, **overrides):
        """`tiny` (~0.9M parameters at vocab 768) and `small` (~5M): the project's one size dial."""
        presets = {
            "tiny": dict(n_layer=4, n_head=4, n_embd=128),
            "small": dict(n_layer=6, n_head=8, n_embd=256),
        }
        if name not in presets:
            raise ValueError(f"unknown model preset {name!r}; valid: {', '.join(presets)}")
        return cls(**{**presets[name], **overrides})


def pick_device(name="auto"):
    """cuda > mps > cpu when `name` is 'auto'; anything else is taken as asked (and fails loudly if absent)."""
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device={name} asked for, but torch sees no CUDA device")
    return name


# ----------------------------------------------------------------------------------------------------------------
# rotary positions


def rotary_tables(block_size, head_dim, base=10000.0):
    """cos/sin tables of shape (block_size, head_dim/2) for rotating query/key pairs (Su et al., RoFormer)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(block_size, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x, cos, sin):
    """Rotate each (first half, second half) pair of x (B, H, T, D) by the angle of its position."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


# ----------------------------------------------------------------------------------------------------------------
# the KV cache


class KVCache:
    """Keys and values of every layer for B rows, each row with its own filled length `lengths[b]`.

    A forward with the cache feeds each row a chunk of new tokens (rows may feed different numbers, the rest of the
    chunk is padding), written in place at positions lengths[b], lengths[b] + 1, ...; padding writes go to a spare
    slot after the last position, which no query ever sees. `keep(rows)` drops finished rows so their compute
    stops; `repeat(k)` turns the cache of G prefilled prompts into G*K rows (the K samples of each group).
    """

    def __init__(self, config, batch_size, max_len, device, dtype=torch.float32):
        shape = (config.n_layer, batch_size, config.n_head, 0, config.n_embd // config.n_head)  # grows with the rows
        self.k = self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=device)  # positions filled, per row
        self.max_len = max_len

    def grow(self, end):
        """Room for `end` positions and the spare slot after them: capacity doubles as the rows lengthen, so that
        `keep` copies what is filled rather than max_len positions."""
        cap = self.k.size(3) - 1
        if end <= cap:
            return
        new_cap = min(self.max_len, max(2 * cap, end, 32))
        shape = (*self.k.shape[:3], new_cap + 1, self.k.size(4))
        k, v = (torch.zeros(shape, device=self.k.device, dtype=self.k.dtype) for _ in range(2))
        if cap > 0:
            k[:, :, :, :cap], v[:, :, :, :cap] = self.k[:, :, :, :cap], self.v[:, :, :, :cap]
        self.k, self.v = k, v

    def slots(self, n_new, T):
        """Where a chunk of T tokens, of which row b's first n_new[b] are real, is written: (B, T) positions, the
        spare slot for padding; and the number of positions attention looks at. Raises on overflow."""
        positions = self.lengths[:, None] + torch.arange(T, device=self.lengths.device)
        real = torch.arange(T, device=self.lengths.device) < n_new[:, None]
        end = int((self.lengths + n_new).max())
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > max_len {self.max_len}")
        self.grow(end)
        return positions, torch.where(real, positions, self.k.size(3) - 1), end

    def update(self, layer, k, v, slots, end):
        """Store a chunk's k, v (B, H, T, D) of one layer at `slots` (B, T); return keys and values 0..end-1."""
        index = slots[:, None, :, None].expand(-1, k.size(1), -1, k.size(3))
        self.k[layer].scatter_(2, index, k)
        self.v[layer].scatter_(2, index, v)
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def keep(self, rows):
        """Keep only the given rows (a LongTensor of indices), in that order."""
        self.k, self.v, self.lengths = self.k[:, rows], self.v[:, rows], self.lengths[rows]

    def repeat(self, k):
        """Each row becomes k consecutive identical rows: a prompt prefilled once serves its whole group."""
        self.k = self.k.repeat_interleave(k, dim=1)
        self.v = self.v.repeat_interleave(k, dim=1)
        self.lengths = self.lengths.repeat_interleave(k)


# ----------------------------------------------------------------------------------------------------------------
# the network


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer):
        super().__init__()
        self.layer, self.n_head = layer, config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def forward(self, x, cos, sin, cache=None):
        """x (B, T, C). `cache`: None (plain causal attention) or (KVCache, slots, end, mask) for a cached chunk,
        where mask (B, 1, T, end) says which cached positions each query sees."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            kv_cache, slots, end, mask = cache
            k, v = kv_cache.update(self.layer, k, v, slots, end)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, config, layer):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=False)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=False)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, cache):
        x = x + self.attn(self.ln_1(x), cos, sin, cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        if config.n_embd % config.n_head or (config.n_embd // config.n_head) % 2:
            raise ValueError(f"n_embd={config.n_embd} must split into n_head={config.n_head} heads of even size")
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=False)
        cos, sin = rotary_tables(config.block_size, config.n_embd // config.n_head)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        # GPT-2 init; the residual projections are scaled down by depth so the residual stream starts small.
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * config.n_layer) if name.endswith("c_proj.weight") else 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())  # the tied embedding counts once

    def forward(self, idx, targets=None, kv_cache=None, n_new=None):
        """idx (B, T) -> logits (B, T, V) for every position, and the mean next-token loss over targets != -1.

        `targets[b, t]` is the token that should follow idx[b, :t+1] (the caller shifts). With `kv_cache`, row b of
        idx continues that row's cached positions: its first n_new[b] tokens are real (default: all T), the rest is
        padding whose logits mean nothing, and the row's cache advances by n_new[b].
        """
        B, T = idx.shape
        cache, dtype = None, self.wte.weight.dtype
        if kv_cache is None:
            if T > self.config.block_size:
                raise ValueError(f"sequence of {T} tokens exceeds block_size {self.config.block_size}")
            cos, sin = self.cos[:T].to(dtype), self.sin[:T].to(dtype)
        else:
            n_new = torch.full((B,), T, device=idx.device) if n_new is None else n_new
            positions, slots, end = kv_cache.slots(n_new, T)
            if end > self.config.block_size:
                raise ValueError(f"sequence of {end} tokens exceeds block_size {self.config.block_size}")
            at = positions.clamp_max(self.config.block_size - 1)  # padding may point past the end
            cos, sin = self.cos[at][:, None].to(dtype), self.sin[at][:, None].to(dtype)  # (B, 1, T, D/2)
            mask = torch.arange(end, device=idx.device) <= positions[:, :, None]  # query at p sees keys 0..p
            cache = (kv_cache, slots, end, mask[:, None])
        x = self.wte(idx)
        for block in self.blocks:
            x = block(x, cos, sin, cache)
        if kv_cache is not None:
            kv_cache.lengths += n_new
        logits = F.linear(self.ln_f(x), self.wte.weight)  # tied output embedding, (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)
        return logits, loss


# ----------------------------------------------------------------------------------------------------------------
# log-probs: the quantities every algorithm computes from logits


def token_logprobs(logits, idx):
    """log π(idx[:, t] | idx[:, :t]) for every t, aligned with idx: (B, T), position 0 set to 0 (nothing predicts it).

    Every ratio in the paper (π^T_θ / π^T_old in Eq. 2, π^S_θ / sg π^T_old in Eq. 3, π^S_θ / π^S_old in Eq. 5) is an
    exp of differences of these. Aligned with idx so that a rollout's mask (1 = sampled by the policy) selects them.
    """
    logits = logits[:, :-1].float()  # (B, T-1, V): position t predicts token t+1
    picked = logits.gather(-1, idx[:, 1:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return F.pad(picked, (1, 0))


def vocab_logprobs(logits, mask):
    """The full-vocabulary log-softmax that predicted each token where mask == 1: (N, V), N = mask.sum().

    For the exact KL terms (Σ_v p(v) log p(v)/q(v)). The teacher and student contexts differ only by the PI line,
    so selecting each view's agent tokens by its own mask gives rows that correspond one to one.
    """
    picked = logits[:, :-1][mask[:, 1:].bool()]  # (N, V): the logits at t-1 predict the token at t
    return F.log_softmax(picked.float(), dim=-1)


def kl_div(logp_p, logp_q):
    """KL(p ‖ q) = Σ_v p(v) (log p(v) − log q(v)), exact over the vocabulary, one value per row: (N, V) x2 -> (N,).

    The direction is the argument order. π-Distill's penalty is KL(π^T ‖ π^S) = kl_div(teacher, student) (Eq. 2, 3);
    OPSD's is the reverse, KL(π^S ‖ π^T) = kl_div(student, teacher) (Eq. 5). Detach whichever side is `sg`."""
    return (logp_p.exp() * (logp_p - logp_q)).sum(-1)


# ----------------------------------------------------------------------------------------------------------------
# checkpoints


class CheckpointError(Exception):
    """A checkpoint that is missing or unreadable; the message is one line naming the path."""


def save_checkpoint(path, model, **extra):
    """Write {config, model, **extra} atomically: a temp file beside `path`, then a rename over it.

    A run killed mid-write leaves the previous checkpoint intact. `extra` holds what a run needs to resume
    (optimizer state, step, RNG states, the run's own config as a dict).
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    if {"config", "model"} & set(extra):
        raise ValueError("'config' and 'model' are the checkpoint's own keys; name the extra state otherwise")
    torch.save({"config": asdict(model.config), "model": model.state_dict(), **extra}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, device="cpu"):
    """-> (model on `device`, the checkpoint dict). Raises CheckpointError with a one-line message on any failure."""
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        model = GPT(GPTConfig(**ckpt["config"]))
        model.load_state_dict(ckpt["model"])
    except Exception as e:  # truncated zip, wrong pickle, missing keys, shape mismatch: all one message
        reason = (str(e).strip().splitlines() or [""])[0].split(". ")[0][:120]  # torch's first sentence at most
        raise CheckpointError(f"cannot load checkpoint {path}: {type(e).__name__}: {reason}") from None
    return model.to(device), ckpt
