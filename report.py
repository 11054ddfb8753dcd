"""The results, generated: the table of every method and the learning curves, from the runs' summaries.

    python report.py --collect out   # copy each out/<run>/summary.json (and its log's held-out curve) into results/
    python report.py                 # results/*.json -> docs/results.md (every row, every curve) and README.md's rows

Nothing in a table is typed: each row is the mean ± std over the seeds of the runs that share its label (the method
and the options changed from their defaults, config.label). results/ keeps one small JSON file per run, so a fresh
clone regenerates the tables without rerunning anything; results/base.json (the base model's held-out success and
the scripted expert's) is measured once when missing. Every row also shows Table 1's out-of-distribution column
(success on the OOD split) and the forgetting probe (table reading), from eval.transfer: the training scripts record
both at the end; `--collect` measures them from the run's checkpoint when a summary lacks them.
"""

import glob
import json
import os
import sys
from dataclasses import dataclass

from config import parse_args

ROW_ORDER = ["base", "SFT w/ CoT", "SFT w/o CoT", "RL",
             "RL (π-Distill script, no PI) (steps 400, tasks 16, k 4, lr 0.0001)", "SFT w/o CoT + RL",
             "SFT w/ CoT + RL", "OPSD", "π-Distill α=0", "π-Distill α=0.5", "π-Distill α=1", "expert",
             "π-Distill α=0 (steps 400, tasks 16, k 4, lr 0.0001)", "OPSD (teacher shared, lr 0.0002)",
             "π-Distill α=0 (teacher shared)"]
# the paper's Table 1 order, with plain GRPO at the shared teacher's budget (π-Distill's script with --pi_coverage 0)
# beside RL; after it α = 0 at the shared teacher's settings, and the two rows whose teacher view shares the trained
# weights, as the paper's does (docs/deviations.md)


@dataclass
class ReportConfig:
    collect: str = ""  # a folder of runs (out): copy their summaries and curves into results/ first
    results: str = "results"  # the folder of run summaries the tables are made from
    docs: str = "docs/results.md"  # the full record: every row and every learning curve
    readme: str = "README.md"  # the front door: the rows of ROW_ORDER, between <!-- results table --> markers


def transferred(summary, ckpt):
    """`summary` with eval.transfer's OOD success and reading probe, measured from `ckpt` if it lacks them."""
    if "ood_success" in summary or not os.path.isfile(ckpt):
        return summary
    from eval import transfer  # torch and the model are needed only here
    from model import load_checkpoint

    model, _ = load_checkpoint(ckpt)
    print(f"measuring OOD success and reading for {ckpt}")
    return {**summary, **transfer(model.eval(), summary.get("n", 500))}


def collect(runs_dir, results_dir):
    """results/<run>.json for every out/<run>/ with a summary.json: the summary (with eval.transfer's numbers,
    measured from out/<run>/ckpt.pt and written back if missing), and `curve`, the held-out success at each
    periodic evaluation of its log.jsonl (`rl 50`, `sft 400`)."""
    os.makedirs(results_dir, exist_ok=True)
    n = 0
    for path in sorted(glob.glob(os.path.join(runs_dir, "*", "summary.json"))):
        with open(path) as f:
            summary = json.load(f)
        measured = transferred(summary, os.path.join(os.path.dirname(path), "ckpt.pt"))
        if measured is not summary:  # measured now: keep the numbers in the run's own summary too
            summary = measured
            with open(path + ".tmp", "w") as f:
                json.dump(summary, f, indent=1, ensure_ascii=False)
            os.replace(path + ".tmp", path)
        with open(os.path.join(os.path.dirname(path), "log.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        summary["curve"] = {f"{r['phase']} {r['step']}": r["heldout_success"] for r in rows if "heldout_success" in r}
        with open(os.path.join(results_dir, summary["run"] + ".json"), "w") as f:
            json.dump(summary, f, indent=1, ensure_ascii=False)
        n += 1
    print(f"{n} run summaries from {runs_dir}/ into {results_dir}/")


def load(results_dir):
    """{label: [summaries]} of results/*.json, base.json measured first if missing (the base and expert rows)."""
    base_path = os.path.join(results_dir, "base.json")
    if not os.path.isfile(base_path):
        from eval import main as measure  # torch and the model are needed only to measure the base once

        res = measure(["--n=500"])
        with open(base_path, "w") as f:
            json.dump({"base": res["student_greedy"], "expert": res["expert"], "n": res["n"]}, f, indent=1)
    with open(base_path) as f:
        base = json.load(f)
    if "ood_success" not in base:  # the base's OOD success and reading; the scripted expert's OOD success
        from env import TEST_SEEDS
        from eval import scripted_success
        from run import base_checkpoint

        base = {**transferred(base, base_checkpoint("toy_shop")),
                "expert_ood": scripted_success(list(TEST_SEEDS[: base["n"]]), "OOD", "expert")}
        with open(base_path, "w") as f:
            json.dump(base, f, indent=1)
    rows = {"base": [{"heldout_success": base["base"], "ood_success": base["ood_success"], "reading": base["reading"]}],
            "expert": [{"heldout_success": base["expert"], "ood_success": base["expert_ood"]}]}
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        if os.path.basename(path) != "base.json":
            with open(path) as f:
                summary = json.load(f)
            rows.setdefault(summary["method"], []).append(summary)
    return rows


def cell(values, scale=100, digits=1):
    """mean ± sample std, or the single value."""
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{scale * mean:.{digits}f}"
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def results_table(rows, methods, n=500):
    """Markdown: one row per method of `methods` (mean ± std of its runs' held-out success, seeds and their values,
    the teacher view's success with PI where the method has one, wall-clock minutes per run)."""
    lines = [f"| method | held-out success % (greedy, {n} tasks) | seeds: each | OOD success % | reading % "
             "(forgetting probe) | teacher with PI % | minutes per run |", "|---|---|---|---|---|---|---|"]
    for method in methods:
        runs = rows.get(method)
        if not runs:
            lines.append(f"| {method} | not in results/ | 0 | | | | |")
            continue
        teacher = [r["teacher_pi_success"] for r in runs if "teacher_pi_success" in r]
        minutes = [r["wall_clock_s"] / 60 for r in runs if "wall_clock_s" in r]
        ood = [r["ood_success"] for r in runs if "ood_success" in r]
        read = [r["reading"] for r in runs if "reading" in r]
        each = ("-" if method in ("base", "expert") else
                f"{len(runs)}: " + " / ".join(f"{100 * r['heldout_success']:.1f}" for r in runs))
        lines.append(f"| {method} | {cell([r['heldout_success'] for r in runs])} | {each} | "
                     f"{cell(ood) if ood else ''} | {cell(read) if read else ''} | "
                     f"{cell(teacher) if teacher else ''} | {cell(minutes, 1, 1) if minutes else ''} |")
    return "\n".join(lines)


def learning_curves(runs):
    """Markdown: held-out success % at each periodic evaluation (SFT and RL steps numbered apart), then the final
    number (more tasks), one row per run."""
    columns = []
    for r in runs:
        columns += [c for c in r.get("curve", {}) if c not in columns]
    columns.sort(key=lambda c: (c.split()[0] != "sft", int(c.split()[1])))
    lines = ["| run | " + " | ".join(columns + ["final"]) + " |", "|---|" + "---|" * (len(columns) + 1)]
    for r in runs:
        points = {**r.get("curve", {}), "final": r["heldout_success"]}
        lines.append(f"| {r['run']} | " + " | ".join(f"{100 * points[c]:.1f}" if c in points else ""
                                                     for c in columns + ["final"]) + " |")
    return "\n".join(lines)


def write_between_markers(text, path, marker="results table"):
    """Replace what stands between <!-- {marker} --> and <!-- /{marker} --> in the file at `path`."""
    with open(path) as f:
        old = f.read()
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    if start not in old or end not in old:
        raise SystemExit(f"error: {path} has no {start} ... {end} block to write into")
    head, rest = old.split(start, 1)
    with open(path, "w") as f:
        f.write(head + start + "\n" + text + "\n" + end + rest.split(end, 1)[1])


def main(argv=None):
    cfg = parse_args(ReportConfig(), argv)
    if cfg.collect:
        if not os.path.isdir(cfg.collect):
            sys.exit(f"error: no folder {cfg.collect!r} to collect runs from")
        collect(cfg.collect, cfg.results)
    rows = load(cfg.results)
    main_rows = results_table(rows, ROW_ORDER)
    every_row = results_table(rows, ROW_ORDER + sorted(set(rows) - set(ROW_ORDER)))
    curves = "\n\n".join(f"**{method}**\n\n" + learning_curves(runs) for method, runs in sorted(rows.items())
                         if any("curve" in r for r in runs))
    write_between_markers(main_rows, cfg.readme)
    write_between_markers(every_row, cfg.docs)
    write_between_markers(curves, cfg.docs, "learning curves")
    print(every_row)
    return every_row


if __name__ == "__main__":
    main()
