"""Batched multi-turn episodes: a KV-cache sampler where the environment's text enters as forced tokens.

An episode is one token stream: prompt (system line, PI line in the teacher view, user request), then agent turns
the policy samples, each followed by text the policy did not write (tool and user replies). When a row's agent turn
ends (it sampled a stop token, or the turn hit its length cap) a per-row callback reads the turn and returns the forced
tokens that follow, and whether the episode is over. B rows share one KV cache but not one position: at each step
every row that has no forced tokens waiting samples one token (mask 1), and every row feeds the model what it has
not fed yet — the sampled token and the reply behind it (mask 0), at most CHUNK tokens, padded to the longest chunk
of the step. A turn of n sampled tokens and an m-token reply thus costs about n + m / CHUNK steps instead of n + m;
five in six tokens of a toy_shop episode (prompt and replies) are not the agent's.

Rows come in groups: the K samples of one task share a prompt, which is prefilled once and its cache copied K
times. Finished rows drop out of the cache.

`generate_plain` is the reference: no cache, a full forward over the whole sequence at every step. The tests hold the
two equal token for token; bench.py measures how much faster the cache is.

Below the sampler, what every script does with episodes: `play` runs toy_shop episodes in either view, `distinct`
finds the copies within a group, `student_view` / `teacher_view` move an episode between the two contexts, `trimmed`
cuts the tensors a loss is computed on, and `kl_teacher_student` scores the exact KL between the views — the KL in
π-Distill's teacher reward and the premise's initial KL (eval.py) alike.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

import tokenizer as tk
from env import SYS_LINE, make, pi_line
from model import KVCache, kl_div, vocab_logprobs

CHUNK = 8  # most tokens a row feeds the model per step: every row's chunk is padded to the longest (bench.py)
TEMPERATURE = 0.75  # the algorithms' sampling temperature: every training script's rollouts and the sampled evals


@dataclass
class Episodes:
    ids: torch.Tensor  # (B, T) token ids, pad_id after a row's end
    mask: torch.Tensor  # (B, T) 1 where the policy sampled the token, 0 for forced tokens and padding
    logp: torch.Tensor  # (B, T) log-prob of each sampled token under the distribution it was drawn from, else 0
    lengths: torch.Tensor  # (B,) tokens per row, padding excluded
    done: torch.Tensor  # (B,) True if the callback ended the episode, False if max_len cut it off
    dist: list = None  # with keep_dist: per row, the sampler's log-softmax at temperature 1 at its sampled tokens


def next_token(logits, u, temperature, top_k):
    """Draw one token per row from logits (B, V) with the uniforms u (B,): -> (tokens, log-probs), both (B,).

    Inverse-CDF sampling: the draw depends only on the row's distribution and its own uniform, so the cached and
    the plain generator make the same choice from the same seed, whatever the batch composition. Temperature 0 is
    greedy, and its log-prob is the plain softmax's (the sampling distribution would be a point mass).
    """
    logits = logits.float()
    if temperature == 0:
        tok = logits.argmax(dim=-1)
        return tok, F.log_softmax(logits, dim=-1).gather(-1, tok[:, None]).squeeze(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    logp = F.log_softmax(logits, dim=-1)
    cdf = logp.exp().cumsum(dim=-1)
    u = u[:, None] * cdf[:, -1:]  # scale by the total so rounding in the cumsum never runs off the end
    tok = torch.searchsorted(cdf, u).squeeze(-1).clamp_max(logits.size(-1) - 1)
    return tok, logp.gather(-1, tok[:, None]).squeeze(-1)


class _Rows:
    """The per-row bookkeeping both generators share: forced-token queues, the current turn, the callback."""

    def __init__(self, prompts, k, start, on_turn_end, stop_ids, max_turn_tokens):
        self.queue = [list(p[start:]) for p in prompts for _ in range(k)]  # forced tokens still to feed
        self.turn = [[] for _ in self.queue]  # tokens sampled in the current agent turn
        self.ending = [False] * len(self.queue)  # the callback said done: finish once the queue is empty
        self.on_turn_end, self.stop_ids, self.max_turn_tokens = on_turn_end, set(stop_ids), max_turn_tokens

    def choose(self, row, sampled_tok):
        """-> (token at this position, 1 if sampled else 0, True if the row has finished after it)."""
        if self.queue[row]:
            return self.queue[row].pop(0), 0, self.ending[row] and not self.queue[row]
        turn = self.turn[row]
        turn.append(sampled_tok)
        if sampled_tok in self.stop_ids or len(turn) >= self.max_turn_tokens:
            forced, done = self.on_turn_end(row, turn)
            self.turn[row] = []
            self.queue[row].extend(forced)
            self.ending[row] = done
            return sampled_tok, 1, done and not self.queue[row]
        return sampled_tok, 1, False


def _check(prompts, k, max_len, block_size):
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    if max(len(p) for p in prompts) >= max_len:
        raise ValueError(f"a prompt of {max(len(p) for p in prompts)} tokens leaves no room under max_len={max_len}")
    if max_len > block_size:
        raise ValueError(f"max_len={max_len} exceeds the model's block_size={block_size}")
    if k < 1:
        raise ValueError(f"group size k={k} must be >= 1")


@torch.no_grad()
def generate(model, prompts, k=1, *, max_len, on_turn_end=None, stop_ids=(), max_turn_tokens=None,
             temperature=1.0, top_k=None, generator=None, pad_id=0, keep_dist=False):
    """Sample len(prompts) * k episodes with a KV cache; rows g*k .. g*k+k-1 continue prompts[g].

    on_turn_end(row, turn_tokens) -> (forced_tokens, done) is called when a row samples a token in `stop_ids` or its
    turn reaches `max_turn_tokens`; without it, a row samples until max_len. `generator` seeds the uniforms: one
    torch.rand(B) per position, drawn in position order for every row, used or not, exactly as generate_plain draws
    them, so both make the same choices and leave the generator in the same state. With `keep_dist`, Episodes.dist
    holds each row's full-vocabulary log-softmax (temperature 1) at its sampled tokens, (n_sampled, V) in position
    order: the model's distribution there, which a KL against it then needs no second forward pass for.
    """
    _check(prompts, k, max_len, model.config.block_size)
    device, G = model.wte.weight.device, len(prompts)
    B, start = G * k, min(len(p) for p in prompts)
    rows = _Rows(prompts, k, max(len(p) for p in prompts), on_turn_end or (lambda r, t: ([], False)), stop_ids,
                 max_turn_tokens or max_len)  # whole prompts are prefilled: no prompt token waits in a queue
    ids = torch.full((B, max_len), pad_id, dtype=torch.long)
    mask, logp = torch.zeros(B, max_len, dtype=torch.long), torch.zeros(B, max_len)
    lengths, done = torch.full((B,), max_len, dtype=torch.long), torch.zeros(B, dtype=torch.bool)
    uniforms, drawn = torch.zeros(max_len - start, B), 0  # uniforms[t - start]: the draw for position t

    def draw_through(t):
        nonlocal drawn
        while drawn <= t - start:
            uniforms[drawn] = torch.rand(B, generator=generator, device=generator.device if generator else "cpu")
            drawn += 1

    def forward(chunks, cache):
        """Feed each row its chunk of tokens (ragged); -> logits (rows, V) after each row's last token."""
        n = torch.tensor([len(c) for c in chunks])
        x = torch.full((len(chunks), int(n.max())), pad_id, dtype=torch.long)
        for i, c in enumerate(chunks):
            x[i, : len(c)] = torch.tensor(c)
        logits, _ = model(x.to(device), kv_cache=cache, n_new=n.to(device))
        return logits[torch.arange(len(chunks), device=device), n.to(device) - 1]

    for g, p in enumerate(prompts):
        ids[g * k : g * k + k, : len(p)] = torch.tensor(p)
    cache = KVCache(model.config, G, max_len, device, model.wte.weight.dtype)
    logits = forward(prompts, cache).repeat_interleave(k, dim=0)  # each prompt prefilled once per group
    cache.repeat(k)
    active = list(range(B))  # rows still running, in cache order
    pending = [[] for _ in range(B)]  # tokens written to ids but not yet fed to the model
    dist = [[] for _ in range(B)]  # keep_dist: each row's log-softmax rows
    pos = [len(prompts[row // k]) for row in range(B)]  # where each row samples next
    while active:
        ready = [i for i, row in enumerate(active) if not pending[row]]  # rows whose logits predict pos[row]
        if ready:
            draw_through(max(pos[active[i]] for i in ready))
            sampling = [active[i] for i in ready]
            u = uniforms[torch.tensor([pos[row] for row in sampling]) - start, torch.tensor(sampling)]
            row_logits = logits[torch.tensor(ready, device=device)]
            sampled, lp = next_token(row_logits, u.to(device), temperature, top_k)
            if keep_dist:
                for row, row_lp in zip(sampling, F.log_softmax(row_logits.float(), dim=-1).cpu()):
                    dist[row].append(row_lp)
        finished = set()
        for i, s, s_lp in zip(ready, sampled.tolist() if ready else [], lp.tolist() if ready else []):
            row, t = active[i], pos[active[i]]
            rows.choose(row, s)  # the turn bookkeeping; the env's reply lands in the queue, `ending` says if it ends
            forced, rows.queue[row] = rows.queue[row], []
            end = t + 1 + len(forced)  # the reply is written at once and fed as chunks after the sampled token
            ids[row, t], mask[row, t], logp[row, t] = s, 1, s_lp
            ids[row, t + 1 : min(end, max_len)] = torch.tensor(forced[: max_len - t - 1], dtype=torch.long)
            if rows.ending[row] and end <= max_len:
                lengths[row], done[row] = end, True
                finished.add(i)
            elif end >= max_len:  # max_len cut the row off (in its reply or before its next token): done False
                finished.add(i)
            else:
                pending[row], pos[row] = [s] + forced, end
        if len(finished) == len(active):
            break
        if finished:
            keep = [i for i in range(len(active)) if i not in finished]
            cache.keep(torch.tensor(keep, device=device))
            active = [active[i] for i in keep]
        chunks = [pending[row][:CHUNK] for row in active]
        for row in active:
            pending[row] = pending[row][CHUNK:]
        logits = forward(chunks, cache)
    draw_through(int(lengths.max()) - 1)  # the plain generator draws at every position up to the last row's end
    dist = [torch.stack(d) if d else torch.zeros(0, model.config.vocab_size) for d in dist] if keep_dist else None
    return Episodes(ids, mask, logp, lengths, done, dist)


@torch.no_grad()
def generate_plain(model, prompts, k=1, *, max_len, on_turn_end=None, stop_ids=(), max_turn_tokens=None,
                   temperature=1.0, top_k=None, generator=None, pad_id=0):
    """The reference for `generate`: same arguments, same result, but a full forward over every row's whole
    sequence at every position (no cache, no prefill sharing, no dropping of finished rows)."""
    _check(prompts, k, max_len, model.config.block_size)
    device = model.wte.weight.device
    B, start = len(prompts) * k, min(len(p) for p in prompts)
    rows = _Rows(prompts, k, start, on_turn_end or (lambda r, t: ([], False)), stop_ids, max_turn_tokens or max_len)
    ids = torch.full((B, max_len), pad_id, dtype=torch.long)
    ids[:, :start] = torch.tensor([p[:start] for p in prompts]).repeat_interleave(k, dim=0)
    mask, logp = torch.zeros(B, max_len, dtype=torch.long), torch.zeros(B, max_len)
    lengths, done = torch.full((B,), max_len, dtype=torch.long), torch.zeros(B, dtype=torch.bool)
    running = [True] * B
    for t in range(start, max_len):
        u = torch.rand(B, generator=generator, device=generator.device if generator else "cpu")
        logits, _ = model(ids[:, :t].to(device))
        sampled, lp = next_token(logits[:, -1], u.to(device), temperature, top_k)
        for row in range(B):
            if not running[row]:
                continue
            tok, m, finished = rows.choose(row, sampled[row].item())
            ids[row, t], mask[row, t], logp[row, t] = tok, m, (lp[row].item() if m else 0.0)
            if finished:
                lengths[row], done[row], running[row] = t + 1, True, False
        if not any(running):
            break
    return Episodes(ids, mask, logp, lengths, done)


# ----------------------------------------------------------------------------------------------------------------
# episodes of the environment: the sampler above, with env replies as forced tokens


@dataclass
class Played:
    episodes: Episodes  # ids, masks (1 = agent-sampled), log-probs, lengths
    rewards: torch.Tensor  # (B,) the env's reward; 0 for an episode cut off by max_len
    envs: list  # the B finished environments (history, per-check info, the world)


def play(model, seeds, k=1, *, level="L2", pi=None, temperature=1.0, top_k=None, generator=None, max_len=256,
         max_turn_tokens=96, pi_seeds=None, keep_dist=False):
    """len(seeds) * k episodes of toy_shop; rows i*k .. i*k+k-1 play seeds[i]. `pi` = None is the student view,
    a PI form name the teacher view (the PI line in the prompt). `pi_seeds`: the tasks whose PI the teacher is shown
    (default: its own; another task's PI tests whether the teacher still reads it). An agent turn ends at its newline
    token; the env's reply and the next `<|agent|>` marker are forced; a finished episode ends `<|user|> bye<|eos|>`.
    `keep_dist`: keep the sampler's distributions (generate), for a KL against the sampling view."""
    envs = []
    prompts = []
    for i, seed in enumerate(seeds):
        for _ in range(k):
            envs.append(make("toy_shop", level))
            envs[-1].reset(seed)
            if pi_seeds is not None:  # the PI lines of task pi_seeds[i] in place of this task's own
                other = make("toy_shop", level)
                other.reset(pi_seeds[i])
                envs[-1].pi = other.pi
        prompts.append(tk.encode(envs[-1].transcript(pi) + "<|agent|>"))
    rewards = torch.zeros(len(envs))

    def on_turn_end(row, turn):
        env = envs[row]
        obs, reward, done, _ = env.step(tk.decode(turn))
        if done:
            rewards[row] = reward
            return tk.encode(f"<|{env.history[-1][0]}|> {obs}<|eos|>"), True
        return tk.encode(f"<|tool|> {obs}\n<|agent|>"), False

    episodes = generate(model, prompts, k, max_len=max_len, on_turn_end=on_turn_end, stop_ids=tk.encode("\n"),
                        max_turn_tokens=max_turn_tokens, temperature=temperature, top_k=top_k, generator=generator,
                        pad_id=tk.special("<|pad|>"), keep_dist=keep_dist)
    return Played(episodes, rewards * episodes.done, envs)


def distinct(played, k):
    """The distinct episodes of each group: -> (Played of the B' distinct episodes, rows (B',), inverse (B,)).

    Rows i*k .. i*k+k-1 are one task's group. A near-deterministic policy samples the same episode several times in a
    group (π-Distill's teacher: about two groups in three are four copies of one episode from the shipped base), and
    a copy adds nothing but its weight: the same tokens, reward and log-probs. Each episode is kept once, in order of
    first appearance: rows[j] is where distinct episode j first occurs, inverse[i] the distinct episode of row i, so
    x[rows] picks per-episode values of the distinct ones, y[inverse] expands theirs back, and
    torch.bincount(inverse) counts the copies. An episode is only ever compared within its own group."""
    ep, rows, inverse = played.episodes, [], []
    for g in range(ep.ids.size(0) // k):
        seen = {}
        for row in range(g * k, g * k + k):
            key = tuple(ep.ids[row, : ep.lengths[row]].tolist())
            if key not in seen:
                seen[key] = len(rows)
                rows.append(row)
            inverse.append(seen[key])
    r = torch.tensor(rows)
    kept = Episodes(ep.ids[r], ep.mask[r], ep.logp[r], ep.lengths[r], ep.done[r],
                    None if ep.dist is None else [ep.dist[i] for i in rows])
    return Played(kept, played.rewards[r], [played.envs[i] for i in rows]), r, torch.tensor(inverse)


def student_view(played, pi):
    """The teacher's episodes with the PI line cut out: an Episodes of the same width, padded at the end.

    The PI line is a contiguous block right after the system line, so deleting it leaves exactly the student's
    context followed by the same agent and env tokens: both views score the same outputs, as the paper's two
    policies do. The log-probs move with their tokens, so logp still holds the teacher's sampling log-probs
    (π^T_old)."""
    ep, start = played.episodes, len(tk.encode(SYS_LINE))
    ids, mask, logp = torch.full_like(ep.ids, tk.special("<|pad|>")), torch.zeros_like(ep.mask), torch.zeros_like(ep.logp)
    lengths = ep.lengths.clone()
    for row, env in enumerate(played.envs):
        line = tk.encode(pi_line(env.pi[pi]))
        end = start + len(line)
        assert ep.ids[row, start:end].tolist() == line, "the teacher's prompt does not hold this PI line"
        n = ep.ids.size(1) - len(line)
        for out, src in ((ids, ep.ids), (mask, ep.mask), (logp, ep.logp)):
            out[row, :n] = torch.cat([src[row, :start], src[row, end:]])
        lengths[row] -= len(line)
    return Episodes(ids, mask, logp, lengths, ep.done)


def teacher_view(played, pi):
    """Student episodes with the PI line put in after the system line (the inverse of student_view): OPSD scores the
    student's own samples under the teacher's context. The inserted tokens are forced (mask 0, logp 0)."""
    ep, start = played.episodes, len(tk.encode(SYS_LINE))
    lines = [tk.encode(pi_line(env.pi[pi])) for env in played.envs]
    width = ep.ids.size(1) + max(len(line) for line in lines)
    ids = torch.full((ep.ids.size(0), width), tk.special("<|pad|>"), dtype=torch.long)
    mask, logp = torch.zeros_like(ids), torch.zeros(ids.shape)
    for row, line in enumerate(lines):
        n = ep.ids.size(1) + len(line)
        line_ids = torch.tensor(line)
        ids[row, :n] = torch.cat([ep.ids[row, :start], line_ids, ep.ids[row, start:]])
        mask[row, :n] = torch.cat([ep.mask[row, :start], torch.zeros_like(line_ids), ep.mask[row, start:]])
        logp[row, :n] = torch.cat([ep.logp[row, :start], torch.zeros(len(line)), ep.logp[row, start:]])
    return Episodes(ids, mask, logp, ep.lengths + torch.tensor([len(line) for line in lines]), ep.done)


def trimmed(episodes, device, rows=None):
    """ids, mask (float), logp (B', T') of the episodes (all, or those where the bool `rows` is True), cut to the
    longest of them and moved to `device`: the tensors a loss is computed on."""
    rows = torch.ones_like(episodes.lengths, dtype=torch.bool) if rows is None else rows
    T = int(episodes.lengths[rows].max())
    return (episodes.ids[rows, :T].to(device), episodes.mask[rows, :T].float().to(device),
            episodes.logp[rows, :T].to(device))


@torch.no_grad()
def kl_teacher_student(model, played, pi, with_teacher=False, teacher=None):
    """KL_seq(π^T ‖ π^S) per episode of the teacher's samples `played` (PI form `pi`): the exact full-vocabulary
    Σ_v p_T(v) (log p_T(v) − log p_S(v)) at each agent token, summed over the episode, without gradient: the KL in
    π-Distill's teacher reward (Eq. 2) and the premise's initial KL (eval.py). With `with_teacher`, also the teacher's
    log-softmax at those tokens (N, V), row-major, the sg π^T of π-Distill's student term (Eq. 3). `teacher`: other
    weights for the teacher view (default `model`: one network plays both views). Episodes sampled with keep_dist
    carry the teacher's distributions from the sampler (the same weights: no update comes between), which saves the
    teacher's forward pass here."""
    ep, device = played.episodes, model.wte.weight.device
    ids_s, mask_s, _ = trimmed(student_view(played, pi), device)
    if ep.dist is not None:
        lp_t = torch.cat(ep.dist).to(device)  # (N, V), agent tokens, row-major order
    else:
        ids_t, mask_t, _ = trimmed(ep, device)
        lp_t = vocab_logprobs((teacher or model)(ids_t)[0], mask_t)
    lp_s = vocab_logprobs(model(ids_s)[0], mask_s)  # (N, V), the same tokens, same order
    kl_seq = episode_sums(kl_div(lp_t, lp_s), ep.mask)  # KL(π^T ‖ π^S) at each agent token, summed per episode
    return (kl_seq, lp_t) if with_teacher else kl_seq


def episode_sums(per_token, mask):
    """Per-token values (N,) at the agent tokens of B episodes (mask (B, T), row-major order) summed per episode:
    (B,) on the CPU. How every exact KL_seq is made from the per-token KL."""
    rows = torch.arange(mask.size(0)).repeat_interleave(mask.sum(1).long().cpu())
    return torch.zeros(mask.size(0)).index_add_(0, rows, per_token.detach().cpu())


def show_episode(played, row=0):
    """One decoded episode; the tokens the policy sampled are in [brackets], the rest was forced."""
    ep, out = played.episodes, ""
    for t, m in zip(ep.ids[row, : ep.lengths[row]].tolist(), ep.mask[row, : ep.lengths[row]].tolist()):
        out += f"[{tk.decode([t])}]" if m else tk.decode([t])
    return out.replace("][", "")
