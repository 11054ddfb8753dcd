"""SFT on the expert's transcripts (with or without its chain of thought), then GRPO on the student view.

    python sft_rl_baseline.py --cot=1                  # SFT w/ CoT + RL: the industry-standard baseline
    python sft_rl_baseline.py --cot=0 --rl_steps=0     # SFT w/o CoT alone
    python sft_rl_baseline.py --sft_steps=0            # plain RL (GRPO from the base model)

PAPER.md §4. SFT: next-token loss on the agent's tokens of expert episodes of the first `n_expert` training seeds
(the same seeds, and the same expert budget, whose PI the other methods use); with --cot=1 the expert's reasoning
(`<|think|> … <|/think|>`) is part of the target, so the model writes its own at test time. GRPO (grpo.py): K
student-view rollouts per task at the algorithms' temperature, group-centred advantages without the std,
all-zero groups dropped, clipped token-level ratio, several gradient steps per round, no KL to the base.

Every evaluation is the student view on held-out seeds, greedy. Logs: one line per step and out/<run>/log.jsonl;
checkpoints at each evaluation (out/<run>/ckpt.pt, --resume continues). The last line is a JSON summary.
"""

import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass

import torch

import tokenizer as tk
from config import parse_args
from env import TEST_SEEDS, TRAIN_SEEDS, expert_act, make, render
from eval import evaluate
from grpo import clipped_surrogate, entropy, group_advantages, informative_groups
from model import CheckpointError, load_checkpoint, pick_device, save_checkpoint, token_logprobs
from pretrain import collate, encode_pieces, ensure_base, transcript_pieces
from rollout import play


@dataclass
class Config:
    env: str = "toy_shop"
    level: str = "L2"
    init: str = ""  # starting checkpoint; default: the env's base model
    cot: bool = False  # SFT targets include the expert's chain of thought
    n_expert: int = 2000  # training seeds with an expert transcript; GRPO samples its tasks from the same seeds
    sft_steps: int = 600
    sft_batch: int = 32
    sft_lr: float = 1e-3
    rl_steps: int = 100  # GRPO rounds
    tasks: int = 16  # tasks per round
    k: int = 4  # rollouts per task
    temperature: float = 0.75
    rl_lr: float = 2e-4
    grad_steps: int = 2  # gradient steps per round on the same rollouts
    clip: float = 0.2  # ratio clip range [1 - clip, 1 + clip]
    eval_every: int = 100  # steps (SFT) / rounds (RL) between held-out evaluations
    eval_n: int = 200  # held-out episodes per periodic evaluation
    final_n: int = 500  # held-out episodes for the final number
    run: str = ""  # out/<run>/; default from the options
    resume: bool = False
    device: str = "auto"
    seed: int = 0


def expert_data(cfg):
    """(ids, loss flags) of one expert episode per seed of the first n_expert training seeds, student view."""
    env, data = make(cfg.env, cfg.level), []
    for seed in TRAIN_SEEDS[: cfg.n_expert]:
        env.reset(seed)
        done = False
        while not done:
            _, _, done, _ = env.step(expert_act(render(env.history), cot=cfg.cot))
        data.append(encode_pieces(transcript_pieces(env.history)))
    return data


def grpo_round(model, opt, cfg, seeds, generator):
    """One round: sample K episodes per task, centre rewards per group, take grad_steps clipped-surrogate steps."""
    t0 = time.time()
    model.eval()
    played = play(model, seeds, cfg.k, level=cfg.level, temperature=cfg.temperature, generator=generator)
    model.train()
    ep = played.episodes
    adv = group_advantages(played.rewards.view(len(seeds), cfg.k))  # (G, K)
    keep = informative_groups(adv).repeat_interleave(cfg.k)  # (B,)
    stats = {"reward": played.rewards.mean().item(), "zero_adv": 1 - keep.float().mean().item(),
             "len": ep.lengths.float().mean().item(), "tok_s": ep.mask.sum().item() / (time.time() - t0)}
    if keep.any():
        T = ep.lengths[keep].max()
        ids, mask, logp_old = ep.ids[keep, :T], ep.mask[keep, :T].float(), ep.logp[keep, :T]
        a = adv.flatten()[keep]
        device = next(model.parameters()).device
        ids, mask, logp_old, a = ids.to(device), mask.to(device), logp_old.to(device), a.to(device)
        for _ in range(cfg.grad_steps):
            logits, _ = model(ids)
            logp = token_logprobs(logits / cfg.temperature, ids)
            loss = clipped_surrogate(logp, logp_old, a, mask, cfg.clip)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        stats.update(loss=loss.item(), entropy=entropy(logits.detach(), mask))
    return stats, played


def show_episode(played, row=0):
    """One decoded episode; the tokens the policy sampled are in [brackets], the rest was forced."""
    ep, out = played.episodes, ""
    for t, m in zip(ep.ids[row, : ep.lengths[row]].tolist(), ep.mask[row, : ep.lengths[row]].tolist()):
        out += f"[{tk.decode([t])}]" if m else tk.decode([t])
    return out.replace("][", "")


def main(argv=None):
    cfg = parse_args(Config(), argv)
    cfg.run = cfg.run or f"sft{'_cot' if cfg.cot else ''}_{cfg.sft_steps}_rl_{cfg.rl_steps}_n{cfg.n_expert}_s{cfg.seed}"
    out_dir = os.path.join("out", cfg.run)
    ckpt_path = os.path.join(out_dir, "ckpt.pt")
    device = pick_device(cfg.device)
    try:
        make(cfg.env, cfg.level)
        start = ckpt_path if cfg.resume else (cfg.init or ensure_base(cfg.env))
        model, ckpt = load_checkpoint(start, device)
    except (ValueError, CheckpointError) as e:
        sys.exit(f"error: {e}")
    print(json.dumps(asdict(cfg)))
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(asdict(cfg), f, indent=1)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    sft_opt = torch.optim.AdamW(model.parameters(), lr=cfg.sft_lr, weight_decay=0.0)
    rl_opt = torch.optim.AdamW(model.parameters(), lr=cfg.rl_lr, weight_decay=0.0, betas=(0.9, 0.99))
    phase, step = "sft", 0
    if cfg.resume:
        phase, step = ckpt["phase"], ckpt["step"]
        sft_opt.load_state_dict(ckpt["sft_opt"])
        rl_opt.load_state_dict(ckpt["rl_opt"])
        rng.setstate(ckpt["rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        print(f"resumed {ckpt_path} at {phase} step {step}")
    log = open(os.path.join(out_dir, "log.jsonl"), "a")
    test = list(TEST_SEEDS)
    t_start = time.time()

    def checkpoint_and_eval(row):
        model.eval()
        row["heldout_success"] = evaluate(model, test[: cfg.eval_n], level=cfg.level, batch=128)["success"]
        model.train()
        save_checkpoint(ckpt_path, model, phase=phase, step=step, config=asdict(cfg), sft_opt=sft_opt.state_dict(),
                        rl_opt=rl_opt.state_dict(), rng=rng.getstate(), torch_rng=torch.get_rng_state())
        return row

    def emit(row):
        row = {"phase": phase, "step": step, **{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()},
               "elapsed_s": round(time.time() - t_start, 1)}
        log.write(json.dumps(row) + "\n")
        log.flush()
        print(" | ".join(f"{k} {v}" for k, v in row.items()))

    model.train()
    if phase == "sft" and cfg.sft_steps > step:
        data = expert_data(cfg)
        n_tok = sum(sum(f) for _, f in data)
        print(f"SFT on {len(data)} expert episodes ({'with' if cfg.cot else 'without'} CoT), {n_tok:,} target tokens")
        while step < cfg.sft_steps:
            t0 = time.time()
            x, y = collate(rng.choices(data, k=cfg.sft_batch), device)
            _, loss = model(x, y)
            sft_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            sft_opt.step()
            step += 1
            row = {"loss": loss.item(), "tok_s": x.numel() / (time.time() - t0)}
            if step % cfg.eval_every == 0 or step == cfg.sft_steps:
                emit(checkpoint_and_eval(row))
            elif step % 10 == 0:
                emit(row)
    if phase == "sft":
        phase, step = "rl", 0
    pool = list(TRAIN_SEEDS[: cfg.n_expert])
    while step < cfg.rl_steps:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        stats, played = grpo_round(model, rl_opt, cfg, rng.sample(pool, cfg.tasks), g)
        step += 1
        if step % cfg.eval_every == 0 or step == cfg.rl_steps:
            emit(checkpoint_and_eval(stats))
            print(show_episode(played))
        else:
            emit(stats)
    model.eval()
    final = evaluate(model, test[: cfg.final_n], level=cfg.level, batch=128)
    save_checkpoint(ckpt_path, model, phase="done", step=step, config=asdict(cfg), sft_opt=sft_opt.state_dict(),
                    rl_opt=rl_opt.state_dict(), rng=rng.getstate(), torch_rng=torch.get_rng_state())
    summary = {"run": cfg.run, "heldout_success": final["success"], "protocol_errors": final["protocol_errors"],
               "n": cfg.final_n, "wall_clock_s": round(time.time() - t_start, 1), "checkpoint": ckpt_path}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
