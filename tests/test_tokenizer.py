"""The tokenizer: round trips, one token per row id, digits split, newline alone, the shipped ranks reproducible."""

import tokenizer as tk
from env import PI_FORMS, expert_act, make, render
from worlds import ITEM_IDS, LEVELS


def transcripts():
    for level in LEVELS:
        env = make("toy_shop", level)
        for seed in range(40):
            env.reset(seed)
            done = False
            while not done:
                _, _, done, _ = env.step(expert_act(render(env.history), cot=seed % 2 == 0))
            yield env.transcript()
            for form in PI_FORMS:
                yield env.transcript(form)


def test_round_trip_every_level_form_and_cot():
    for text in transcripts():
        assert tk.decode(tk.encode(text)) == text


def test_vocabulary_size():
    assert 500 <= tk.get_tokenizer().n_vocab <= 700


def test_each_row_id_is_one_token_and_digits_are_split():
    for i in ITEM_IDS:
        assert len(tk.encode(f" {i}")) == 1
        assert len(tk.encode(f"<|tool|> {i} red 31 st3")) == 1 + 1 + 1 + 2 + 2
    pieces = [tk.decode([t]) for t in tk.encode(" total 162 ;")]
    assert pieces == [" total", " 1", "6", "2", " ;"]
    assert [tk.decode([t]) for t in tk.encode(" buy k4 2 card\n")][-1] == "\n"


def test_special_tokens_are_single_ids():
    for s in tk.SPECIALS:
        assert tk.encode(s) == [tk.special(s)]


def test_removing_the_pi_line_removes_exactly_its_tokens():
    """strip_pi(teacher) == student holds token for token, not only as text."""
    for text in transcripts():
        if "<|pi|>" in text:
            head, rest = text.split("<|pi|>", 1)
            line, tail = rest.split("\n", 1)
            assert tk.encode(text) == tk.encode(head) + tk.encode("<|pi|>" + line + "\n") + tk.encode(tail)
            assert tk.encode(head + tail) == tk.encode(head) + tk.encode(tail)


def test_shipped_ranks_are_what_the_training_command_writes():
    ranks = tk.train_ranks(tk.training_text())
    shipped = tk.get_tokenizer()._mergeable_ranks
    assert ranks == shipped
