"""Which training examples a capped sample takes: the split's class shares, or flatter ones.

`train.max_train_examples` caps what one run reads. Drawn uniformly, a capped sample of a skewed
split keeps its skew (sentiment's reviews: 77 % positive, 12 % neutral, 10 % negative), so a
macro-averaged metric is learnt from a few hundred examples of the classes it weighs most. With
`train.class_sampling` below 1, class c's share of the sample is proportional to count_c ** power
(temperature sampling, as multilingual models sample their languages: Arivazhagan et al. 2019):
1 keeps the split's shares, 0 takes equal counts. A class with fewer examples than its share gives
all it has and the others share the rest.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd


def class_sample_counts(counts: Mapping[str, int], total: int, power: float) -> dict[str, int]:
    """Examples of each class in a sample of `total` (at most every example), shares proportional
    to count ** power; rounding by largest remainder, ties by class name."""
    if not 0.0 <= power <= 1.0:
        raise ValueError(f"class sampling power must be within 0..1, got {power}")
    counts = {c: int(n) for c, n in counts.items() if n > 0}
    total = min(int(total), sum(counts.values()))
    taken: dict[str, int] = {}
    remaining, open_classes = total, sorted(counts)
    while open_classes:
        weights = {c: counts[c] ** power for c in open_classes}
        norm = sum(weights.values())
        short = [c for c in open_classes if counts[c] <= remaining * weights[c] / norm]
        if not short:
            break
        for c in short:  # gives all it has; the others share what is left
            taken[c] = counts[c]
            remaining -= counts[c]
        open_classes = [c for c in open_classes if c not in short]
    if open_classes:
        weights = {c: counts[c] ** power for c in open_classes}
        norm = sum(weights.values())
        exact = {c: remaining * weights[c] / norm for c in open_classes}
        floors = {c: int(np.floor(v)) for c, v in exact.items()}
        leftover = remaining - sum(floors.values())
        for c in sorted(open_classes, key=lambda c: (floors[c] - exact[c], c))[:leftover]:
            floors[c] += 1
        taken.update(floors)
    return {c: taken.get(c, 0) for c in sorted(counts)}


def class_sample(labels: pd.Series, total: int, power: float, seed: int) -> np.ndarray:
    """Row positions of a seeded sample of `total` rows with `class_sample_counts`' class counts, in
    a seeded random order."""
    labels = pd.Series(labels).astype(str).reset_index(drop=True)
    want = class_sample_counts(labels.value_counts().to_dict(), total, power)
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels.to_numpy() == c), size=n, replace=False)
              for c, n in want.items() if n]
    return rng.permutation(np.concatenate(picked)) if picked else np.array([], dtype=int)
