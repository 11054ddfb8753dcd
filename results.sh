#!/usr/bin/env bash
# Every run behind the README's results table, then the table itself (about 3½ hours on a 2-core CPU: each run is
# minutes, two run side by side with one thread each; rebuild only the table: python eval.py --table=1), then the
# README's learning curves: SFT for 100 / 200 / 500 / 2,000 / 8,000 expert episodes with and without CoT, SFT w/o
# CoT for 15-20 minutes (about 2 more hours), and π-Distill's curves. The base model itself: python pretrain.py
# (two runs, about 2 hours). Start with no out/ folder (a fresh clone, or move the old one away): a run refuses a
# folder that already holds one.
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
pair python pi_distill.py --pi_coverage=0                          # π-Distill's script without PI: plain GRPO
python sft_rl_baseline.py --cot=0                                  # SFT w/o CoT + RL
wait
python eval.py --table=1

for n in 100 200 500 2000 8000; do                                 # SFT learning curves (README: the base model)
  pair python sft_rl_baseline.py --cot=0 --n_expert=$n --sft_steps=800 --rl_steps=0 --eval_every=100 --sft_lr_end=0.1 --run=curve_n${n}_cot0
  python sft_rl_baseline.py --cot=1 --n_expert=$n --sft_steps=800 --rl_steps=0 --eval_every=100 --sft_lr_end=0.1 --run=curve_n${n}_cot1
  wait
done
python eval.py --curves="out/curve_*" --readme="sft curves"
pair python sft_rl_baseline.py --cot=0 --n_expert=8000 --sft_steps=2400 --rl_steps=0 --eval_every=200 --sft_lr_end=0.1 --run=sft_n8000_2400
python sft_rl_baseline.py --cot=0 --n_expert=16000 --sft_steps=2400 --rl_steps=0 --eval_every=400 --sft_lr_end=0.1 --run=sft_n16000_2400
wait                                                               # gate G4: SFT w/o CoT given 15-20 minutes
python sft_rl_baseline.py --cot=0 --n_expert=16000 --sft_steps=3000 --rl_steps=0 --eval_every=500 --sft_lr_end=0.1 --run=sft_n16000_3000
for seed in 1 2; do                                                # G4's 16,000 / 2,400 run, two more seeds
  pair python sft_rl_baseline.py --cot=0 --n_expert=16000 --sft_steps=2400 --rl_steps=0 --eval_every=400 --sft_lr_end=0.1 --seed=$seed --run=sft_n16000_2400_s$seed
done
wait
python eval.py --curves="out/sft_n*" --readme="sft long"
python eval.py --table=1
python eval.py --curves="out/pi_distill_full_*" --readme="pi-distill curves"
