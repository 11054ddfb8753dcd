"""The paper's analyses (its §6-8) on toy_shop, one command each: which PI works, teacher-student collapse, β.

    python analysis.py pi_forms --dry_run 1    # the runs it needs, which are done, and the estimated seconds
    python analysis.py pi_forms                # run what is missing (resume what was cut off), then table + figures
    python analysis.py collapse --jobs 2       # two runs at a time, one thread each (the 2-core CPU's best)
    python analysis.py beta --seeds 0,1,2      # more seeds for every cell
    python analysis.py all --runs 0            # only the tables and figures, from the summaries already there

- pi_forms: per PI form (full, tools, key, answer, hint) the base's premise statistics — Δ = teacher success −
  student success on training tasks and both initial KL directions, KL(π^T‖π^S) on the teacher's samples (what
  π-Distill sees) and KL(π^S‖π^T) on the student's (what OPSD sees) — against the final student of π-Distill
  α ∈ {0, 0.5, 1} and OPSD trained with that form; and Δ_max, the best training-task success with PI reached in
  training minus plain GRPO's. Figures: initial KL vs final success per α (the paper's Fig. 5), Δ vs Δ_max (Fig. 6),
  OPSD's success per form with its KL (Fig. 8).
- collapse: α = 1 against α = 0.5 with the `tools` PI, at β = 0 and 0.25: per round the KL between the views, the
  teacher's success with its own PI and with another task's PI in its place (equal: it no longer reads the PI), and
  the held-out student (Fig. 7).
- beta: β ∈ {0, 0.1, 0.25, 0.5} for π-Distill α ∈ {0.5, 1} and OPSD (Fig. 9).

Every run is a training script at its defaults except the options its cell names (π-Distill: PI form, α, β; OPSD:
PI form, β; plain GRPO: no PI), in out/<its name>/. What a table and a
figure need from it (the summary, the periodic evaluations, per-round KL and success in 25-round means) is kept
in results/analysis/<its name>.json (small, in git), so a fresh clone redraws everything without training. Tables
go to docs/analyses/, figures to docs/figures/, the discussion is docs/analyses.md. Figures need matplotlib
(`pip install matplotlib`), nothing else here does.
"""

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import torch

from config import parse_args
from env import PI_FORMS, TRAIN_SEEDS

RESULTS = os.path.join("results", "analysis")
BETAS = (0.0, 0.1, 0.25, 0.5)
# seconds per run alone on the 2-core CPU (two threads), measured on the defaults (docs/analyses.md); `jobs` 2 runs
# two at a time with one thread each, which takes about twice as long per run and about as long in total
SECONDS = {"pi_distill": 340, "opsd": 230}
ALPHA1_SPEEDUP = 0.8  # α = 1 has no student term to score and train


@dataclass
class AnalysisConfig:
    seeds: str = "0"  # comma-separated seeds of every cell
    jobs: int = 1  # runs at a time (2: one thread each)
    runs: bool = True  # run what is missing; 0: only tables and figures from the summaries present
    dry_run: bool = False  # list the runs, which are done, and the estimated seconds; run nothing
    n: int = 500  # training tasks behind each premise statistic


@dataclass(frozen=True)
class Cell:
    """One training run: script, its options, seed. Its name is its folder and its summary's file name."""
    script: str
    options: tuple  # ((key, value), ...) the options changed from the script's defaults
    seed: int

    @property
    def name(self):
        opts = "".join(f"_{k}{v:g}" if isinstance(v, float) else f"_{k}{v}" for k, v in self.options)
        return f"an_{self.script}{opts}_s{self.seed}"

    def argv(self):
        return [a for k, v in self.options for a in (f"--{k}", str(v))] + ["--seed", str(self.seed), "--run",
                                                                             self.name]

    def estimate_s(self):
        alpha = dict(self.options).get("alpha", 0.5)
        return SECONDS[self.script] * (ALPHA1_SPEEDUP if self.script == "pi_distill" and alpha == 1 else 1)


def pi_distill(seed, pi="full", alpha=0.5, beta=0.25):
    """A π-Distill cell: PI form, α and β always named, whatever the script's defaults are (a cell two analyses
    share is one run)."""
    return Cell("pi_distill", (("alpha", alpha), ("beta", beta), ("pi", pi)), seed)


def grpo(seed):
    """Plain GRPO on the same budget: π-Distill's script without PI."""
    return Cell("pi_distill", (("pi_coverage", 0.0),), seed)


def opsd(seed, pi="full", beta=0.5):
    return Cell("opsd", (("beta", beta), ("pi", pi)), seed)


def cells(analysis, seeds):
    """The runs an analysis needs, for each seed."""
    out = []
    for s in seeds:
        if analysis == "pi_forms":
            out += [opsd(s, pi=f) for f in PI_FORMS] + [grpo(s)]  # the cheapest first
            out += [pi_distill(s, pi=f, alpha=a) for a in (0.5, 1.0, 0.0) for f in PI_FORMS]
        elif analysis == "collapse":
            out += [pi_distill(s, pi="tools", alpha=a, beta=b) for a in (0.5, 1.0) for b in (0.0, 0.25)]
        elif analysis == "beta":
            out += [pi_distill(s, alpha=a, beta=b) for a in (0.5, 1.0) for b in BETAS]
            out += [opsd(s, beta=b) for b in BETAS]
    return out


# ----------------------------------------------------------------------------------------------------------------
# running: skip what is done, resume what was cut off


def state(cell):
    """done (its summary is in results/analysis), partial (a checkpoint in out/), or todo."""
    if os.path.exists(os.path.join(RESULTS, cell.name + ".json")):
        return "done"
    if os.path.exists(os.path.join("out", cell.name, "summary.json")):
        return "finished"  # trained; its summary is not yet collected
    return "partial" if os.path.exists(os.path.join("out", cell.name, "ckpt.pt")) else "todo"


def collect(cell):
    """results/analysis/<name>.json from out/<name>/: the summary, the periodic evaluations, and the per-round
    numbers in 25-round means (KL between the views, the teacher's and the student's training success)."""
    folder = os.path.join("out", cell.name)
    with open(os.path.join(folder, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(folder, "log.jsonl")) as f:
        log = [json.loads(line) for line in f]
    evals = [{k: r[k] for k in ("step", "heldout_success", "teacher_pi_success", "teacher_other_pi_success") if k in r}
             for r in log if "heldout_success" in r]
    means = []
    for start in range(0, max(r["step"] for r in log), 25):
        window = [r for r in log if start < r["step"] <= start + 25]
        row = {"step": start + 25}
        for key in ("kl", "teacher_success", "student_success", "reverse_kl"):
            values = [r[key] for r in window if key in r]
            if values:
                row[key] = round(statistics.mean(values), 4)
        means.append(row)
    keep = {k: summary[k] for k in summary if k != "config"}
    out = {**keep, "script": cell.script, "options": dict(cell.options), "seed": cell.seed, "evals": evals,
           "means": means}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, cell.name + ".json"), "w") as f:
        json.dump(out, f, indent=1)


def run_cells(todo, jobs):
    """Run the cells `jobs` at a time (each with 2 // jobs threads), resuming any cut off; collect each."""
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, 2 // jobs))} if jobs > 1 else dict(os.environ)
    waiting, running = list(todo), []
    while waiting or running:
        while waiting and len(running) < jobs:
            cell = waiting.pop(0)
            resume = ["--resume", "1"] if state(cell) == "partial" else []
            folder = os.path.join("out", cell.name)
            if not resume and os.path.exists(os.path.join(folder, "log.jsonl")):  # cut off before its first checkpoint:
                os.replace(os.path.join(folder, "log.jsonl"), os.path.join(folder, "log.cut.jsonl"))  # kept, restarted
            os.makedirs(folder, exist_ok=True)
            log = open(os.path.join("out", cell.name, "stdout.txt"), "a")
            cmd = [sys.executable, cell.script + ".py", *cell.argv(), *resume]
            print(" ".join(cmd[1:]), flush=True)
            running.append((cell, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), time.time()))
        time.sleep(2)
        for item in list(running):
            cell, proc, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode != 0:
                raise SystemExit(f"error: {cell.name} failed (exit {proc.returncode}); see out/{cell.name}/stdout.txt")
            collect(cell)
            print(f"done {cell.name} in {time.time() - t0:.0f} s", flush=True)


def load(cell):
    path = os.path.join(RESULTS, cell.name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


# ----------------------------------------------------------------------------------------------------------------
# the premise statistics of the base, per PI form


def premise(n):
    """results/analysis/premise.json: per PI form, on the first n training tasks at the algorithms' temperature,
    the base's teacher success, Δ, KL(π^T‖π^S) per episode on the teacher's samples and KL(π^S‖π^T) per episode
    on the student's samples (computed once; delete the file to recompute)."""
    path = os.path.join(RESULTS, "premise.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    from eval import evaluate
    from model import kl_div, load_checkpoint, vocab_logprobs
    from rollout import TEMPERATURE, episode_sums, play, teacher_view, trimmed
    from run import base_checkpoint

    model = load_checkpoint(base_checkpoint("toy_shop"))[0].eval()
    seeds = list(TRAIN_SEEDS[:n])
    out = {"n": n, "student": evaluate(model, seeds, temperature=TEMPERATURE)["success"]}
    for form in PI_FORMS:
        teacher = evaluate(model, seeds, pi=form, temperature=TEMPERATURE, kl=True)
        reverse = []
        with torch.no_grad():
            for i in range(0, n, 128):
                played = play(model, seeds[i : i + 128], pi=None, temperature=TEMPERATURE,
                              generator=torch.Generator().manual_seed(i))
                (ids_s, mask_s, _), (ids_t, mask_t, _) = trimmed(played.episodes, "cpu"), trimmed(
                    teacher_view(played, form), "cpu")
                per_token = kl_div(vocab_logprobs(model(ids_s)[0], mask_s), vocab_logprobs(model(ids_t)[0], mask_t))
                reverse += episode_sums(per_token, played.episodes.mask).tolist()
        out[form] = {"teacher": teacher["success"], "delta": teacher["success"] - out["student"],
                     "kl_ts": teacher["kl"], "kl_st": statistics.mean(reverse)}
        print(f"premise {form:6s} teacher {teacher['success']:.3f} | Δ {out[form]['delta']:+.3f} | "
              f"KL(T‖S) {teacher['kl']:.2f} | KL(S‖T) {out[form]['kl_st']:.2f}", flush=True)
    os.makedirs(RESULTS, exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    return out


# ----------------------------------------------------------------------------------------------------------------
# the command


def kind(cell):
    """π-Distill's α, "OPSD", or "GRPO" (π-Distill without PI): the column a run feeds."""
    opts = dict(cell.options)
    if cell.script == "opsd":
        return "OPSD"
    return "GRPO" if opts.get("pi_coverage") == 0.0 else float(opts.get("alpha", 0.5))


def grouped(cell_list, key):
    """{key(cell): [collected summaries]} over the cells whose summaries are present."""
    out = {}
    for cell in cell_list:
        summary = load(cell)
        if summary is not None:
            out.setdefault(key(cell), []).append(summary)
    return out


def report(analysis, seeds, n):
    import figures

    todo = cells(analysis, seeds)
    if analysis == "pi_forms":
        figures.pi_forms(premise(n), grouped(todo, lambda c: (kind(c), dict(c.options).get("pi"))))
    elif analysis == "collapse":
        figures.collapse(grouped(todo, lambda c: (float(dict(c.options)["alpha"]), float(dict(c.options)["beta"]))))
    else:
        figures.beta(grouped(todo, lambda c: (kind(c), float(dict(c.options)["beta"]))))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    names = ("pi_forms", "collapse", "beta")
    if not argv or argv[0] not in names + ("all",):
        raise SystemExit(f"usage: python analysis.py {{{'|'.join(names)}|all}} [--options]; --help lists them")
    cfg = parse_args(AnalysisConfig(), argv[1:])
    try:
        seeds = [int(s) for s in cfg.seeds.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"error: --seeds must be comma-separated integers, got {cfg.seeds!r}") from None
    if not seeds or cfg.jobs < 1:
        raise SystemExit("error: --seeds needs at least one seed and --jobs at least 1")
    chosen = names if argv[0] == "all" else (argv[0],)
    todo = list(dict.fromkeys(c for a in chosen for c in cells(a, seeds)))  # a cell two analyses share runs once
    missing = [c for c in todo if state(c) != "done"]
    if cfg.dry_run:
        for c in todo:
            print(f"{state(c):8s} {c.estimate_s():5.0f} s  python {c.script}.py {' '.join(c.argv())}")
        to_run = [c for c in missing if state(c) in ("todo", "partial")]
        left = sum(c.estimate_s() for c in to_run)
        print(f"{len(todo)} runs, {len(to_run)} to run: about {left:.0f} s on the 2-core CPU ({left / 3600:.1f} h)")
        return
    for c in [c for c in missing if state(c) == "finished"]:
        collect(c)
    if cfg.runs:
        run_cells([c for c in missing if state(c) != "done"], cfg.jobs)
    for a in chosen:
        report(a, seeds, cfg.n)


if __name__ == "__main__":
    main()
