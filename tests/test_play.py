"""Episodes of the env through the sampler: env replies as forced tokens, masks on agent tokens only, the two views,
malformed model output as an `error format` observation."""

import torch

import tokenizer as tk
from env import PI_FORMS, TRAIN_SEEDS
from rollout import kl_teacher_student
from model import GPT, GPTConfig
from rollout import Episodes, Played, distinct, play, student_view


def random_model(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=tk.get_tokenizer().n_vocab, block_size=256, n_layer=1, n_head=2, n_embd=16)).eval()


SEEDS = list(TRAIN_SEEDS[:6])


def test_random_model_plays_without_crashing():
    """An untrained model writes garbage: every episode ends in error observations and reward 0, never a crash."""
    p = play(random_model(), SEEDS, 2, temperature=1.0, generator=torch.Generator().manual_seed(0), max_len=256)
    assert p.rewards.shape == (12,) and (p.rewards == 0).all()
    assert any(text.startswith("error") for env in p.envs for role, text in env.history if role == "tool")


def runs(ids, mask, value):
    """Maximal runs of consecutive tokens whose mask equals `value`, as lists of ids."""
    out, cur = [], []
    for t, m in zip(ids, mask):
        if m == value:
            cur.append(t)
        elif cur:
            out, cur = out + [cur], []
    return out + ([cur] if cur else [])


def test_forced_tokens_are_the_env_text_and_masks_cover_agent_tokens_only():
    p = play(random_model(1), SEEDS, 1, pi="full", temperature=1.0, generator=torch.Generator().manual_seed(1),
             max_len=256, max_turn_tokens=6)
    ep = p.episodes
    for row, env in enumerate(p.envs):
        n = ep.lengths[row].item()
        ids, mask = ep.ids[row, :n].tolist(), ep.mask[row, :n].tolist()
        forced = [tk.decode(r) for r in runs(ids, mask, 0)]
        sampled = [tk.decode(r) for r in runs(ids, mask, 1)]
        # the first forced run is the teacher's prompt; each later one is the env's reply to one agent turn
        assert forced[0] == f"<|sys|> shop\n<|pi|> {env.pi['full']} <|/pi|>\n<|user|> {env.history[0][1]}\n<|agent|>"
        replies = [(role, text) for role, text in env.history[1:] if role != "agent"]
        for run, (role, text) in zip(forced[1:], replies):
            assert run.startswith(f"<|{role}|> {text}")
        # each sampled run is one agent turn, exactly as the env received it
        agent = [text for role, text in env.history if role == "agent"]
        assert [s.strip() for s in sampled] == agent
        assert ep.done[row] == env.done


def test_student_view_is_the_teacher_episode_without_the_pi_line():
    m = random_model(2)
    for form in PI_FORMS:
        p = play(m, SEEDS, 1, pi=form, temperature=1.0, generator=torch.Generator().manual_seed(2), max_len=200)
        st = student_view(p, form)
        s_ids, s_mask = st.ids, st.mask
        assert torch.equal(st.logp[s_mask.bool()], p.episodes.logp[p.episodes.mask.bool()])
        for row, env in enumerate(p.envs):
            student_prompt = tk.encode(f"<|sys|> shop\n<|user|> {env.history[0][1]}\n<|agent|>")
            n = st.lengths[row].item()
            assert n == p.episodes.lengths[row].item() - len(tk.encode(f"<|pi|> {env.pi[form]} <|/pi|>\n"))
            assert (s_ids[row, n:] == tk.special("<|pad|>")).all() and s_ids[row, n - 1] != tk.special("<|pad|>")
            assert s_ids[row, : len(student_prompt)].tolist() == student_prompt
            forced = s_ids[row][~s_mask[row].bool()].tolist()  # (the model itself may sample anything)
            assert tk.special("<|pi|>") not in forced and tk.special("<|/pi|>") not in forced
            t_agent = p.episodes.ids[row][p.episodes.mask[row].bool()]
            assert torch.equal(s_ids[row][s_mask[row].bool()], t_agent)  # the same outputs, in the same order


def test_student_prompt_never_holds_pi():
    p = play(random_model(4), SEEDS, 2, pi=None, temperature=1.0, generator=torch.Generator().manual_seed(4), max_len=120)
    pi_ids = {tk.special("<|pi|>"), tk.special("<|/pi|>")}
    for row, env in enumerate(p.envs):
        forced = [t for t, m in zip(p.episodes.ids[row].tolist(), p.episodes.mask[row].tolist()) if not m]
        assert not pi_ids & set(forced)
        assert env.pi["full"] not in tk.decode(forced)


def test_kl_teacher_student_against_a_direct_computation():
    """The per-episode KL equals a token-by-token sum over separately built teacher and student contexts."""
    m = random_model(3)
    p = play(m, SEEDS[:3], 1, pi="key", temperature=1.0, generator=torch.Generator().manual_seed(3), max_len=120)
    kl = kl_teacher_student(m, p, "key")
    st = student_view(p, "key")
    s_ids, s_mask = st.ids, st.mask
    for row in range(3):
        t_ids, t_mask = p.episodes.ids[row], p.episodes.mask[row]
        t_pos = [t for t in range(len(t_ids)) if t_mask[t]]
        s_pos = [t for t in range(len(s_ids[row])) if s_mask[row, t]]
        ref = 0.0
        for a, b in zip(t_pos, s_pos):
            pt = torch.log_softmax(m(t_ids[None, :a])[0][0, -1].double(), -1)
            ps = torch.log_softmax(m(s_ids[row][None, :b])[0][0, -1].double(), -1)
            ref += (pt.exp() * (pt - ps)).sum().item()
        assert abs(kl[row].item() - ref) < 1e-3 * max(1.0, abs(ref))
    assert (kl > 0).all()


def test_distinct_keeps_each_episode_once_per_group_and_counts_its_copies():
    """Hand-made: groups of 3; a copy is the same tokens up to the episode's length (padding after it does not
    count); the same episode in two different groups stays twice."""
    a, b, c = [5, 6, 7, 8], [5, 6, 9, 8], [5, 6, 7]
    rows = [a, b, a, c, c, a]  # group 0: a b a; group 1: c c a
    ids = torch.full((6, 5), 0)
    for r, toks in enumerate(rows):
        ids[r, : len(toks)] = torch.tensor(toks)
    ids[0, 4], ids[2, 4] = 1, 2  # different padding after the same episode
    lengths = torch.tensor([len(t) for t in rows])
    ep = Episodes(ids, (ids > 4).float(), torch.arange(30.0).view(6, 5), lengths, torch.ones(6, dtype=torch.bool))
    played = Played(ep, torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0]), list("ABCDEF"))
    uniq, kept, inverse = distinct(played, 3)
    assert kept.tolist() == [0, 1, 3, 5] and inverse.tolist() == [0, 1, 0, 2, 2, 3]
    assert torch.bincount(inverse).tolist() == [2, 1, 2, 1]
    assert torch.equal(uniq.episodes.ids, ids[[0, 1, 3, 5]]) and torch.equal(uniq.episodes.logp, ep.logp[[0, 1, 3, 5]])
    assert uniq.rewards.tolist() == [1.0, 0.0, 0.0, 1.0] and uniq.envs == ["A", "B", "D", "F"]
    assert torch.equal(uniq.rewards[inverse], played.rewards)  # per-episode values expand back to every copy


def test_another_tasks_pi_is_shown_and_own_pi_seeds_change_nothing():
    """pi_seeds puts task pi_seeds[i]'s PI line in task i's prompt (the collapse probe); pi_seeds equal to the
    tasks themselves gives the ordinary teacher episodes, token for token."""
    m, other = random_model(2), SEEDS[1:] + SEEDS[:1]
    own = play(m, SEEDS, 1, pi="full", temperature=1.0, generator=torch.Generator().manual_seed(3))
    same = play(m, SEEDS, 1, pi="full", temperature=1.0, generator=torch.Generator().manual_seed(3), pi_seeds=SEEDS)
    assert torch.equal(own.episodes.ids, same.episodes.ids)
    swapped = play(m, SEEDS, 1, pi="full", temperature=1.0, generator=torch.Generator().manual_seed(3), pi_seeds=other)
    for row, env in enumerate(swapped.envs):
        text = tk.decode(swapped.episodes.ids[row, : swapped.episodes.lengths[row]].tolist())
        assert env.pi["full"] == own.envs[row + 1 - len(SEEDS) * (row == len(SEEDS) - 1)].pi["full"]
        assert f"<|pi|> {env.pi['full']} <|/pi|>" in text and env.world.request() in text
    assert [e.pi["full"] for e in swapped.envs] != [e.pi["full"] for e in own.envs]
    a, b = student_view(swapped, "full"), student_view(own, "full")  # the student's prompt has no PI line: the same
    for row in range(len(SEEDS)):
        n = int(b.mask[row].nonzero()[0])  # the prompt: everything before the first sampled token
        assert n > 10 and a.ids[row, :n].tolist() == b.ids[row, :n].tolist()


def test_kept_sampler_distributions_give_the_kl_of_a_fresh_teacher_pass():
    """keep_dist: the sampler's log-softmax at each sampled token equals a plain forward's over the finished episode,
    so kl_teacher_student's KL and teacher log-probs are the same with or without the teacher's second pass; and
    `distinct` keeps each kept episode's distributions."""
    m = random_model(4)
    g = lambda: torch.Generator().manual_seed(5)
    kept = play(m, SEEDS, 2, pi="key", temperature=0.75, generator=g(), keep_dist=True)
    plain = play(m, SEEDS, 2, pi="key", temperature=0.75, generator=g())
    assert plain.episodes.dist is None and torch.equal(kept.episodes.ids, plain.episodes.ids)
    assert [len(d) for d in kept.episodes.dist] == kept.episodes.mask.sum(1).tolist()
    (kl_a, lp_a), (kl_b, lp_b) = (kl_teacher_student(m, p, "key", True) for p in (kept, plain))
    assert torch.allclose(lp_a, lp_b, atol=1e-5) and torch.allclose(kl_a, kl_b, atol=1e-4)
    uniq, rows, _ = distinct(kept, 2)
    assert all(torch.equal(d, kept.episodes.dist[r]) for d, r in zip(uniq.episodes.dist, rows.tolist()))
