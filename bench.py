"""Benchmark the hot path on this machine: matmul peak, training throughput (MFU), and sampling speed.

    python bench.py                  # tiny and small presets, ~4 minutes on a 2-core CPU (the plain generator is
                                     # the slow part: it re-encodes the whole sequence at every step)
    python bench.py --plain=0        # skip the plain generator
    python bench.py --quick=1        # toy sizes, seconds: the test suite runs this so the script cannot rot

What is measured, in one run so that every fraction is of the same machine's peak:
- matmul_gflops: fp32 square matmuls of size matmul_n, the best of a few repeats.
- train: forward + backward + AdamW on random tokens (B x T = train_batch x seq_len); tokens/s and MFU.
  FLOPs per token = 6·N (N = all parameters; the tied embedding counts once, as the output matmul) plus causal
  attention 6·n_layer·n_embd·T (QKᵀ and AV, forward and backward, half of the T x T square).
- sample: the KV-cache sampler (rollout.generate) and the plain generator, sample_batch rows of sample_len tokens
  after a prompt_len prompt, temperature 1; sampled tokens/s and the speedup of the cache.
The last printed line is one JSON object with every number.
"""

import json
import time
from dataclasses import asdict, dataclass

import torch

from config import parse_args
from model import GPT, GPTConfig
from rollout import generate, generate_plain


@dataclass
class BenchConfig:
    presets: str = "tiny,small"  # comma-separated model presets
    vocab_size: int = 768  # about the toy_shop tokenizer's size
    matmul_n: int = 2048  # side of the square matmuls that set the peak
    train_batch: int = 16  # rows per training step
    seq_len: int = 256  # tokens per row (an episode with CoT is ~150-210 tokens)
    train_steps: int = 6  # timed steps, after 2 warm-up steps
    sample_batch: int = 64  # rows sampled in lockstep (B = 64, as the algorithms sample)
    sample_len: int = 256  # total sequence length of each sampled row
    prompt_len: int = 8  # forced prompt tokens before sampling starts
    plain: bool = True  # also time the plain (no-cache) generator
    quick: bool = False  # toy sizes, for the test suite
    seed: int = 0  # seeds the random weights and tokens


def timed(fn, repeats):
    """Seconds per call of fn, the best of `repeats` calls after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_gflops(n):
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / timed(lambda: a @ b, 5) / 1e9


def train_throughput(model, cfg):
    """-> (tokens/s, GFLOP/s) of full training steps on random tokens."""
    B, T, V = cfg.train_batch, cfg.seq_len, model.config.vocab_size
    x, y = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(cfg.train_steps):
        step()
    dt = (time.perf_counter() - t0) / cfg.train_steps
    c = model.config
    flops_per_token = 6 * model.num_params() + 6 * c.n_layer * c.n_embd * T
    return B * T / dt, flops_per_token * B * T / dt / 1e9


def sample_throughput(model, cfg, sampler):
    """Sampled tokens/s for sample_batch rows grown to sample_len tokens (forced prompt excluded)."""
    prompts = torch.randint(0, model.config.vocab_size, (cfg.sample_batch, cfg.prompt_len)).tolist()
    g = torch.Generator().manual_seed(cfg.seed)
    t0 = time.perf_counter()
    episodes = sampler(model, prompts, max_len=cfg.sample_len, temperature=1.0, generator=g)
    return episodes.mask.sum().item() / (time.perf_counter() - t0)


def main(argv=None):
    cfg = parse_args(BenchConfig(), argv)
    if cfg.quick:
        cfg.matmul_n, cfg.train_batch, cfg.seq_len, cfg.train_steps = 256, 2, 32, 1
        cfg.sample_batch, cfg.sample_len = 4, 24
    torch.manual_seed(cfg.seed)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads | " + " ".join(f"{k}={v}" for k, v in asdict(cfg).items()))
    result = {"threads": torch.get_num_threads(), "matmul_gflops": round(matmul_gflops(cfg.matmul_n), 1)}
    print(f"matmul peak (fp32, n={cfg.matmul_n}): {result['matmul_gflops']:.1f} GFLOP/s")
    for preset in cfg.presets.split(","):
        overrides = dict(vocab_size=cfg.vocab_size, block_size=max(cfg.seq_len, cfg.sample_len))
        if cfg.quick:
            overrides.update(n_layer=2, n_head=2, n_embd=32)
        model = GPT(GPTConfig.preset(preset, **overrides))
        tok_s, gflops = train_throughput(model, cfg)
        result[f"params_{preset}"] = model.num_params()
        result[f"train_tok_s_{preset}"] = round(tok_s)
        result[f"train_mfu_{preset}"] = round(gflops / result["matmul_gflops"], 3)
        print(f"{preset} ({model.num_params() / 1e6:.2f}M params) train: {tok_s:,.0f} tok/s, {gflops:.1f} GFLOP/s "
              f"= {100 * result[f'train_mfu_{preset}']:.0f}% of matmul peak")
        model.eval()
        result[f"sample_tok_s_{preset}"] = round(sample_throughput(model, cfg, generate))
        line = f"{preset} sample B={cfg.sample_batch} T={cfg.sample_len}: kv-cache {result[f'sample_tok_s_{preset}']:,} tok/s"
        if cfg.plain:
            result[f"plain_tok_s_{preset}"] = round(sample_throughput(model, cfg, generate_plain))
            result[f"kv_speedup_{preset}"] = round(result[f"sample_tok_s_{preset}"] / result[f"plain_tok_s_{preset}"], 1)
            line += f", plain {result[f'plain_tok_s_{preset}']:,} tok/s, speedup {result[f'kv_speedup_{preset}']}x"
        print(line)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
