"""aisle/shoppers.py's Traffic: when an acknowledged batch first showed in a search answer."""

from __future__ import annotations

from aisle.shoppers import Traffic


def test_each_batch_is_matched_to_the_first_answer_covering_its_end_offset():
    t = Traffic()
    t.acks = [(10.0, 100, 40), (12.0, 150, 50), (13.0, 160, 0), (30.0, 400, 5)]
    t.searches = [(9.0, "v1", 90), (10.5, "v1", 90), (11.0, "v1 in first-stage order", None), (11.5, "v1", 120),
                  (12.5, "v1", 120), (14.0, "v1", 170)]
    # 100 is covered at 11.5 (the answer at 10.5 carries an older snapshot, the one at 11.0 none);
    # 150 at 14.0; a batch with no new events and one no answer covered yet are left out
    assert t.effects() == [(10.0, 1.5, 40, 0.5), (12.0, 2.0, 50, 0.5)]
    assert t.effect_delays() == [(1.5, 40), (2.0, 50)]
