"""eval.py end to end on a tiny untrained checkpoint, its error messages, and the scripted floor and ceiling."""

import json
import subprocess
import sys
from pathlib import Path

import torch

import tokenizer as tk
from env import TEST_SEEDS
from eval import scripted_success
from model import GPT, GPTConfig, save_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    return subprocess.run([sys.executable, "eval.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_eval_json_on_a_tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(str(ckpt), GPT(GPTConfig(vocab_size=tk.get_tokenizer().n_vocab, block_size=256, n_layer=1,
                                             n_head=2, n_embd=16)))
    out = run(f"--ckpt={ckpt}", "--n=6", "--pi=full,key", "--json=1")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["student_greedy"] == 0.0 and res["expert"] == 1.0
    for key in ["student_sampled", "protocol_errors_greedy", "teacher_full", "delta_key", "kl_full", "random"]:
        assert key in res


def test_eval_errors_are_one_line(tmp_path):
    out = run(f"--ckpt={tmp_path / 'missing.pt'}")
    assert out.returncode != 0 and out.stderr.strip() == f"error: no checkpoint at {tmp_path / 'missing.pt'}"
    out = run("--pi=secret")
    assert "unknown PI form 'secret'" in out.stderr and "Traceback" not in out.stderr
    out = run("--env=toy_zoo")
    assert "unknown env 'toy_zoo'" in out.stderr and "Traceback" not in out.stderr
    out = run("--n=ten")
    assert "--n='ten' is not a valid int" in out.stderr


def test_scripted_floor_and_ceiling():
    seeds = list(TEST_SEEDS[:300])
    assert scripted_success(seeds, "L2", "expert") == 1.0
    assert 0.03 < scripted_success(seeds, "L2", "random") <= 0.30  # G3: nothing shallow beats 30%
