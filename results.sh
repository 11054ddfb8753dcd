#!/usr/bin/env bash
# Every run behind the results tables (docs/results.md and the README's rows), then the tables themselves: about 5
# hours on a 2-core CPU, two runs side by side with one thread each. Rebuild only the tables from the shipped
# summaries: python report.py. Start with no out/ folder (a fresh clone, or move the old one away): a run refuses a
# folder that already holds one. The base model itself: python pretrain.py (two runs, about 2 hours).
set -euo pipefail
cd "$(dirname "$0")"
export OMP_NUM_THREADS=1
for seed in 0 1 2; do
  python pi_distill.py --seed $seed &                              # π-Distill α=0 (the main command)
  python sft_rl_baseline.py --sft_steps 0 --seed $seed             # RL
  wait
  python sft_rl_baseline.py --cot 1 --seed $seed &                 # SFT w/ CoT + RL
  python sft_rl_baseline.py --cot 0 --seed $seed                   # SFT w/o CoT + RL
  wait
  python sft_rl_baseline.py --cot 1 --rl_steps 0 --seed $seed &    # SFT w/ CoT
  python sft_rl_baseline.py --cot 0 --rl_steps 0 --seed $seed      # SFT w/o CoT
  wait
  python pi_distill.py --alpha 1 --seed $seed &                    # π-Distill α=1
  python opsd.py --seed $seed                                      # OPSD (frozen teacher)
  wait
  python pi_distill.py --alpha 0.5 --seed $seed &                  # π-Distill α=0.5 (the paper's joint training)
  python pi_distill.py --pi_coverage 0 --steps 400 --tasks 16 --k 4 --lr 1e-4 --seed $seed  # plain GRPO
  wait
  python pi_distill.py --steps 400 --tasks 16 --k 4 --lr 1e-4 --seed $seed &  # α=0 at the shared teacher's settings
  python opsd.py --teacher shared --lr 2e-4 --seed $seed           # OPSD on the shared network (collapses)
  wait
  python pi_distill.py --alpha 0 --teacher shared --seed $seed     # α=0 on the shared network (collapses; ~35 min)
done
python report.py --collect out
