"""Unit tests for train.baselines.tfidf_logreg: TF-IDF + logistic regression tuned on val (no Ray)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.tasks import get_task
from train.baselines import TFIDF_C_GRID, TFIDF_CLASS_WEIGHTS, _OneVsRest, tfidf_logreg

INTENT = get_task("intent")  # one text per row, primary metric accuracy
LABELS = ["cancel_order", "track_order", "get_refund"]
WORDS = {"cancel_order": ["cancel", "stop", "abort"], "track_order": ["track", "where", "shipping"],
         "get_refund": ["refund", "money", "back"]}
FILLER = ["please", "my", "order", "i", "want", "to", "the", "now", "help", "me"]


def _intent_frame(n: int, seed: int) -> pd.DataFrame:
    """Messages whose label is given by one of its words; the rest is filler shared by every label."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        words = list(rng.choice(FILLER, size=5)) + [rng.choice(WORDS[label])]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return pd.DataFrame(rows)


def test_words_that_give_the_label_are_learned_and_the_report_is_the_models():
    train, val, test = _intent_frame(120, 0), _intent_frame(30, 1), _intent_frame(60, 2)
    report, settings = tfidf_logreg(INTENT, train, val, test, LABELS)
    assert report["accuracy"] >= 0.95 and report["macro_f1"] >= 0.95
    # The keys of the model's own report (Task.score_report), so the table compares like with like.
    model_report = INTENT.score_report(LABELS, np.array([0, 1, 2]), np.eye(3))
    assert set(report) == set(model_report) and report["n"] == len(test)
    assert settings["C"] in TFIDF_C_GRID and settings["class_weight"] in TFIDF_CLASS_WEIGHTS
    assert settings["tuned_on"] == "val" and 0.0 <= settings["val_accuracy"] <= 1.0


def test_sentiment_reads_title_and_text_and_is_scored_by_macro_f1():
    sentiment = get_task("sentiment")
    rng = np.random.default_rng(0)
    mood = {"negative": ["awful", "ripped", "returned"], "neutral": ["okay", "average", "fine"],
            "positive": ["love", "gorgeous", "perfect"]}

    def frame(n: int) -> pd.DataFrame:
        rows = []
        for i in range(n):
            label = sentiment.labels[i % 3]
            # The label word is in the title only: the baseline must read "title. text", as the model does.
            rows.append({"title": str(rng.choice(mood[label])), "text": " ".join(rng.choice(FILLER, size=6)),
                         "label": label})
        return pd.DataFrame(rows)

    report, settings = tfidf_logreg(sentiment, frame(90), frame(30), frame(60), list(sentiment.labels))
    assert report["macro_f1"] >= 0.95
    assert "val_macro_f1" in settings


def test_settings_are_chosen_by_the_val_split():
    """Train: an ambiguous message ('hello') is track_order 16 times and get_refund 4 times. Without
    class weights it reads as track_order; 'balanced' (get_refund is the rare class) tips it to
    get_refund. Which is right is for val to say: the same train split gives either choice."""
    rows = [{"text": "track where shipping", "label": "track_order"}] * 60
    rows += [{"text": "refund money back", "label": "get_refund"}] * 6
    rows += [{"text": "hello", "label": "track_order"}] * 16 + [{"text": "hello", "label": "get_refund"}] * 4
    train = pd.DataFrame(rows)
    test = pd.DataFrame([{"text": "hello", "label": "get_refund"}, {"text": "track where", "label": "track_order"}])
    labels = ["track_order", "get_refund"]
    chosen = {}
    for name in ("track_order", "get_refund"):
        val = pd.DataFrame([{"text": "hello", "label": name}] * 5 + [{"text": "refund money", "label": "get_refund"}])
        report, settings = tfidf_logreg(INTENT, train, val, test, labels, c_grid=(1.0,))
        assert settings["val_accuracy"] == 1.0
        chosen[name] = settings["class_weight"], report["accuracy"]
    assert chosen == {"track_order": (None, 0.5), "get_refund": ("balanced", 1.0)}


def test_the_choice_is_the_best_val_score_of_the_grid():
    train, val, test = _intent_frame(90, 3), _intent_frame(30, 4), _intent_frame(30, 5)
    rng = np.random.default_rng(0)
    for frame in (train, val):  # 30% of labels redrawn at random: the grid's settings score differently
        flip = rng.random(len(frame)) < 0.3
        frame.loc[flip, "label"] = rng.choice(LABELS, flip.sum())
    _, settings = tfidf_logreg(INTENT, train, val, test, LABELS)
    assert settings["grid"] == {"C": list(TFIDF_C_GRID), "class_weight": list(TFIDF_CLASS_WEIGHTS)}
    scores = settings["val_scores"]
    assert [(s["C"], s["class_weight"]) for s in scores] == [(c, w) for c in TFIDF_C_GRID for w in TFIDF_CLASS_WEIGHTS]
    assert len({s["accuracy"] for s in scores}) > 1
    best = max(scores, key=lambda s: s["accuracy"])  # max keeps the first of equal scores, as the baseline does
    assert (settings["C"], settings["class_weight"], settings["val_accuracy"]) == (
        best["C"], best["class_weight"], best["accuracy"])


def test_a_label_missing_from_train_is_never_predicted_and_one_label_is_a_constant():
    x = np.eye(4)
    model = _OneVsRest(1.0, "balanced").fit(x, np.array([0, 0, 2, 2]), n_labels=3)
    assert set(model.predict(x)) <= {0, 2}
    only = _OneVsRest(1.0, None).fit(x, np.array([1, 1, 1, 1]), n_labels=3)
    assert only.predict(x).tolist() == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="class_weight"):
        _OneVsRest(1.0, "auto")


def test_graded_tasks_are_refused():
    relevance = get_task("relevance")
    with pytest.raises(ValueError, match="classifier"):
        tfidf_logreg(relevance, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), ["0", "1", "2"])


def test_the_table_shows_the_baseline_and_what_val_chose():
    from train.evaluate import format_table

    ev = {"task": "intent", "version": "v1", "split": "test", "n": 60, "model_id": "intent@v1",
          "primary_metric": "accuracy",
          "results": {"intent@v1": {"accuracy": 0.9, "macro_f1": 0.88, "n": 60},
                      "majority": {"accuracy": 0.3, "macro_f1": 0.1, "n": 60},
                      "tfidf_logreg": {"accuracy": 0.95, "macro_f1": 0.94, "n": 60}},
          "baseline_settings": {"tfidf_logreg": {"C": 4.0, "class_weight": None, "tuned_on": "val",
                                                 "val_accuracy": 0.97}}}
    table = format_table([ev])
    assert "majority 0.3000, tfidf_logreg 0.9500" in table
    assert "tfidf_logreg: C=4 class_weight=None, chosen on val (accuracy 0.9700)" in table
    del ev["baseline_settings"]  # an evaluation saved before the baseline existed still prints
    assert "tfidf_logreg" in format_table([ev])


def test_first_stage_blend_ranks_each_pool_between_cosine_and_bm25():
    from train.baselines import blended_scores, ranking

    rng = np.random.default_rng(3)
    test = pd.DataFrame({"query_id": np.repeat(["q1", "q2", "q3"], 8),
                         "label": rng.choice(["irrelevant", "partial", "exact"], 24)})
    cosine, lexical = rng.random(24), rng.random(24) * 12
    assert ranking(test, blended_scores(test, cosine, lexical, 0.0)) == ranking(test, cosine)
    assert ranking(test, blended_scores(test, cosine, lexical, 1.0)) == ranking(test, lexical)
    half = blended_scores(test, cosine, lexical, 0.5)
    assert half.min() >= 0.0 and half.max() <= 1.0  # each pool scaled to 0..1 before blending
    # scaling is per pool: a query whose BM25 scores are all ten times larger ranks the same
    louder = lexical.copy()
    louder[:8] *= 10
    assert np.allclose(blended_scores(test, cosine, louder, 0.5), half)
