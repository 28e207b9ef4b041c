"""Text cleaning and pseudonyms behave the same everywhere they are used."""

from core.text import bucket, dedupe_key, normalize_text, salted_hash


def test_normalize_text_cleans_real_world_mess():
    assert normalize_text("  Great&amp;cheap <b>dress</b>\u200b\n\tfits ") == "Great&cheap dress fits"
    assert normalize_text("ｆｕｌｌｗｉｄｔｈ") == "fullwidth"  # NFKC
    assert normalize_text(None) == "" and normalize_text(float("nan")) == ""


def test_dedupe_key_ignores_case_and_punctuation():
    assert dedupe_key("Where is my ORDER?!") == dedupe_key("where is my order")


def test_salted_hash_is_stable_and_salt_dependent():
    assert salted_hash("user-42", "s1") == salted_hash("user-42", "s1")
    assert salted_hash("user-42", "s1") != salted_hash("user-42", "s2")
    assert "user-42" not in salted_hash("user-42", "s1")


def test_bucket_is_deterministic_and_spread():
    values = [bucket(f"p{i}", seed=0) for i in range(2000)]
    assert values == [bucket(f"p{i}", seed=0) for i in range(2000)]
    assert 0 <= min(values) and max(values) < 10_000
    assert 0.4 < sum(v < 5000 for v in values) / 2000 < 0.6
