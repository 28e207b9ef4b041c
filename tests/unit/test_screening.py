"""Unit tests for core.screening (no Ray)."""

from __future__ import annotations

import itertools
import random

import pytest

from core.config import ConfigError, from_dict
from core.screening import REASONS, AnomalyScreen, ScreenConfig

T0 = 1_700_000_000.0
_ids = itertools.count()


def ev(ts: float, kind: str = "impression", product: str = "p1", user: str = "u1", session: str = "s1") -> dict:
    return {"event_id": f"e{next(_ids)}", "ts": T0 + ts, "user": user, "session": session, "type": kind,
            "product_id": product, "query": None, "position": None}


def feed(screen: AnomalyScreen, events: list[dict]) -> list[list[str]]:
    return [screen.screen(e) for e in events]


def test_normal_shopper_is_clean():
    events = [ev(i, "impression", f"p{i}") for i in range(5)]
    events += [ev(20, "click", "p2"), ev(30, "add_to_cart", "p2"), ev(600, "purchase", "p2")]
    screen = AnomalyScreen()
    assert feed(screen, events) == [[]] * 8
    assert screen.counts() == {"screened": 8, "flagged": 0, **dict.fromkeys(REASONS, 0)}


def test_bot_user_flagged_after_the_cap():
    # 500 events in 10 s, spread over 10 sessions (50 each) so only the user cap (120) is crossed
    bot = [ev(i * 0.02, "impression", f"p{i % 7}", user="bot", session=f"s{i % 10}") for i in range(500)]
    screen = AnomalyScreen()
    flags = feed(screen, bot)
    assert flags[:120] == [[]] * 120
    assert flags[120:] == [["user_rate"]] * 380
    assert screen.counts()["user_rate"] == 380 and screen.counts()["flagged"] == 380
    # another user at the same time is untouched; the bot is clean again once its window has passed
    assert screen.screen(ev(9.99, user="shopper", session="other")) == []
    assert screen.screen(ev(9.98 + 60, user="bot", session="s0")) == []


def test_session_rate():
    screen = AnomalyScreen(ScreenConfig(max_session_events_per_window=90))
    flags = feed(screen, [ev(i * 0.1, "impression", f"p{i}", session="busy") for i in range(100)])
    assert flags[:90] == [[]] * 90
    assert flags[90:] == [["session_rate"]] * 10
    assert screen.counts()["session_rate"] == 10 and screen.counts()["user_rate"] == 0


def test_clicks_need_an_impression():
    screen = AnomalyScreen()
    assert screen.screen(ev(0, "click", "p1")) == ["no_impression"]
    assert screen.screen(ev(1, "purchase", "p1")) == ["no_impression"]  # a flagged click does not make it seen
    assert screen.screen(ev(2, "impression", "p1")) == []
    assert screen.screen(ev(3, "click", "p1")) == []
    assert screen.screen(ev(4, "click", "p1", session="s2")) == ["no_impression"]  # seen per session
    assert screen.screen(ev(5, "add_to_cart", "p9")) == ["no_impression"]  # and per product
    assert screen.counts()["no_impression"] == 4


def test_impression_window():
    screen = AnomalyScreen(ScreenConfig(impression_window_s=1800))
    screen.screen(ev(0, "impression", "old"))
    screen.screen(ev(0, "impression", "edge"))
    assert screen.screen(ev(1801, "click", "old")) == ["no_impression"]
    assert screen.screen(ev(1800, "click", "edge")) == []
    # the clean click counts as seen: purchase 1800 s after it (3600 s after the impression) is clean
    assert screen.screen(ev(3600, "purchase", "edge")) == []
    assert screen.screen(ev(5401, "purchase", "edge")) == ["no_impression"]


def test_require_impression_off():
    screen = AnomalyScreen(ScreenConfig(require_impression=False))
    assert feed(screen, [ev(0, "click"), ev(1, "purchase")]) == [[], []]
    assert screen.tracked_keys()["seen_products"] == 0


def _click(ts: float, product: str, user: str) -> list[dict]:
    return [ev(ts, "impression", product, user=user, session=user),
            ev(ts + 0.5, "click", product, user=user, session=user)]


def test_product_burst():
    screen = AnomalyScreen()  # 30 positives and more than 30 % of the window's positives
    background = [e for i in range(50) for e in _click(i * 0.2, f"p{i}", f"bg{i}")]
    assert all(f == [] for f in feed(screen, background))
    hot = [e for k in range(40) for e in _click(10 + k * 0.5, "hot", f"h{k}")]
    click_flags = feed(screen, hot)[1::2]
    # after k hot clicks the window holds 50 + k positives: k >= 30 is also k > 0.3 * (50 + k)
    assert click_flags[:29] == [[]] * 29
    assert click_flags[29:] == [["product_burst"]] * 11
    assert screen.counts()["product_burst"] == 11
    # a minute later the burst has left the window
    assert feed(screen, _click(100, "hot", "late"))[1] == []


def test_popular_product_with_a_small_share_is_not_a_burst():
    screen = AnomalyScreen()
    events = []
    for k in range(200):  # 2 clicks a second for 100 s; every 4th on "popular" (25 % share, ~30 a minute)
        product = "popular" if k % 4 == 0 else f"p{k % 37}"
        events += _click(k * 0.5, product, f"u{k}")
    assert all(f == [] for f in feed(screen, events))
    assert screen.counts()["flagged"] == 0


def test_out_of_order_timestamps():
    screen = AnomalyScreen(ScreenConfig(max_user_events_per_window=3, max_session_events_per_window=100))
    assert feed(screen, [ev(100, "impression", "p1"), ev(101), ev(102)]) == [[], [], []]
    # arrives late with an old ts: counts as happening now, so it is the 4th event in the window
    assert screen.screen(ev(10, "impression", "p2")) == ["user_rate"]
    # a late impression still makes its product seen for a later click
    assert screen.screen(ev(10, "impression", "p3", user="u2")) == []
    assert screen.screen(ev(50, "click", "p3", user="u2")) == []
    # a click that arrives before its (earlier-stamped) impression is flagged: screening is in arrival order
    assert screen.screen(ev(60, "click", "p4", user="u3")) == ["no_impression"]
    assert screen.screen(ev(59, "impression", "p4", user="u3")) == []
    assert screen.screen(ev(61, "click", "p4", user="u3")) == []


def _mixed_stream(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    events = []
    for i in range(n):
        bot = rng.random() < 0.2
        user = "bot" if bot else f"u{rng.randrange(200)}"
        kind = "click" if bot else rng.choice(("impression", "impression", "click", "purchase"))
        product = "hot" if bot else f"p{rng.randrange(40)}"
        ts = i * 0.05 + rng.uniform(-2, 2)  # jitter: out of order
        events.append(ev(ts, kind, product, user=user, session=f"{user}-s"))
    return events


def test_deterministic():
    events = _mixed_stream(5000, seed=0)
    first, second = AnomalyScreen(), AnomalyScreen()
    flags = feed(first, events)
    assert feed(second, events) == flags
    assert first.counts() == second.counts()
    counts = first.counts()
    assert counts["screened"] == 5000
    assert counts["flagged"] == sum(1 for f in flags if f)
    assert counts["user_rate"] > 0 and counts["no_impression"] > 0 and counts["product_burst"] > 0


def test_memory_is_bounded():
    cfg = ScreenConfig(max_tracked_keys=100, max_user_events_per_window=2)
    screen = AnomalyScreen(cfg)
    for i in range(1000):
        feed(screen, _click(i * 0.01, f"p{i}", f"u{i}"))
        screen.screen(ev(i * 0.01, "impression", "p0", user="regular", session="regular"))
    assert all(n <= 100 for n in screen.tracked_keys().values())
    assert screen.tracked_keys()["users"] == 100
    # "regular" is seen every time and never evicted (its rate window survives); u0 was evicted and starts afresh
    assert screen.screen(ev(10, user="regular", session="regular2")) == ["user_rate"]
    assert feed(screen, [ev(10, user="u0", session="x"), ev(10, user="u0", session="x")]) == [[], []]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"window_s": 0}, "window_s"),
        ({"impression_window_s": -1}, "impression_window_s"),
        ({"max_user_events_per_window": 0}, "max_user_events_per_window"),
        ({"max_session_events_per_window": 0}, "max_session_events_per_window"),
        ({"product_burst_min_positives": 0}, "product_burst_min_positives"),
        ({"product_burst_share": 1.0}, "product_burst_share"),
        ({"product_burst_share": 0}, "product_burst_share"),
        ({"max_tracked_keys": 0}, "max_tracked_keys"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ScreenConfig(**kwargs)


def test_config_from_dict():
    cfg = from_dict(ScreenConfig, {"window_s": 30, "require_impression": False})
    assert cfg.window_s == 30.0 and cfg.require_impression is False and cfg.max_tracked_keys == 200_000
    with pytest.raises(ConfigError, match="product_burst_share"):
        from_dict(ScreenConfig, {"product_burst_share": 2})
    with pytest.raises(ConfigError, match="unknown config key 'window'"):
        from_dict(ScreenConfig, {"window": 30})
