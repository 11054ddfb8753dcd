"""The bookkeeping of one training run, shared by sft_rl_baseline.py, pi_distill.py and opsd.py.

RunConfig holds the options every training script has (where a run starts, where it is written, how it is evaluated);
each script's Config extends it with its algorithm's knobs. A run lives in out/<run>/: config.json (the resolved
options), log.jsonl (one JSON object per logged step, the same keys as the printed line), ckpt.pt (model, optimizer,
phase, step and RNG states, written atomically). --resume continues from ckpt.pt; a finished run resumed only reports
again. Without --resume a folder that already holds a run (a log or a checkpoint) is refused, so a second run never
mixes its log into the first's or overwrites its checkpoint. Nothing here is algorithm-specific.
"""

import json
import os
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import torch

from config import run_name
from env import PI_FORMS, TRAIN_SEEDS, make
from model import CheckpointError, load_checkpoint, pick_device, save_checkpoint

BASE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "base", "{env}.pt")


def base_checkpoint(env):
    """The path of the env's shipped base model; a one-line error naming how to build it when it is missing."""
    path = BASE_PATH.format(env=env)
    if not os.path.isfile(path):
        raise SystemExit(f"error: no base model at {path}; build it with `python pretrain.py --env {env}` "
                         "(two runs, about 2 hours on a 2-core CPU; docs/base_model.md)")
    return path


@dataclass
class RunConfig:
    env: str = "toy_shop"  # the environment
    level: str = "L2"  # the task level (worlds.LEVELS: L1 | L2 | L3)
    init: str = ""  # starting checkpoint; default: the env's base model, base/<env>.pt
    eval_every: int = 50  # rounds (or SFT steps) between held-out evaluations
    eval_n: int = 200  # held-out tasks per periodic evaluation
    final_n: int = 500  # held-out tasks of the final evaluation
    run: str = ""  # the run's folder out/<run>/; default: the script, the options changed from their defaults, seed
    resume: bool = False  # continue out/<run>/ from its last checkpoint
    device: str = "auto"  # auto | cpu | cuda | mps
    seed: int = 0  # seeds task order, sampling and initialisation


class Run:
    """Folder, log and checkpoints of a run (a plain holder of file handles and paths, no training logic)."""

    def __init__(self, cfg, script):
        cfg.run = cfg.run or run_name(script, cfg)
        self.cfg, self.dir = cfg, os.path.join("out", cfg.run)
        self.ckpt_path = os.path.join(self.dir, "ckpt.pt")
        self.t_start = time.time()
        self.rng = random.Random(cfg.seed)
        torch.manual_seed(cfg.seed)

    def load_model(self):
        """-> (model, checkpoint dict). The start is --resume's ckpt.pt, else --init, else the env's base model.
        Any bad input ends the script with one line naming it."""
        try:
            make(self.cfg.env, self.cfg.level)
            start = self.ckpt_path if self.cfg.resume else (self.cfg.init or base_checkpoint(self.cfg.env))
            self.device = pick_device(self.cfg.device)
            model, ckpt = load_checkpoint(start, self.device)
        except (ValueError, CheckpointError) as e:
            sys.exit(f"error: {e}")
        if not self.cfg.resume and any(os.path.exists(os.path.join(self.dir, f)) for f in ("log.jsonl", "ckpt.pt")):
            sys.exit(f"error: {self.dir} already holds a run; --resume 1 continues it, --run NAME starts another "
                     "(or delete the folder)")  # never append to another run's log or overwrite its checkpoint
        print(json.dumps(asdict(self.cfg)))
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, "config.json"), "w") as f:
            json.dump(asdict(self.cfg), f, indent=1)
        self.log_file = open(os.path.join(self.dir, "log.jsonl"), "a")
        return model, ckpt

    def teacher(self, model, kind):
        """The weights that play the teacher view: `model` itself (shared, the paper) or, for `frozen`, a fixed copy
        of the run's start (--init or the base model, also on --resume) that never trains (docs/deviations.md)."""
        if kind == "shared":
            return model
        if kind != "frozen":
            raise SystemExit(f"error: --teacher must be shared or frozen, got {kind!r}")
        start, _ = load_checkpoint(self.cfg.init or base_checkpoint(self.cfg.env), self.device)
        return start.eval().requires_grad_(False)

    def restore(self, ckpt, optimizers):
        """Optimizer and RNG states from a --resume checkpoint: -> (phase, step)."""
        for name, opt in optimizers.items():
            opt.load_state_dict(ckpt[name])
        self.rng.setstate(ckpt["rng"])
        torch.set_rng_state(ckpt["torch_rng"].cpu())  # loaded onto the run's device; the CPU generator wants it back
        self.trim_log(ckpt["phase"], ckpt["step"])
        print(f"resumed {self.ckpt_path} at {ckpt['phase']} step {ckpt['step']}")
        return ckpt["phase"], ckpt["step"]

    def trim_log(self, phase, step):
        """Drop the log rows a run cut off between checkpoints wrote after its last one: the resumed run writes them
        again, and its log is then the uninterrupted run's. The dropped rows are kept in log.cut.jsonl."""
        path = os.path.join(self.dir, "log.jsonl")
        with open(path) as f:
            rows = f.readlines()
        marks = [(r["phase"], r["step"]) for r in map(json.loads, rows)]
        ends = [i for i, mark in enumerate(marks) if mark == (phase, step)]
        if not ends or ends[-1] == len(rows) - 1:
            return
        self.log_file.close()
        with open(os.path.join(self.dir, "log.cut.jsonl"), "a") as f:
            f.writelines(rows[ends[-1] + 1 :])
        with open(path, "w") as f:
            f.writelines(rows[: ends[-1] + 1])
        self.log_file = open(path, "a")

    def save(self, model, optimizers, phase, step):
        save_checkpoint(self.ckpt_path, model, phase=phase, step=step, run_config=asdict(self.cfg),
                        rng=self.rng.getstate(), torch_rng=torch.get_rng_state(),
                        **{name: opt.state_dict() for name, opt in optimizers.items()})

    def log(self, phase, step, row):
        """Print one line `phase rl | step 12 | success 0.31 | …` and append the same keys to log.jsonl."""
        row = {"phase": phase, "step": step, **{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()},
               "elapsed_s": round(time.time() - self.t_start, 1)}
        self.log_file.write(json.dumps(row) + "\n")
        self.log_file.flush()
        print(" | ".join(f"{k} {v}" for k, v in row.items()))

    def finish(self, method, **numbers):
        """The last printed line: one JSON object with the run's result, wall-clock and checkpoint path; also saved
        as out/<run>/summary.json, with the row of the results table it belongs to (`method`), the config, the
        commit the code was at and the torch threads it ran on (what a reader needs to rerun it)."""
        summary = {"run": os.path.basename(self.dir), "method": method, **numbers,
                   "wall_clock_s": round(time.time() - self.t_start, 1), "checkpoint": self.ckpt_path}
        with open(os.path.join(self.dir, "summary.json"), "w") as f:
            json.dump({**summary, "config": asdict(self.cfg), "commit": _commit(),
                       "threads": torch.get_num_threads(), "device": str(self.device)}, f, indent=1)
        print(json.dumps(summary))
        return summary


def _commit():
    """The git commit of the code (with `+` if the tree has changes), or "" outside a git checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+" if head and dirty else "")


def pi_tasks(cfg):
    """The training tasks of pi_distill.py and opsd.py: (pool, the set of those that have PI). PI exists for the
    first pi_coverage * n_tasks of the first n_tasks training seeds (the expert's budget). Bad options end the
    script."""
    if cfg.pi not in PI_FORMS:
        raise SystemExit(f"error: unknown PI form {cfg.pi!r}; valid: {', '.join(PI_FORMS)}")
    if not 0 <= cfg.pi_coverage <= 1:
        raise SystemExit(f"error: --pi_coverage must lie in [0, 1], got {cfg.pi_coverage}")
    pool = list(TRAIN_SEEDS[: cfg.n_tasks])
    return pool, set(pool[: round(cfg.pi_coverage * cfg.n_tasks)])
