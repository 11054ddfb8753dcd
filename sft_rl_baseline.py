"""SFT on the expert's transcripts (with or without its chain of thought), then GRPO on the student view: the
paper's baselines.

    python sft_rl_baseline.py --cot 1                  # SFT w/ CoT + RL: the industry-standard baseline
    python sft_rl_baseline.py --cot 0 --rl_steps 0     # SFT w/o CoT alone
    python sft_rl_baseline.py --sft_steps 0            # plain RL (GRPO from the base model)

SFT: next-token loss on the agent's tokens of one expert episode per training seed of the first `n_expert` (the same
seeds, and the same expert budget, whose PI the other methods use), AdamW at `sft_lr`, decayed along a cosine to
`sft_lr_end` of it by the last step (1: a constant rate). With --cot 1 the expert's reasoning (`<|think|> …
<|/think|>`, env.expert_act's `draft` style by default) is part of the target, so the model writes its own at test
time; the two delimiters, which the base never saw, start at the mean embedding of the episodes' tokens
(init_think_tokens; a deviation, docs/deviations.md). GRPO (grpo.py): K student-view rollouts per task, group-centred
advantages without the std, all-zero groups dropped, clipped token-level ratio normalised by the round's agent
tokens, several gradient steps per round, no KL to the base.

Every evaluation is the student view on held-out seeds, greedy. Logs, checkpoints and --resume: run.py.
"""

import math
import sys
import time
from dataclasses import dataclass

import torch

import tokenizer as tk
from config import label, parse_args
from env import COT_STYLES, TEST_SEEDS, TRAIN_SEEDS, expert_act, make, render
from eval import evaluate, transfer
from grpo import centred_advantages, clipped_surrogate, entropy, update
from model import token_logprobs
from rollout import TEMPERATURE, play, show_episode, trimmed
from run import Run, RunConfig
from transcripts import collate, encode_pieces, transcript_pieces


@dataclass
class Config(RunConfig):
    cot: bool = False  # SFT targets include the expert's chain of thought
    cot_style: str = "draft"  # with --cot 1: draft (the write first, then its row checked) | list (every candidate)
    think_init: bool = True  # with --cot 1: both delimiters start at the mean embedding (0: as loaded)
    n_expert: int = 2000  # training seeds with an expert transcript; GRPO samples its tasks from the same seeds
    sft_steps: int = 600  # SFT optimizer steps (0: no SFT)
    sft_batch: int = 32  # expert episodes per SFT step
    sft_lr: float = 1e-3  # SFT peak learning rate
    sft_lr_end: float = 1.0  # where SFT's cosine ends, as a fraction of sft_lr (1: a constant rate)
    rl_steps: int = 150  # GRPO rounds (0: no RL)
    tasks: int = 16  # tasks per round
    k: int = 4  # rollouts per task (the group size)
    rl_lr: float = 2e-4  # GRPO learning rate
    grad_steps: int = 2  # gradient steps per round on the same rollouts


def expert_data(cfg):
    """(ids, loss flags) of one expert episode per seed of the first n_expert training seeds, student view."""
    env, data = make(cfg.env, cfg.level), []
    for seed in TRAIN_SEEDS[: cfg.n_expert]:
        env.reset(seed)
        done = False
        while not done:
            _, _, done, _ = env.step(expert_act(render(env.history), cot=cfg.cot, style=cfg.cot_style))
        data.append(encode_pieces(transcript_pieces(env.history)))
    return data


@torch.no_grad()
def init_think_tokens(model, data):
    """Start `<|think|>` and `<|/think|>` at the mean embedding of the tokens of the expert episodes `data`.

    Not in the paper, whose model knows its reasoning delimiters. Our base never saw them (pretraining has no chain
    of thought): their rows of the tied embedding are still at their random init, about 2.4 in norm against about
    0.9 for the tokens it learned. The mean embedding is the usual start for a token added to a pretrained model
    (docs/experiments.md, "Chain-of-thought styles")."""
    delimiters = [tk.special("<|think|>"), tk.special("<|/think|>")]
    seen = sorted({t for ids, _ in data for t in ids} - set(delimiters))
    w = model.wte.weight
    w[delimiters] = w[seen].mean(0)


def grpo_round(model, opt, cfg, seeds, generator):
    """One round: sample K episodes per task, centre rewards per group, take grad_steps clipped-surrogate steps."""
    t0 = time.time()
    model.eval()
    played = play(model, seeds, cfg.k, level=cfg.level, temperature=TEMPERATURE, generator=generator)
    model.train()
    ep = played.episodes
    adv, keep = centred_advantages(played.rewards, cfg.k)  # (B,), (B,)
    stats = {"success": played.rewards.mean().item(), "zero_adv": 1 - keep.float().mean().item(),
             "len": ep.lengths.float().mean().item(), "tok_s": ep.mask.sum().item() / (time.time() - t0)}
    if keep.any():
        device = next(model.parameters()).device
        (ids, mask, logp_old), a = trimmed(ep, device, keep), adv[keep].to(device)  # the informative groups
        n_tokens = ep.mask.sum().item()  # the round's agent tokens, dropped groups included (every script's rule)
        for _ in range(cfg.grad_steps):
            logits, _ = model(ids)
            loss = clipped_surrogate(token_logprobs(logits / TEMPERATURE, ids), logp_old, a, mask, n_tokens=n_tokens)
            update(model, opt, loss)
        stats.update(loss=loss.item(), entropy=entropy(logits.detach(), mask))
    return stats, played


def main(argv=None):
    cfg = parse_args(Config(), argv)
    if cfg.cot_style not in COT_STYLES:
        sys.exit(f"error: --cot_style must be one of {', '.join(COT_STYLES)}, not {cfg.cot_style!r}")
    run = Run(cfg, "sft_rl")
    model, ckpt = run.load_model()
    opts = {"sft_opt": torch.optim.AdamW(model.parameters(), lr=cfg.sft_lr, weight_decay=0.0),
            "rl_opt": torch.optim.AdamW(model.parameters(), lr=cfg.rl_lr, weight_decay=0.0, betas=(0.9, 0.99))}
    phase, step = run.restore(ckpt, opts) if cfg.resume else ("sft", 0)
    test, rng = list(TEST_SEEDS), run.rng

    def evaluate_and_save(row):
        model.eval()
        r = evaluate(model, test[: cfg.eval_n], level=cfg.level)
        row.update(heldout_success=r["success"], **{f"buy_{k}": v for k, v in r["buy"].items()})
        model.train()
        run.save(model, opts, phase, step)
        run.log(phase, step, row)

    model.train()
    if phase == "sft" and cfg.sft_steps > step:
        data = expert_data(cfg)
        if cfg.cot and cfg.think_init and step == 0:  # also on an --init checkpoint: --think_init=0 keeps its rows
            init_think_tokens(model, data)
            print("<|think|> and <|/think|> start at the mean embedding of the episodes' tokens "
                  "(--think_init=0: as loaded)")
        n_tok = sum(sum(f) for _, f in data)
        print(f"SFT on {len(data)} expert episodes ({'with' if cfg.cot else 'without'} CoT), {n_tok:,} target tokens")
        while step < cfg.sft_steps:
            t0 = time.time()
            x, y = collate(rng.choices(data, k=cfg.sft_batch), run.device)
            for group in opts["sft_opt"].param_groups:
                cosine = (1 + math.cos(math.pi * step / cfg.sft_steps)) / 2  # 1 → 0 over the SFT steps
                group["lr"] = cfg.sft_lr * (cfg.sft_lr_end + (1 - cfg.sft_lr_end) * cosine)
            _, loss = model(x, y)
            update(model, opts["sft_opt"], loss)
            step += 1
            row = {"loss": loss.item(), "tok_s": x.numel() / (time.time() - t0)}
            if step % cfg.eval_every == 0 or step == cfg.sft_steps:
                evaluate_and_save(row)
            elif step % 10 == 0:
                run.log(phase, step, row)
    if phase == "sft":
        phase, step = "rl", 0
    pool = list(TRAIN_SEEDS[: cfg.n_expert])
    while phase == "rl" and step < cfg.rl_steps:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        stats, played = grpo_round(model, opts["rl_opt"], cfg, rng.sample(pool, cfg.tasks), g)
        step += 1
        if step % cfg.eval_every == 0 or step == cfg.rl_steps:
            evaluate_and_save(stats)
            print(show_episode(played))
        else:
            run.log(phase, step, stats)
    model.eval()
    final = evaluate(model, test[: cfg.final_n], level=cfg.level)
    run.save(model, opts, "done", step)
    sft = f"SFT w/{'' if cfg.cot else 'o'} CoT" if cfg.sft_steps else ""
    method = " + ".join(x for x in (sft, "RL" if cfg.rl_steps else "") if x) or "base"
    named = ["cot"] + [k for k in ("sft_steps", "rl_steps") if getattr(cfg, k) == 0]  # what the name already says
    method = label(method, cfg, named)
    return run.finish(method, heldout_success=final["success"], protocol_errors=final["protocol_errors"],
                      n=cfg.final_n, **transfer(model, cfg.final_n))


if __name__ == "__main__":
    main()
