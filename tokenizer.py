"""The tokenizer: a tiktoken.Encoding over a small byte-level BPE trained on our own environment text.

    python tokenizer.py        # retrain the BPE and rewrite tokenizer.ranks (seconds); the file is shipped

No vocabulary can be downloaded, and a 50k vocabulary would make the output layer the cost of a tiny CPU model,
so we train ~640 tokens on transcripts of every level, family, PI form, with and without CoT (docs/env.md):

- every row id (`k4`) is **one token** (a prototype never learned to copy two-token ids; docs/env.md), so the ids
  are put in the ranks whole and the split pattern keeps them whole;
- every digit of a number is its own token, so arithmetic in the chain of thought is digit by digit;
- a turn ends with "\n", its own token: the sampler's end-of-turn token;
- the special tokens of the protocol (docs/env.md) sit after the ranks.
"""

import base64
import collections
import functools
import os

import regex
import tiktoken

from env import PI_FORMS, expert_act, make, render
from worlds import ITEM_IDS

RANKS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tokenizer.ranks")
SPECIALS = ["<|sys|>", "<|pi|>", "<|/pi|>", "<|user|>", "<|agent|>", "<|tool|>", "<|think|>", "<|/think|>",
            "<|eos|>", "<|pad|>"]
# newline alone; an id (letter + digit, nothing glued after); a word; one digit; punctuation; spaces
PAT = r"""\n| ?[bdfghjkmnpqz][1-9](?![a-z0-9])| ?[a-z]+| ?[0-9]| ?[^\sa-z0-9]+| +"""
VOCAB_TARGET = 640  # bytes + ids + merges + specials; also the model's vocab_size (a multiple of 64)
# words the base model's skill lines use (pretrain.py) that transcripts do not
EXTRA_TEXT = "price stock calc min max rows of colour size count = + - * > < >= <=\n"


TRAINING_LEVELS = ("L1", "L2", "L3")


def training_text(n_seeds=300):
    """Expert episodes of the training levels L1-L3, in the student view and every teacher view, with and without
    CoT. The OOD split is left out on purpose: its text is made of these tokens (tests/test_ood.py)."""
    parts = [EXTRA_TEXT]
    for level in TRAINING_LEVELS:
        env = make("toy_shop", level)
        for seed in range(n_seeds):
            env.reset(2_000_000 + seed)  # a seed range no experiment uses
            cot = seed % 2 == 0
            while True:
                # the list CoT: the text the shipped ranks were trained on (the draft CoT adds no new word)
                _, _, done, _ = env.step(expert_act(render(env.history), cot=cot, style="list"))
                if done:
                    break
            parts += [env.transcript()] + [env.transcript(f) for f in PI_FORMS]
    return "".join(parts)


def train_ranks(text, vocab_target=VOCAB_TARGET):
    """Byte-level BPE on pre-split chunk counts: -> {token bytes: rank}. Ids are whole tokens, not learned."""
    specials_re = "|".join(regex.escape(s) for s in SPECIALS)
    counts = collections.Counter()
    for piece in regex.split(specials_re, text):
        counts.update(regex.findall(PAT, piece))
    ranks = {bytes([b]): b for b in range(256)}
    for i in ITEM_IDS:
        ranks[f" {i}".encode()] = len(ranks)
    words = {tuple(bytes([b]) for b in w.encode()): c for w, c in counts.items() if w.encode() not in ranks}
    while len(ranks) < vocab_target - len(SPECIALS):
        pairs = collections.Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[a, b] += c
        if not pairs:
            break
        (a, b), _ = pairs.most_common(1)[0]
        ranks[a + b] = len(ranks)
        words = {_merge(w, a, b): c for w, c in words.items()}
    # Renumber the merged tokens canonically (by length, then bytes) so that a small change in the corpus's counts
    # does not reshuffle the ids of a base model trained on them. A token is still ranked after the two shorter
    # tokens it was merged from; every chunk of env text is one whole token, which tiktoken looks up directly.
    fixed = 256 + len(ITEM_IDS)
    merged = sorted((t for t, r in ranks.items() if r >= fixed), key=lambda t: (len(t), t))
    return {**{t: r for t, r in ranks.items() if r < fixed}, **{t: fixed + i for i, t in enumerate(merged)}}


def _merge(word, a, b):
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
            out.append(a + b)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def save_ranks(ranks, path=RANKS_PATH):
    with open(path, "w") as f:
        for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
            f.write(f"{base64.b64encode(token).decode()} {rank}\n")


@functools.lru_cache(maxsize=None)
def get_tokenizer(path=RANKS_PATH):
    """The project's Encoding. Specials get the ids right after the ranks; `n_vocab` is the model's vocab size."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no tokenizer ranks at {path}; run `python tokenizer.py` to build them")
    ranks = {}
    with open(path) as f:
        for line in f:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    specials = {s: len(ranks) + i for i, s in enumerate(SPECIALS)}
    return tiktoken.Encoding("toy_shop", pat_str=PAT, mergeable_ranks=ranks, special_tokens=specials)


def encode(text):
    return get_tokenizer().encode(text, allowed_special="all")


def decode(ids):
    return get_tokenizer().decode(list(ids))


def special(name):
    """The id of one special token, e.g. special('<|agent|>')."""
    return get_tokenizer().encode_single_token(name)


if __name__ == "__main__":
    text = training_text()
    ranks = train_ranks(text)
    save_ranks(ranks)
    tok = get_tokenizer.__wrapped__()
    n = len(tok.encode(text, allowed_special="all"))
    print(f"wrote {RANKS_PATH}: {len(ranks)} ranks + {len(SPECIALS)} specials = {tok.n_vocab} tokens; "
          f"{len(text):,} chars of training text -> {n:,} tokens ({len(text) / n:.2f} chars/token)")
