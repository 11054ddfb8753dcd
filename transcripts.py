"""Transcripts as training data: a finished episode as text pieces with loss flags, their token ids, and padded
next-token batches. The pretraining corpus (pretrain.py) and SFT on the expert's transcripts (sft_rl_baseline.py)
both use it."""

import torch

import tokenizer as tk
from env import SYS_LINE, pi_line
from model import IGNORE_INDEX


def transcript_pieces(history, pi=None, reply_loss=False):
    """A finished episode as [(text, has_loss)]: the loss is on the agent's turns (chain of thought included) and,
    with `reply_loss`, on the amounts of a write's `ok …` reply. The SFT data of sft_rl_baseline.py and the
    pretraining corpus both go through it."""
    pieces = [(SYS_LINE, False)] + ([(pi_line(pi), False)] if pi else [])
    for i, (role, text) in enumerate(history):
        end = "<|eos|>" if i == len(history) - 1 else "\n"
        if role == "agent":
            pieces += [("<|agent|>", False), (f" {text}{end}", True)]
        elif role == "tool" and reply_loss and text.startswith("ok "):  # the amounts follow from the rows
            pieces += [("<|tool|> ok", False), (f" {text[3:]}{end}", True)]
        else:
            pieces.append((f"<|{role}|> {text}{end}", False))
    return pieces


def encode_pieces(pieces):
    """-> (ids, loss flags): each piece encodes on its own, which equals encoding the whole text (pieces end at a
    newline or a special token, where the tokenizer's split pattern cuts anyway)."""
    ids, flags = [], []
    for text, has_loss in pieces:
        t = tk.encode(text)
        ids += t
        flags += [has_loss] * len(t)
    return ids, flags


def collate(seqs, device):
    """[(ids, loss flags)] -> x, y (B, T): y[t] = ids[t+1] where that token has loss, else -1; padded."""
    T = max(len(ids) for ids, _ in seqs) - 1
    x = torch.full((len(seqs), T), tk.special("<|pad|>"), dtype=torch.long)
    y = torch.full((len(seqs), T), IGNORE_INDEX, dtype=torch.long)
    for b, (ids, flags) in enumerate(seqs):
        n = len(ids) - 1
        x[b, :n] = torch.tensor(ids[:-1])
        y[b, :n] = torch.tensor([t if f else IGNORE_INDEX for t, f in zip(ids[1:], flags[1:])])
    return x.to(device), y.to(device)
