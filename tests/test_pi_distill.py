"""π-Distill: the KL in both directions against brute force, what is detached, α = 0 / 1 as the single terms, and a
3-step smoke run."""

import json
import math
import re

import pytest

import torch

import pi_distill as D
import tokenizer as tk
from grpo import clipped_surrogate
from model import GPT, GPTConfig, kl_div, load_checkpoint, save_checkpoint, token_logprobs
from rollout import Episodes


def test_kl_both_directions_against_brute_force():
    g = torch.Generator().manual_seed(0)
    p, q = torch.log_softmax(torch.randn(4, 5, generator=g), -1), torch.log_softmax(torch.randn(4, 5, generator=g), -1)
    for row in range(4):
        pt, qt = p[row].exp().tolist(), q[row].exp().tolist()
        forward = sum(a * math.log(a / b) for a, b in zip(pt, qt))  # KL(p ‖ q)
        reverse = sum(b * math.log(b / a) for a, b in zip(pt, qt))  # KL(q ‖ p)
        assert abs(kl_div(p, q)[row].item() - forward) < 1e-5
        assert abs(kl_div(q, p)[row].item() - reverse) < 1e-5
        assert abs(forward - reverse) > 1e-3  # the two directions really differ here
    assert torch.allclose(kl_div(p, p), torch.zeros(4), atol=1e-6)


def tiny(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=20, block_size=32, n_layer=1, n_head=2, n_embd=16))


def views():
    """A teacher episode (with a 2-token 'PI line') and the same episode without it."""
    g = torch.Generator().manual_seed(1)
    student = torch.randint(0, 20, (3, 10), generator=g)
    teacher = torch.cat([student[:, :1], torch.tensor([[7, 8]] * 3), student[:, 1:]], dim=1)
    s_mask = torch.zeros(3, 10)
    s_mask[:, 5:9] = 1
    t_mask = torch.cat([s_mask[:, :1], torch.zeros(3, 2), s_mask[:, 1:]], dim=1)
    return teacher, t_mask, student, s_mask


def init_checkpoint(tmp_path):
    """A tiny untrained model of the real vocabulary, saved as tmp_path/init.pt for a script's --init: -> the model."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tk.get_tokenizer().n_vocab, block_size=256, n_layer=1, n_head=2, n_embd=16))
    save_checkpoint(str(tmp_path / "init.pt"), model)
    return model


def logged(tmp_path, run):
    """out/<run>/log.jsonl's rows without their timings (elapsed_s, tok_s), which no two runs share."""
    rows = [json.loads(line) for line in open(tmp_path / "out" / run / "log.jsonl")]
    return [{k: v for k, v in r.items() if k not in ("elapsed_s", "tok_s")} for r in rows]


def test_alpha_0_and_1_are_the_single_terms_and_the_student_term_sends_no_gradient_to_teacher_old():
    model = tiny()
    teacher, t_mask, student, s_mask = views()
    with torch.no_grad():  # π^T_old: the teacher's log-probs at sampling time, in both frames
        t_old = token_logprobs(model(teacher)[0] / 0.75, teacher) + 0.05 * torch.randn(3, 12)
    s_old = torch.cat([t_old[:, :1], t_old[:, 3:]], dim=1).requires_grad_(True)  # moved to the student frame
    t_old.requires_grad_(True)
    adv, keep = torch.tensor([1.0, -0.5, 0.25]), torch.tensor([1.0, 0.0, 1.0])  # episode 1: a dropped group
    t_view, s_view = D.View(teacher, t_mask, t_old, adv, keep), D.View(student, s_mask, s_old, adv, keep)
    kept = keep[:, None]
    l_teacher = clipped_surrogate(token_logprobs(model(teacher)[0] / 0.75, teacher), t_old, adv, t_mask * kept, 0.2)
    l_student = clipped_surrogate(token_logprobs(model(student)[0] / 0.75, student), s_old, adv, s_mask * kept, 0.2)
    assert abs(D.distill_loss(model, t_view, s_view, 1.0, 0.75, 0.2)[0].item() - l_teacher.item()) < 1e-6
    assert abs(D.distill_loss(model, t_view, s_view, 0.0, 0.75, 0.2)[0].item() - l_student.item()) < 1e-6
    half, _ = D.distill_loss(model, t_view, s_view, 0.5, 0.75, 0.2)
    assert abs(half.item() - 0.5 * (l_teacher.item() + l_student.item())) < 1e-6
    model.zero_grad()
    D.distill_loss(model, t_view, s_view, 0.0, 0.75, 0.2)[0].backward()
    assert s_old.grad is None and t_old.grad is None  # sg π^T_old: nothing flows into the old teacher
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_student_kl_term_is_the_forward_kl_to_the_detached_teacher():
    """Eq. 3's β·KL(sg π^T ‖ π^S): a brute-force sum over the tiny vocabulary at every student agent token, with no
    gradient into the teacher's log-probs, and absent at α = 1."""
    model = tiny()
    teacher, t_mask, student, s_mask = views()
    zero = torch.zeros(3)
    s_view = D.View(student, s_mask, torch.zeros(3, 10), zero, zero)  # no kept episode: the KL term alone
    with torch.no_grad():
        lp_t = torch.log_softmax(model(teacher)[0][:, :-1][t_mask[:, 1:].bool()], -1)  # (12, 20)
    lp_t.requires_grad_(True)
    loss, _ = D.distill_loss(model, None, s_view, 0.0, 0.75, 0.2, beta=0.25, lp_t=lp_t)
    q = torch.softmax(model(student)[0], -1)  # the student's distributions, brute force below
    pairs = [(b, t) for b in range(3) for t in range(1, 10) if s_mask[b, t]]
    brute = 0.0
    for n, (b, t) in enumerate(pairs):
        p_t = lp_t[n].exp().tolist()
        brute += sum(p * (math.log(p) - math.log(q[b, t - 1, v].item())) for v, p in enumerate(p_t))
    assert abs(loss.item() - 0.25 * brute / len(pairs)) < 1e-5
    loss.backward()
    assert lp_t.grad is None  # sg π^T
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    t_view = D.View(teacher, t_mask, torch.zeros(3, 12), zero, zero)
    assert D.distill_loss(model, t_view, s_view, 1.0, 0.75, 0.2, beta=0.25, lp_t=lp_t)[0].item() == 0.0


def test_distinct_episodes_weighted_by_their_copies_give_the_full_batchs_loss_and_gradient():
    """pi_distill trains each distinct episode once, weighted by its copies (rollout.distinct): the loss and every
    parameter's gradient equal those of the batch with every copy in it (clipped terms, dropped groups, Eq. 3's
    KL)."""
    teacher, t_mask, student, s_mask = views()
    full = [0, 0, 1, 2, 2, 2]  # two groups of 3: episodes 0 0 1 and 2 2 2
    first, inverse = torch.tensor([0, 2, 3]), torch.tensor([0, 0, 1, 2, 2, 2])  # rollout.distinct's rows, inverse
    adv, keep = torch.tensor([0.5, 0.5, -1.0, 0.0, 0.0, 0.0]), torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    model = tiny(3)
    with torch.no_grad():
        t_old = token_logprobs(model(teacher)[0] / 0.75, teacher) + 0.05 * torch.randn(3, 12)
    s_old = torch.cat([t_old[:, :1], t_old[:, 3:]], dim=1)

    def lp_teacher(rows):
        with torch.no_grad():
            return torch.log_softmax(model(teacher[rows])[0][:, :-1][t_mask[rows][:, 1:].bool()], -1)

    def loss_and_grads(t_view, s_view, lp_t, n_tokens):
        model.zero_grad()
        loss, _ = D.distill_loss(model, t_view, s_view, 0.5, 0.75, 0.2, beta=0.25, lp_t=lp_t, dual_clip=3.0,
                                 n_tokens=n_tokens)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters()]

    full_views = (D.View(teacher[full], t_mask[full], t_old[full], adv, keep),
                  D.View(student[full], s_mask[full], s_old[full], adv, keep))
    src = [0, 1, 2]  # views() row of each distinct episode
    episodes = lambda ids, mask, old: Episodes(ids[src], mask[src], old[src], torch.tensor([ids.size(1)] * 3),
                                                torch.ones(3, dtype=torch.bool))
    t_view = D.view(episodes(teacher, t_mask, t_old), adv, keep, first, inverse, "cpu")  # drops 2: a dropped group
    s_view = D.view(episodes(student, s_mask, s_old), adv, keep, first, inverse, "cpu", all_rows=True)
    assert t_view.ids.size(0) == 2 and s_view.ids.size(0) == 3
    assert s_view.weight.tolist() == [2.0, 1.0, 0.0] and s_view.count.tolist() == [2.0, 1.0, 3.0]
    for n_tokens in (None, s_mask[full].sum()):  # normalised by the kept tokens, or by the whole batch's
        ref = loss_and_grads(*full_views, lp_teacher(full), n_tokens)
        got = loss_and_grads(t_view, s_view, lp_teacher(src), n_tokens)
        assert abs(got[0] - ref[0]) < 1e-6 and abs(ref[0]) > 1e-3
        for g, r in zip(got[1], ref[1]):
            assert torch.allclose(g, r, atol=1e-6)
    assert D.view(episodes(teacher, t_mask, t_old), adv, torch.zeros(6), first, inverse, "cpu") is None


def test_defaults_follow_the_teacher_view_and_name_what_was_asked():
    """Options left at 0 take BY_TEACHER's values for the run's teacher view (frozen at the default α = 0, shared for
    α > 0); an option set on the command line is kept, and only those name the run and its row."""
    frozen, shared = D.resolved(D.Config()), D.resolved(D.Config(alpha=0.5))
    assert (frozen.steps, frozen.tasks, frozen.k, frozen.lr) == (300, 32, 2, 2e-4)
    assert (shared.steps, shared.tasks, shared.k, shared.lr) == (400, 16, 4, 1e-4)
    assert D.teacher_kind(frozen) == "frozen" and D.teacher_kind(shared) == "shared"
    assert D.resolved(D.Config(alpha=0.5, lr=3e-4, k=3)).lr == 3e-4 and D.resolved(D.Config(k=3)).k == 3
    assert D.resolved(D.Config(alpha=0.0, teacher="shared")).lr == 1e-4
    assert all(getattr(D.Config(), key) == 0 for key in D.BY_TEACHER["frozen"])
    with pytest.raises(SystemExit, match="must be positive"):
        D.main(["--lr", "-1"])


def test_alpha_warmup():
    cfg = D.Config(alpha=0.5, alpha_warmup=10)
    assert [D.alpha_at(s, cfg) for s in (0, 5, 10, 50)] == [0.0, 0.25, 0.5, 0.5]
    assert D.alpha_at(0, D.Config(alpha=1.0)) == 1.0 and D.alpha_at(0, D.Config(alpha=0.0)) == 0.0


def test_kl_in_the_reward_carries_no_gradient(tmp_path):
    """The teacher's reward uses KL(π^T ‖ sg π^S) computed under no_grad: a plain number per episode."""
    from rollout import kl_teacher_student, play

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tk.get_tokenizer().n_vocab, block_size=256, n_layer=1, n_head=2, n_embd=16))
    played = play(model, [0, 1], 2, pi="full", generator=torch.Generator().manual_seed(0), max_len=120)
    kl = kl_teacher_student(model, played, "full")
    assert not kl.requires_grad and kl.shape == (4,) and (kl > 0).all()


def test_pi_distill_smoke(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    model = init_checkpoint(tmp_path)
    summary = D.main([f"--init={tmp_path / 'init.pt'}", "--steps=3", "--tasks=4", "--n_tasks=8", "--pi_coverage=0.5",
                      "--eval_every=3", "--eval_n=4", "--final_n=4", "--run=smoke", "--lr=1e-2", "--alpha=0.5"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    log = [json.loads(line) for line in open(tmp_path / "out" / "smoke" / "log.jsonl")]
    assert len(log) == 3 and all(math.isfinite(r["loss"]) for r in log if "loss" in r)
    assert summary["method"] == "π-Distill α=0.5 (final_n 4, pi_coverage 0.5, n_tasks 8, steps 3, tasks 4, lr 0.01)"
    assert any("kl" in r for r in log)
    after, ckpt = load_checkpoint(summary["checkpoint"])
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), after.state_dict().values()))


def test_folded_kl_smoke_and_bad_options(tmp_path, monkeypatch, capsys):
    """--student_kl reward (Algorithm 1 as written) runs and names its row and folder; bad options are one-line
    errors, not tracebacks."""
    monkeypatch.chdir(tmp_path)
    init_checkpoint(tmp_path)
    summary = D.main(["--init", str(tmp_path / "init.pt"), "--steps", "2", "--tasks=2", "--n_tasks=4",
                      "--eval_every=2", "--eval_n=2", "--final_n=2", "--student_kl", "reward", "--alpha_warmup=5",
                      "--seed", "3", "--alpha", "0.5"])
    assert summary["method"] == ("π-Distill α=0.5 (final_n 2, n_tasks 4, alpha_warmup 5, student_kl reward, steps 2, "
                                 "tasks 2)")
    assert summary["run"] == "pi_distill_final_n2_n_tasks4_alpha0.5_alpha_warmup5_student_kl-reward_steps2_tasks2_s3"
    for argv, message in ((["--student_kl=both"], "--student_kl must be loss or reward"),
                          (["--alpha", "1.5"], "--alpha must lie in [0, 1]"),
                          (["--pi", "secret"], "unknown PI form 'secret'"),
                          (["--token_norm=kept"], "unknown option --token_norm")):
        with pytest.raises(SystemExit, match=re.escape(message)):
            D.main(argv)


def test_same_seed_same_log(tmp_path, monkeypatch):
    """Two runs with the same seed (and thread count) log the same numbers round for round; another seed does not."""
    monkeypatch.chdir(tmp_path)
    init_checkpoint(tmp_path)

    def log(run, seed):
        D.main(["--init", str(tmp_path / "init.pt"), "--steps", "3", "--tasks", "4", "--n_tasks", "8", "--eval_every",
                "3", "--eval_n", "2", "--final_n", "2", "--lr", "1e-2", "--seed", str(seed), "--run", run])
        return logged(tmp_path, run)

    first = log("a", 0)
    assert log("b", 0) == first and log("c", 1) != first


def test_a_missing_base_model_is_a_one_line_error(tmp_path, monkeypatch):
    """No silent two-hour pretraining: the error names the command that builds the base and how long it takes."""
    import run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run, "BASE_PATH", str(tmp_path / "base" / "{env}.pt"))
    with pytest.raises(SystemExit, match=r"no base model at .*toy_shop\.pt; build it with `python pretrain.py "
                                         r"--env toy_shop` \(two runs, about 2 hours"):
        D.main(["--env", "toy_shop"])
    assert not (tmp_path / "out").exists()  # nothing started


@pytest.mark.parametrize("dies_in", [3, 4])
def test_resume_continues_exactly(tmp_path, monkeypatch, dies_in):
    """A run that dies after its step-2 checkpoint (at once, or after logging round 3) and is resumed logs what the
    uninterrupted run logs: the rows written after the checkpoint are moved to log.cut.jsonl, not repeated."""
    monkeypatch.chdir(tmp_path)
    init_checkpoint(tmp_path)
    args = ["--init", str(tmp_path / "init.pt"), "--steps", "4", "--tasks", "4", "--n_tasks", "8", "--eval_every", "2",
            "--eval_n", "2", "--final_n", "2", "--lr", "1e-2"]

    D.main(args + ["--run", "straight"])
    real_round, calls = D.distill_round, []

    def dies(*a, **k):
        calls.append(1)
        if len(calls) == dies_in:
            raise KeyboardInterrupt
        return real_round(*a, **k)

    monkeypatch.setattr(D, "distill_round", dies)
    with pytest.raises(KeyboardInterrupt):
        D.main(args + ["--run", "resumed"])
    assert [r["step"] for r in logged(tmp_path, "resumed")] == list(range(1, dies_in))
    monkeypatch.setattr(D, "distill_round", real_round)
    D.main(args + ["--run", "resumed", "--resume", "1"])
    assert logged(tmp_path, "resumed") == logged(tmp_path, "straight")
    assert (tmp_path / "out" / "resumed" / "log.cut.jsonl").exists() == (dies_in == 4)


def test_frozen_teacher_is_the_start_and_never_moves(tmp_path, monkeypatch):
    """--teacher frozen: the teacher view is played and scored by a copy of the run's start (also on --resume) that
    takes no gradient; a round moves the student's weights and not the teacher's. It needs α = 0."""
    import run as R

    monkeypatch.chdir(tmp_path)
    start = init_checkpoint(tmp_path)
    cfg = D.resolved(D.Config(init=str(tmp_path / "init.pt"), alpha=0.0, teacher="frozen", tasks=2, n_tasks=4, lr=1e-2))
    run = R.Run(cfg, "pi_distill")
    model, _ = run.load_model()
    teacher = run.teacher(model, cfg.teacher)
    assert teacher is not model and not any(p.requires_grad for p in teacher.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(0)
    D.distill_round(model, opt, cfg, [0, 1], lambda s: True, 0.0, g, teacher)
    for a, b, c in zip(start.state_dict().values(), teacher.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, c) for a, c in zip(start.state_dict().values(), model.state_dict().values()))
    run.save(model, {"opt": opt}, "rl", 1)
    resumed = R.Run(D.Config(**{**cfg.__dict__, "resume": True}), "pi_distill")
    again, _ = resumed.load_model()
    assert all(torch.equal(a, b) for a, b in zip(start.state_dict().values(),
                                                  resumed.teacher(again, "frozen").state_dict().values()))
    assert run.teacher(model, "shared") is model
    for argv, message in ((["--alpha", "0.5", "--teacher", "frozen"],
                           "--teacher frozen trains no teacher view; it needs --alpha 0"),
                          (["--alpha", "0", "--teacher", "ema"], "--teacher must be auto, shared or frozen")):
        with pytest.raises(SystemExit, match=re.escape(message)):
            D.main(["--init", str(tmp_path / "init.pt"), "--run", "bad", *argv])


def test_alpha_0_logs_the_kl_of_a_separate_scoring_pass():
    """At α = 0 the round takes KL_seq from its first gradient step instead of a separate pass: the logged KL and
    reward equal rollout.kl_teacher_student's on the same episodes, scored before the update."""
    import copy

    from rollout import distinct, kl_teacher_student, play

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tk.get_tokenizer().n_vocab, block_size=256, n_layer=1, n_head=2, n_embd=16))
    teacher = copy.deepcopy(model).requires_grad_(False)
    with torch.no_grad():  # a teacher that differs from the student, as the trained network soon does
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    cfg = D.resolved(D.Config(alpha=0.0, tasks=3, k=2, lr=1e-2))
    seeds, before = [0, 1, 2], copy.deepcopy(model)
    played = play(teacher, seeds, 2, pi="full", temperature=D.TEMPERATURE, generator=torch.Generator().manual_seed(7))
    uniq, _, inverse = distinct(played, 2)
    expected = kl_teacher_student(before, uniq, "full", teacher=teacher)[inverse]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    stats, _ = D.distill_round(model, opt, cfg, seeds, lambda s: True, 0.0, torch.Generator().manual_seed(7), teacher)
    assert expected.mean() > 0.1 and math.isclose(stats["kl"], expected.mean().item(), rel_tol=1e-4)
    reward = (played.rewards - cfg.beta * expected).mean().item()
    assert math.isclose(stats["reward"], reward, rel_tol=1e-4, abs_tol=1e-5)
