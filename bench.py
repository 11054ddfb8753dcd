"""Benchmark the hot path on this machine: matmul peak, training throughput (MFU), and sampling speed.

    python bench.py                  # tiny and small presets, ~4 minutes on a 2-core CPU (the plain generator is
                                     # the slow part: it re-encodes the whole sequence at every step)
    python bench.py --plain=0        # skip the plain generator
    python bench.py --quick=1        # toy sizes, seconds: the test suite runs this so the script cannot rot
    python bench.py --presets= --plain=0     # the π-Distill round alone (~1 minute)

What is measured, in one run so that every fraction is of the same machine's peak:
- matmul_gflops: fp32 square matmuls of size matmul_n, the best of a few repeats.
- train: forward + backward + AdamW on random tokens (B x T = train_batch x seq_len); tokens/s and MFU.
  FLOPs per token = 6·N (N = all parameters; the tied embedding counts once, as the output matmul) plus causal
  attention 6·n_layer·n_embd·T (QKᵀ and AV, forward and backward, half of the T x T square).
- sample: the KV-cache sampler (rollout.generate) and the plain generator, sample_batch rows of sample_len tokens
  after a prompt_len prompt, temperature 1; sampled tokens/s and the speedup of the cache.
- round: `rounds` default π-Distill rounds (pi_distill.distill_round) from the shipped base, and one periodic
  evaluation; seconds per round and the share of each part — sampling the teacher's episodes (env stepping apart),
  the KL scoring (the student view's pass; the teacher's distributions come from the sampler), the loss's forward
  passes, backward and optimizer, the rest — and the default run's estimated wall-clock (its rounds, its periodic
  evaluations and the final one). Every later speed change is measured on it.
The last printed line is one JSON object with every number.
"""

import collections
import json
import random
import time
from dataclasses import asdict, dataclass

import torch

import env
import eval as E
import pi_distill
import tokenizer as tk
from config import parse_args
from model import GPT, GPTConfig, load_checkpoint
from rollout import TEMPERATURE, generate, generate_plain
from run import base_checkpoint, pi_tasks


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
    rounds: int = 10  # default π-Distill rounds timed from the shipped base (0: skip)
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


class Stopwatch:
    """Seconds spent inside wrapped functions, by name; `wrap` replaces owner.attr by a timed call of it."""

    def __init__(self):
        self.seconds, self.undo = collections.defaultdict(float), []

    def wrap(self, owner, attr, name):
        fn = getattr(owner, attr)

        def timed_call(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t0

        self.undo.append((owner, attr, fn))
        setattr(owner, attr, timed_call)

    def restore(self):
        for owner, attr, fn in reversed(self.undo):
            setattr(owner, attr, fn)


def round_profile(model, cfg):
    """Seconds per default π-Distill round and the share of each part, from `cfg.rounds` rounds; one periodic
    evaluation (eval_n greedy held-out tasks, eval_n / 2 sampled teacher tasks with their PI and with another's); the
    default run's estimated wall-clock."""
    pcfg = pi_distill.resolved(pi_distill.Config(tasks=2, k=2, eval_n=4, final_n=4, steps=10) if cfg.quick
                               else pi_distill.Config())
    pool, with_pi = pi_tasks(pcfg)  # the default run's tasks, as pi_distill.main draws them
    opt = torch.optim.AdamW(model.parameters(), lr=pcfg.lr, weight_decay=0.0, betas=(0.9, 0.99))
    clock, rng = Stopwatch(), random.Random(cfg.seed)
    parts = [(pi_distill, "play", "sample"), (env.ToyShop, "step", "env"), (pi_distill, "kl_teacher_student", "kl"),
             (pi_distill, "distill_loss", "forward"), (pi_distill, "update", "backward")]
    for owner, attr, name in parts:
        clock.wrap(owner, attr, name)
    try:
        t0 = time.perf_counter()
        for step in range(cfg.rounds):
            g = torch.Generator().manual_seed(step)
            pi_distill.distill_round(model, opt, pcfg, rng.sample(pool, pcfg.tasks), with_pi.__contains__, pcfg.alpha,
                                     g)
        total = time.perf_counter() - t0
    finally:
        clock.restore()
    s = clock.seconds
    shares = {"sample": s["sample"] - s["env"], "env": s["env"], "kl": s["kl"], "forward": s["forward"],
              "backward": s["backward"]}
    shares["other"] = total - sum(shares.values())
    model.eval()
    t0 = time.perf_counter()
    E.evaluate(model, list(env.TEST_SEEDS[: pcfg.eval_n]), level=pcfg.level)
    half = list(env.TRAIN_SEEDS[: pcfg.eval_n // 2 + 1])  # the teacher with its own PI and with the next task's
    for pi_seeds in (None, half[1:]):
        E.evaluate(model, half[:-1], pi=pcfg.pi, level=pcfg.level, temperature=TEMPERATURE, pi_seeds=pi_seeds)
    eval_s = time.perf_counter() - t0
    round_s = total / cfg.rounds
    run_s = pcfg.steps * round_s + (pcfg.steps // pcfg.eval_every + pcfg.final_n / pcfg.eval_n) * eval_s
    out = {"round_s": round(round_s, 3), "rounds_per_s": round(1 / round_s, 3), "eval_s": round(eval_s, 2),
           "default_run_s": round(run_s, 1),
           **{f"round_share_{k}": round(v / total, 3) for k, v in shares.items()},
           "eval_share_of_run": round(1 - pcfg.steps * round_s / run_s, 3)}
    print(f"π-Distill round ({cfg.rounds} rounds): {round_s:.2f} s | " + " | ".join(
        f"{k} {100 * v / total:.0f}%" for k, v in shares.items()) + f" | one periodic evaluation {eval_s:.1f} s | the "
        f"default run ≈ {run_s / 60:.1f} min, {100 * out['eval_share_of_run']:.0f}% of it evaluation")
    return out


def main(argv=None):
    cfg = parse_args(BenchConfig(), argv)
    if cfg.quick:
        cfg.matmul_n, cfg.train_batch, cfg.seq_len, cfg.train_steps = 256, 2, 32, 1
        cfg.sample_batch, cfg.sample_len, cfg.rounds = 4, 24, min(cfg.rounds, 2)
    torch.manual_seed(cfg.seed)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads | " + " ".join(f"{k}={v}" for k, v in asdict(cfg).items()))
    result = {"threads": torch.get_num_threads(), "matmul_gflops": round(matmul_gflops(cfg.matmul_n), 1)}
    print(f"matmul peak (fp32, n={cfg.matmul_n}): {result['matmul_gflops']:.1f} GFLOP/s")
    for preset in [p for p in cfg.presets.split(",") if p]:
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
    if cfg.rounds:
        if cfg.quick:
            model = GPT(GPTConfig(vocab_size=tk.get_tokenizer().n_vocab, block_size=256, n_layer=1, n_head=2,
                                  n_embd=16))
        else:
            model = load_checkpoint(base_checkpoint("toy_shop"))[0]
        result.update(round_profile(model, cfg))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
