"""bench.py runs end to end at a toy size, π-Distill rounds included, and ends with its JSON line (no speed is
asserted)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick_runs_and_reports_json():
    out = subprocess.run([sys.executable, "bench.py", "--quick=1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ["matmul_gflops", "train_mfu_small", "train_tok_s_tiny", "sample_tok_s_tiny", "kv_speedup_tiny",
                "round_s", "eval_s", "default_run_s"]:
        assert result[key] > 0, key
    shares = [v for k, v in result.items() if k.startswith("round_share_")]
    assert len(shares) == 6 and abs(sum(shares) - 1) < 0.01  # sampling, env, KL, forward, backward, the rest
