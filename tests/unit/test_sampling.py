"""core/sampling.py: the class counts of a capped training sample."""

from __future__ import annotations

import pandas as pd
import pytest

from core.config import ConfigError, from_dict
from core.job_configs import OptimConfig
from core.sampling import class_sample, class_sample_counts

SKEWED = {"positive": 11122, "neutral": 1789, "negative": 1485}  # sentiment's training reviews


def test_power_one_keeps_the_split_shares_and_zero_takes_equal_counts():
    assert class_sample_counts(SKEWED, 3000, 1.0) == {"negative": 309, "neutral": 373, "positive": 2318}
    assert class_sample_counts(SKEWED, 3000, 0.0) == {"negative": 1000, "neutral": 1000, "positive": 1000}
    half = class_sample_counts(SKEWED, 3000, 0.5)
    assert sum(half.values()) == 3000 and 309 < half["negative"] < 1000 and 1000 < half["positive"] < 2318


def test_a_class_short_of_its_share_gives_all_it_has_and_the_others_share_the_rest():
    assert class_sample_counts({"a": 5, "b": 100, "c": 100}, 60, 0.0) == {"a": 5, "b": 28, "c": 27}
    # asking for more than there is takes everything
    assert class_sample_counts(SKEWED, 10**6, 0.0) == SKEWED


def test_the_sample_is_seeded_distinct_and_has_the_counts():
    labels = pd.Series(["positive"] * 800 + ["neutral"] * 120 + ["negative"] * 80)
    rows = class_sample(labels, 300, 0.0, seed=3)
    assert len(set(rows)) == len(rows) == 300
    assert labels.iloc[rows].value_counts().to_dict() == {"positive": 110, "neutral": 110, "negative": 80}
    assert (class_sample(labels, 300, 0.0, seed=3) == rows).all()
    assert not (class_sample(labels, 300, 0.0, seed=4) == rows).all()


def test_the_power_is_validated():
    with pytest.raises(ValueError, match="within 0..1"):
        class_sample_counts(SKEWED, 10, 1.5)
    with pytest.raises(ConfigError):
        from_dict(OptimConfig, {"class_sampling": -0.1})
