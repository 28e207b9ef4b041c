"""Typing noise for training inputs: the character slips people make when they type a message.

Shoppers write "custmer support" and "edlete my account"; a WordPiece tokenizer cuts a misspelt
word into pieces the model never saw together, while a character n-gram model barely notices.
Training on inputs with fresh random slips each epoch (a deleted, swapped, doubled or replaced
letter, or a missing space, in a share of the words) teaches the model to read through them. Only training batches get
noise; validation, evaluation and serving read the text as written.

Pure functions over strings, seeded: the same seed gives the same slips.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"([^\W\d_]{3,})( (?=[^\W\d_]))?")  # letters only, 3 or more, and the space before a next word
_LETTERS = string.ascii_lowercase


def add_typos(text: str, rate: float, rng: np.random.Generator) -> str:
    """`text` with each word of 3+ letters, with probability `rate`, given one slip: a letter
    deleted, two neighbours swapped, a letter doubled, a letter replaced by a random one, or the
    space to the next word left out. Numbers, ids and words of one or two letters stay."""
    if rate <= 0:
        return text

    def slip(match: re.Match) -> str:
        word, space = match.group(1), match.group(2) or ""
        if rng.random() >= rate:
            return word + space
        kind = int(rng.integers(5 if space else 4))
        if kind == 4:
            return word
        i = int(rng.integers(len(word)))
        if kind == 0:
            word = word[:i] + word[i + 1:]
        elif kind == 1:
            i = min(i, len(word) - 2)
            word = word[:i] + word[i + 1] + word[i] + word[i + 2:]
        elif kind == 2:
            word = word[:i + 1] + word[i:]
        else:
            word = word[:i] + _LETTERS[int(rng.integers(len(_LETTERS)))] + word[i + 1:]
        return word + space

    return _WORD.sub(slip, text)


class TypoNoise:
    """Adds typos to a batch of model inputs: plain strings, or (first, second) pairs where
    both texts get them. One generator per epoch and worker, so epochs see different slips."""

    def __init__(self, rate: float, seed: Sequence[int] | int):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"typo rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.rng = np.random.default_rng(seed)

    def __call__(self, inputs: Sequence) -> list:
        if isinstance(inputs, str):
            raise TypeError("TypoNoise takes a batch of inputs, not one string")
        return [tuple(add_typos(t, self.rate, self.rng) for t in x) if isinstance(x, tuple)
                else add_typos(x, self.rate, self.rng) for x in inputs]
