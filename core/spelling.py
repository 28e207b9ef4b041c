"""Spelling normalisation against the training vocabulary: "edlete" -> "delete", "customersupport"
-> "customer support".

A WordPiece tokenizer cuts a misspelt word into pieces the model never saw together; a character
n-gram model barely notices. Training with typing slips (`core/typos.py`) teaches the model to read
through some of them; this module removes the rest before the model reads the text. The
vocabulary is the words of the adapter's own training data that occur at least `min_count` times
(a slip that happens once in the data is not a word). A word of 3+ letters that is not in it
becomes the most frequent vocabulary word one edit away (a letter deleted, inserted, replaced, or
two neighbours swapped), or else two vocabulary words when a missing space splits it so; a word
with neither stays as written. Numbers, ids, words glued to digits and words of one or two letters
are never touched.

The vocabulary is saved beside the adapter's weights, so training, evaluation and serving read
text through the same normaliser. Pure functions over strings; no Ray, no torch.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

SPELLING_FILE = "spelling.json"
"""The vocabulary's file in an adapter directory."""

MIN_LETTERS = 3
"""Shorter words are never corrected: one edit away from too many others."""

_WORD = re.compile(r"(?<![\w'])[^\W\d_]+(?![\w'])")  # letters only, not glued to digits, _ or '
_LETTERS = string.ascii_lowercase


def words(text: str) -> list[str]:
    """The lower-cased letter-only words of `text`, as the normaliser sees them."""
    return [w.lower() for w in _WORD.findall(text)]


def _edits(word: str) -> set[str]:
    """Every string one deletion, swap of neighbours, replacement or insertion away from `word`."""
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    deletes = [a + b[1:] for a, b in splits if b]
    swaps = [a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1]
    replaces = [a + c + b[1:] for a, b in splits if b for c in _LETTERS]
    inserts = [a + c + b for a, b in splits for c in _LETTERS]
    return set(deletes + swaps + replaces + inserts)


class SpellingNormaliser:
    """Corrects the words of a text against a vocabulary of word counts.

    `normaliser(text)` returns the text with each unknown word of 3+ letters replaced by its
    correction; `normaliser.batch(inputs)` does it for model inputs (strings or (first, second)
    pairs). Known words, and unknown ones with no correction, keep their case and spelling.
    """

    def __init__(self, counts: dict[str, int], known: Iterable[str] = (), min_count: int = 2):
        if min_count < 1:
            raise ValueError(f"spelling min_count must be at least 1, got {min_count}")
        self.min_count = min_count
        self.counts = {w: int(c) for w, c in counts.items() if c >= min_count}
        self.known = frozenset(w for w in known if w not in self.counts)
        self._correct = lru_cache(maxsize=65536)(self._correction)

    @classmethod
    def from_texts(cls, texts: Iterable, known: Iterable[str] = (), min_count: int = 2) -> "SpellingNormaliser":
        """The vocabulary of `texts` (strings, or (first, second) pairs); `known`: words never
        corrected though the texts lack them (the tokenizer's whole words: `known_words`)."""
        counts: Counter = Counter()
        for text in texts:
            for part in (text if isinstance(text, (tuple, list)) else (text,)):
                counts.update(words(part))
        return cls(dict(counts), known, min_count)

    def __len__(self) -> int:
        return len(self.counts)

    def correct(self, word: str) -> str:
        """`word` (lower-cased) corrected, or `word` as given when it is known or has no correction."""
        return self._correct(word)

    def _correction(self, word: str) -> str:
        low = word.lower()
        if len(low) < MIN_LETTERS or low in self.counts or low in self.known:
            return word
        near = [w for w in _edits(low) if w in self.counts]
        if near:
            return max(near, key=lambda w: (self.counts[w], w))
        splits = [(low[:i], low[i:]) for i in range(2, len(low) - 1)
                  if low[:i] in self.counts and low[i:] in self.counts]
        if splits:
            first, second = max(splits, key=lambda s: (min(self.counts[s[0]], self.counts[s[1]]), s))
            return f"{first} {second}"
        return word

    def __call__(self, text: str) -> str:
        return _WORD.sub(lambda m: self._correct(m.group(0)), text)

    def batch(self, inputs: Sequence) -> list:
        if isinstance(inputs, str):
            raise TypeError("SpellingNormaliser.batch takes a batch of inputs, not one string")
        return [tuple(self(t) for t in x) if isinstance(x, (tuple, list)) else self(x) for x in inputs]

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / SPELLING_FILE
        path.write_text(json.dumps(self.to_dict(), sort_keys=True))
        return path

    def to_dict(self) -> dict:
        return {"min_count": self.min_count, "counts": self.counts, "known": sorted(self.known)}

    @classmethod
    def from_dict(cls, data: dict) -> "SpellingNormaliser":
        return cls(data["counts"], data.get("known", ()), data["min_count"])

    @classmethod
    def load(cls, directory: str | Path) -> "SpellingNormaliser":
        return cls.from_dict(json.loads((Path(directory) / SPELLING_FILE).read_text()))


def known_words(tokenizer) -> list[str]:
    """The words a WordPiece tokenizer holds whole (letters only, 3+): real words the backbone knows,
    which the normaliser leaves alone even when the training data lacks them ("made", "these")."""
    return sorted(w for w in tokenizer.get_vocab() if w.isalpha() and w.islower() and len(w) >= MIN_LETTERS)
