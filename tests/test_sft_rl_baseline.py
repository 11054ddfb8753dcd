"""sft_rl_baseline.py: SFT targets are agent tokens only (with the CoT when asked), and both phases run 3 steps."""

import json

import torch

import sft_rl_baseline as S
import tokenizer as tk
from model import GPT, GPTConfig, load_checkpoint, save_checkpoint


def test_sft_loss_touches_agent_tokens_only():
    for cot in (False, True):
        cfg = S.Config(n_expert=30, cot=cot)
        data = S.expert_data(cfg)
        assert len(data) == 30
        thought = False
        for ids, flags in data:
            target = tk.decode([t for t, f in zip(ids, flags) if f])
            context = tk.decode([t for t, f in zip(ids, flags) if not f])
            assert "<|tool|>" not in target and "<|user|>" not in target and "<|agent|>" not in target
            assert "<|pi|>" not in context  # SFT is the student view
            assert target.split()[:2] == ["profile", context.split("<|user|> i am ")[1].split()[0]]
            thought |= "<|think|>" in target
            assert ("<|think|>" in context) is False
        assert thought == cot


def test_both_cot_styles_and_a_bad_style():
    """The draft CoT drafts the write first; the list CoT walks the candidates; the action after it is the same."""
    draft, listed = (S.expert_data(S.Config(n_expert=20, cot=True, cot_style=s)) for s in ("draft", "list"))
    for (a, _), (b, _) in zip(draft, listed):
        a, b = tk.decode(a), tk.decode(b)
        assert a.split("<|/think|>")[1] == b.split("<|/think|>")[1]  # the write and everything after it
        write = a.split("<|/think|>")[1].split()[0]
        thought_a, thought_b = (x.split("<|think|>")[1].split("<|/think|>")[0] for x in (a, b))
        if write in ("buy", "exchange", "return"):  # a pending order's `cancel` has no candidates to judge
            assert thought_a.split()[:2] == a.split("<|/think|>")[1].split()[:2] and thought_a != thought_b
            assert thought_b.count(" ok") + thought_b.count(" no") >= 1  # each candidate judged
    try:
        S.main(["--cot=1", "--cot_style=tree"])
        raise AssertionError("expected an error")
    except SystemExit as e:
        assert str(e) == "error: --cot_style must be one of draft, list, not 'tree'"


def test_think_tokens_start_at_the_mean_embedding_of_the_episodes_tokens():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tk.get_tokenizer().n_vocab, block_size=256, n_layer=1, n_head=2, n_embd=16))
    before = model.wte.weight.detach().clone()
    data = S.expert_data(S.Config(n_expert=10, cot=True))
    S.init_think_tokens(model, data)
    after = model.wte.weight.detach()
    think, end = tk.special("<|think|>"), tk.special("<|/think|>")
    words = set(tk.encode("".join(tk.decode(ids) for ids, _ in data))) - {think, end}  # the same ids, by text
    mean = sum(before[t] for t in words) / len(words)
    assert torch.allclose(after[think], mean, atol=1e-6) and torch.allclose(after[end], mean, atol=1e-6)
    others = [t for t in range(len(before)) if t not in (think, end)]
    assert torch.equal(after[others], before[others])


def tiny_checkpoint(path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tk.get_tokenizer().n_vocab, block_size=256, n_layer=1, n_head=2, n_embd=16))
    save_checkpoint(str(path), model)
    return model


def test_think_init_on_the_command_line(tmp_path, monkeypatch):
    """--cot=1 starts the delimiters at the mean embedding; --think_init=0 keeps the loaded rows (one SFT step at lr 0
    leaves every weight as it was)."""
    monkeypatch.chdir(tmp_path)
    before = tiny_checkpoint(tmp_path / "init.pt").wte.weight.detach()
    delimiters = [tk.special("<|think|>"), tk.special("<|/think|>")]
    for think_init in (1, 0):
        summary = S.main([f"--init={tmp_path / 'init.pt'}", "--cot=1", f"--think_init={think_init}", "--sft_steps=1",
                          "--sft_lr=0", "--rl_steps=0", "--n_expert=8", "--eval_n=2", "--final_n=2",
                          f"--run=t{think_init}"])
        after = load_checkpoint(summary["checkpoint"])[0].wte.weight.detach()
        others = [t for t in range(len(before)) if t not in delimiters]
        assert torch.equal(after[others], before[others])
        assert torch.equal(after[delimiters], before[delimiters]) == (think_init == 0)
        assert think_init == 0 or torch.equal(after[delimiters[0]], after[delimiters[1]])


def test_three_steps_of_each_phase_and_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = tiny_checkpoint(tmp_path / "init.pt")
    args = [f"--init={tmp_path / 'init.pt'}", "--sft_steps=3", "--rl_steps=3", "--n_expert=16", "--tasks=4",
            "--eval_every=3", "--eval_n=4", "--final_n=4", "--cot=1", "--run=smoke", "--sft_lr=1e-2"]
    summary = S.main(args)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    # not pooled with the defaults' rows
    assert summary["method"] == "SFT w/ CoT + RL (final_n 4, n_expert 16, sft_steps 3, sft_lr 0.01, rl_steps 3, tasks 4)"
    log = [json.loads(line) for line in open(tmp_path / "out" / "smoke" / "log.jsonl")]
    assert [r["phase"] for r in log if "heldout_success" in r] == ["sft", "rl"]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log if "loss" in r)
    after, ckpt = load_checkpoint(summary["checkpoint"])
    moved = any(not torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values()))
    assert moved and ckpt["phase"] == "done"
    # --resume of a finished run trains nothing more and reports again
    again = S.main(args + ["--resume=1"])
    assert again["checkpoint"] == summary["checkpoint"]
    # the same run started again without --resume is refused, and the first run's log and checkpoint stay as they were
    files = {f: (tmp_path / "out" / "smoke" / f).read_bytes() for f in ("log.jsonl", "ckpt.pt", "config.json")}
    try:
        S.main(args)
        raise AssertionError("expected an error")
    except SystemExit as e:
        assert str(e) == ("error: out/smoke already holds a run; --resume 1 continues it, --run NAME starts another "
                          "(or delete the folder)")
    assert files == {f: (tmp_path / "out" / "smoke" / f).read_bytes() for f in files}


def test_bad_init_is_a_one_line_error(tmp_path):
    import pytest

    with pytest.raises(SystemExit, match="error: no checkpoint at"):
        S.main([f"--init={tmp_path / 'nope.pt'}"])


def test_sft_lr_follows_the_cosine_to_its_end(tmp_path, monkeypatch):
    """The last of 3 SFT steps runs at sft_lr · (end + (1 − end) · (1 + cos(2π/3)) / 2), worked by hand: 0.325 · sft_lr
    for `--sft_lr_end=0.1`, which gets a results row of its own; the default (end 1) keeps sft_lr throughout."""
    monkeypatch.chdir(tmp_path)
    tiny_checkpoint(tmp_path / "init.pt")
    base = [f"--init={tmp_path / 'init.pt'}", "--sft_steps=3", "--rl_steps=0", "--n_expert=8", "--final_n=2",
            "--eval_every=3", "--eval_n=2", "--sft_lr=1e-2"]
    for extra, lr, label in ((["--sft_lr_end=0.1"], 0.325e-2,
                              "SFT w/o CoT (final_n 2, n_expert 8, sft_steps 3, sft_lr 0.01, sft_lr_end 0.1)"),
                             ([], 1e-2, "SFT w/o CoT (final_n 2, n_expert 8, sft_steps 3, sft_lr 0.01)")):
        summary = S.main(base + extra + [f"--run=lr{len(extra)}"])
        _, ckpt = load_checkpoint(summary["checkpoint"])
        assert abs(ckpt["sft_opt"]["param_groups"][0]["lr"] - lr) < 1e-9
        assert summary["method"] == label
