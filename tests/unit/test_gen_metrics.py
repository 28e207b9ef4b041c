"""Unit tests for core.gen_metrics."""

from __future__ import annotations

import random

import pandas as pd
import pytest

from core.gen_metrics import (
    AttributeVocabulary,
    _lcs_length,
    attribute_coverage,
    chrf,
    contradictions,
    corpus_mean,
    hallucinated,
    rouge_l,
    slot_accuracy,
    slot_f1,
    slots,
    tokens,
)


# ---- tokens / ROUGE-L ---------------------------------------------------------------------------


def test_tokens_words_apostrophes_and_slots():
    assert tokens("Don't STOP, size-42!") == ["don't", "stop", "size", "42"]
    assert tokens("Your {{ Order  Number }} ships") == ["your", "{{order number}}", "ships"]
    assert tokens("  ... ") == []


def test_rouge_l_identical_and_disjoint():
    assert rouge_l("The cat sat.", "the CAT sat") == 1.0
    assert rouge_l("red shoes", "blue hat") == 0.0
    assert rouge_l("", "blue hat") == 0.0
    assert rouge_l("blue hat", "!!") == 0.0


def test_rouge_l_worked_examples():
    # LCS "the cat on the mat" = 5; P = R = 5/6 -> F = 5/6
    assert rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # LCS "a c" = 2; P = 2/4, R = 2/2 -> F = 2 * 0.5 * 1 / 1.5 = 2/3
    assert rouge_l("a b c d", "a c") == pytest.approx(2 / 3)
    # the slot is one token: LCS "your {{order number}}" = 2 of 3 on each side
    assert rouge_l("Your {{Order Number}} ships", "your {{ order number }} shipped") == pytest.approx(2 / 3)


def _lcs_2d(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a, 1):
        for j, y in enumerate(b, 1):
            table[i][j] = table[i - 1][j - 1] + 1 if x == y else max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


def test_lcs_rolling_row_matches_full_table():
    rng = random.Random(0)
    for _ in range(300):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 12))]
        b = [rng.choice("abcd") for _ in range(rng.randint(0, 12))]
        assert _lcs_length(a, b) == _lcs_2d(a, b)


# ---- chrF ---------------------------------------------------------------------------------------


def test_chrf_identical_disjoint_empty():
    assert chrf("navy blue jacket", "navy blue jacket") == pytest.approx(1.0)
    assert chrf("abc", "xyz") == 0.0
    assert chrf("", "abc") == 0.0
    assert chrf("abc", "   ") == 0.0


def test_chrf_hand_computed():
    # hyp "ab", ref "abc": order 1 P = 2/2, R = 2/3; order 2 P = 1/1, R = 1/2; orders 3..6 have no
    # hypothesis n-grams (not effective). P = 1, R = 7/12, F2 = 5 * 7/12 / (4 + 7/12) = 7/11
    assert chrf("ab", "abc") == pytest.approx(7 / 11)
    # swapped: order 1 P = 2/3, R = 1; order 2 P = 1/2, R = 1; P = 7/12, R = 1
    # F2 = 5 * 7/12 / (4 * 7/12 + 1) = 35/40 = 7/8: beta = 2 weights recall, so not symmetric
    assert chrf("abc", "ab") == pytest.approx(7 / 8)
    # beta = 1 on the first case: 2 * 7/12 / (1 + 7/12) = 14/19
    assert chrf("ab", "abc", beta=1.0) == pytest.approx(14 / 19)


def test_chrf_whitespace_removed_case_sensitive_and_partial():
    assert chrf("a b", "ab") == pytest.approx(1.0)
    assert chrf("AB", "ab") == 0.0
    score = chrf("blue cotton shirt", "blue linen shirt")
    assert 0.0 < score < 1.0
    assert abs(score - chrf("blue linen shirt", "blue cotton shirt")) < 0.1


def test_chrf_against_sacrebleu_if_available():
    sacrebleu = pytest.importorskip("sacrebleu")
    pairs = [("the cat sat on the mat", "the cat is on the mat"), ("ab", "abc"), ("x", "y z")]
    for hyp, ref in pairs:
        expected = sacrebleu.sentence_chrf(hyp, [ref]).score / 100
        assert chrf(hyp, ref) == pytest.approx(expected, abs=1e-6)


# ---- corpus_mean --------------------------------------------------------------------------------


def test_corpus_mean():
    assert corpus_mean(rouge_l, ["a b", "c"], ["a b", "d"]) == pytest.approx(0.5)
    assert corpus_mean(chrf, [], []) == 0.0
    with pytest.raises(ValueError):
        corpus_mean(rouge_l, ["a"], ["a", "b"])


# ---- slots --------------------------------------------------------------------------------------


def test_slots_normalised():
    text = "Hi {{ Customer Name }}, order {{Order   Number}} ships to {{order number}}."
    assert slots(text) == {"{{customer name}}", "{{order number}}"}
    assert slots("no placeholders here") == set()


def test_slot_accuracy_and_f1():
    ref = "Order {{Order Number}} will reach {{Delivery City}}."
    assert slot_accuracy("Your {{ order number }} to {{delivery city}}", ref) == 1.0
    assert slot_accuracy("Your {{order number}}", ref) == 0.0
    assert slot_accuracy("plain", "also plain") == 1.0
    assert slot_f1("plain", "also plain") == 1.0
    # pred {order number}, ref {order number, delivery city}: P = 1, R = 1/2 -> F1 = 2/3
    assert slot_f1("Your {{order number}}", ref) == pytest.approx(2 / 3)
    assert slot_f1("{{refund amount}}", ref) == 0.0
    assert slot_f1("plain", ref) == 0.0


# ---- faithfulness -------------------------------------------------------------------------------

VOCAB = AttributeVocabulary(
    {
        "colour": ("blue", "navy blue", "red"),
        "material": ("cotton", "organic cotton", "oak", "wool"),
        "brand": ("Acme", "Oak & Co"),
    }
)


def test_plain_contradiction():
    product = {"colour": "blue", "material": "wool", "brand": "Acme"}
    assert contradictions("A lovely Acme jumper in red.", product, VOCAB) == [("colour", "red")]
    assert contradictions("A lovely Acme jumper in RED wool.", product, VOCAB) == [("colour", "red")]
    assert hallucinated("Acme jumper in red", product, VOCAB)
    assert contradictions("A blue wool jumper by Acme.", product, VOCAB) == []
    assert not hallucinated("A blue wool jumper by Acme.", product, VOCAB)
    # word boundaries: "reddish" and "wooly" are not values
    assert contradictions("A reddish, bluey jumper", product, VOCAB) == []


def test_contradictions_in_order_of_mention():
    product = {"colour": "blue", "material": "wool"}
    found = contradictions("A cotton shirt in red, by Oak & Co.", product, VOCAB)
    # brand unknown: not checked, but "Oak & Co" still shadows material "oak"
    assert found == [("material", "cotton"), ("colour", "red")]
    assert contradictions("Solid oak legs", product, VOCAB) == [("material", "oak")]


def test_value_inside_own_value_is_not_a_contradiction():  # edge case (a)
    product = {"material": "organic cotton", "colour": "blue"}
    assert contradictions("Made of Organic Cotton.", product, VOCAB) == []
    assert contradictions("Soft cotton feel.", product, VOCAB) == []  # contained in own value
    assert contradictions("Organic cotton and wool.", product, VOCAB) == [("material", "wool")]


def test_value_inside_other_attribute_is_not_a_contradiction():  # edge case (b)
    product = {"brand": "Oak & Co", "material": "wool", "colour": "red"}
    assert contradictions("A red wool throw from Oak & Co.", product, VOCAB) == []
    # a second, standalone "oak" is still a claim about the material
    found = contradictions("Oak & Co throw with solid oak legs", product, VOCAB)
    assert found == [("material", "oak")]


def test_longer_values_match_first():  # edge case (c)
    product = {"colour": "red"}
    assert contradictions("A navy blue jacket", product, VOCAB) == [("colour", "navy blue")]
    assert contradictions("Navy  blue or blue", product, VOCAB) == [
        ("colour", "navy blue"),
        ("colour", "blue"),
    ]
    own_navy = {"colour": "navy blue"}
    assert contradictions("A navy blue jacket", own_navy, VOCAB) == []
    assert contradictions("A deep blue jacket", own_navy, VOCAB) == []  # "blue" within own value


def test_missing_product_values_are_not_checked():
    assert contradictions("red cotton", {"colour": "n/a", "material": ""}, VOCAB) == []


def test_vocabulary_from_products():
    products = pd.DataFrame(
        {
            "brand": ["Acme", "Oak & Co", "Acme", None, ""],
            "colour": ["red", "N/A", " blue ", "red", float("nan")],
        }
    )
    vocab = AttributeVocabulary.from_products(products, ["brand", "colour"])
    assert vocab.values == {"brand": ("Acme", "Oak & Co"), "colour": ("blue", "red")}
    assert contradictions("Acme in red", {"brand": "Acme", "colour": "blue"}, vocab) == [("colour", "red")]


def test_attribute_coverage():
    product = {"brand": "Acme", "colour": "Navy Blue", "material": "n/a", "size": ""}
    attributes = ["brand", "colour", "material", "size"]
    assert attribute_coverage("Acme jacket in navy  blue", product, attributes) == 1.0
    assert attribute_coverage("An Acme jacket", product, attributes) == 0.5
    assert attribute_coverage("An Acmes jacket", product, attributes) == 0.0
    assert attribute_coverage("anything", product, ["material", "size", "weight"]) == 1.0


def test_what_the_products_own_catalog_text_says_is_not_a_contradiction():
    from core.gen_metrics import AttributeVocabulary, contradictions, hallucinated

    vocab = AttributeVocabulary({"material": ("leather", "rubber", "suede")})
    boot = {"material": "leather"}
    text = "Leather boots with a grippy rubber outsole."
    assert contradictions(text, boot, vocab) == [("material", "rubber")]
    assert contradictions(text, boot, vocab, source="Brown leather boot, rubber outsole.") == []
    assert hallucinated("Suede boots with a rubber outsole.", boot, vocab, source="Leather, rubber outsole.")


def test_words_the_catalog_uses_for_any_product_are_not_attribute_claims():
    import pandas as pd

    from core.gen_metrics import claim_vocabulary, hallucinated

    rows = [("leather", "Leather boot with a rubber outsole.")] * 6 + [("rubber", "Rubber wellington.")] * 2 \
        + [("suede", "Suede boot.")] * 5 + [("leather", "Leather belt.")] * 3
    products = pd.DataFrame(rows, columns=["material", "description"])
    vocab, left_out = claim_vocabulary(products, ["material"], "description")
    assert left_out == {"material": ("rubber",)}  # 6 of its 8 mentions are of leather products
    assert vocab.values["material"] == ("leather", "suede")
    assert not hallucinated("A leather boot, rubber outsole.", {"material": "leather"}, vocab)
    assert hallucinated("A suede boot.", {"material": "leather"}, vocab)
