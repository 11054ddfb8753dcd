#!/usr/bin/env bash
# Every run behind the README's results table, then the table itself. About 2 hours on a 2-core CPU (each run is minutes;
# two run side by side with one thread each). Rebuild only the table: python eval.py --table=1
set -euo pipefail
cd "$(dirname "$0")"
export OMP_NUM_THREADS=1
pair() { "$@" & }
for seed in 0 1 2; do
  pair python pi_distill.py --seed=$seed                           # π-Distill α=0.5 (default)
  python sft_rl_baseline.py --sft_steps=0 --seed=$seed             # RL
  wait
  pair python sft_rl_baseline.py --cot=1 --seed=$seed              # SFT w/ CoT + RL
  python opsd.py --seed=$seed                                      # OPSD
  wait
done
pair python pi_distill.py --alpha=0                                # π-Distill α=0
python pi_distill.py --alpha=1                                     # π-Distill α=1
wait
pair python sft_rl_baseline.py --cot=1 --rl_steps=0                # SFT w/ CoT
python sft_rl_baseline.py --cot=0 --rl_steps=0                     # SFT w/o CoT
wait
python sft_rl_baseline.py --cot=0                                  # SFT w/o CoT + RL
python eval.py --table=1
