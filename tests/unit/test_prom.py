"""ops.prom: the Prometheus text parser and PromQL-style quantiles, against hand-computed numbers."""

from __future__ import annotations

import math

import pytest

from ops.prom import PromParseError, base_name, histogram_quantile, parse, quantiles_by

INF = math.inf
# 10 observations: 2 at <= 1, 4 in (1, 2], 3 in (2, 5], 1 above 5.
BUCKETS = [(1.0, 2.0), (2.0, 6.0), (5.0, 9.0), (INF, 10.0)]

RAY_TEXT = r'''# HELP ray_aisle_request_latency_ms time from request to response at the ingress, in ms
# TYPE ray_aisle_request_latency_ms histogram
ray_aisle_request_latency_ms_bucket{Component="serve",WorkerId="aa",le="10.0",route="/v1/search",task="relevance"} 3.0
ray_aisle_request_latency_ms_bucket{Component="serve",WorkerId="aa",le="100.0",route="/v1/search",task="relevance"} 8.0
ray_aisle_request_latency_ms_bucket{Component="serve",WorkerId="aa",le="+Inf",route="/v1/search",task="relevance"} 10.0
ray_aisle_request_latency_ms_count{Component="serve",WorkerId="aa",route="/v1/search",task="relevance"} 10.0
ray_aisle_request_latency_ms_sum{Component="serve",WorkerId="aa",route="/v1/search",task="relevance"} 400.0
ray_aisle_request_latency_ms_bucket{Component="serve",WorkerId="bb",le="10.0",route="/v1/search",task="relevance"} 1.0
ray_aisle_request_latency_ms_bucket{Component="serve",WorkerId="bb",le="100.0",route="/v1/search",task="relevance"} 2.0
ray_aisle_request_latency_ms_bucket{Component="serve",WorkerId="bb",le="+Inf",route="/v1/search",task="relevance"} 10.0
ray_aisle_request_latency_ms_count{Component="serve",WorkerId="bb",route="/v1/search",task="relevance"} 10.0
ray_aisle_request_latency_ms_sum{Component="serve",WorkerId="bb",route="/v1/search",task="relevance"} 2000.0
ray_aisle_request_latency_ms_bucket{le="10.0",route="/v1/predict/{task}",task="sentiment"} 4.0
ray_aisle_request_latency_ms_bucket{le="100.0",route="/v1/predict/{task}",task="sentiment"} 4.0
ray_aisle_request_latency_ms_bucket{le="+Inf",route="/v1/predict/{task}",task="sentiment"} 4.0
ray_aisle_request_latency_ms_count{route="/v1/predict/{task}",task="sentiment"} 4.0
ray_aisle_request_latency_ms_sum{route="/v1/predict/{task}",task="sentiment"} 20.0
# TYPE ray_aisle_requests_total counter
ray_aisle_requests_total{code="200",route="/v1/search",task="relevance"} 19.0 1700000000000
ray_aisle_requests_total{code="422",route="/v1/search",task="relevance"} 1e0
# a free-form comment line
ray_aisle_adapters_loaded{replica="TaskModel#abc",model="x \"quoted\" \\ back\nslash"} 2
aisle_feedback_log_depth NaN
'''


# --------------------------------------------------------------------------- histogram_quantile


@pytest.mark.parametrize("q,expected", [
    (0.0, 0.0),    # rank 0 sits at the start of the lowest bucket, which begins at 0
    (0.1, 0.5),    # rank 1 of 2 in (0, 1]: halfway
    (0.5, 1.75),   # rank 5: 3 of the 4 in (1, 2] -> 1 + 1 * 3/4
    (0.9, 5.0),    # rank 9: the last of the 3 in (2, 5]
    (0.95, 5.0),   # rank 9.5 falls in +Inf: the highest finite bound
    (1.0, 5.0),
])
def test_quantile_interpolates_inside_the_bucket_like_promql(q, expected):
    assert histogram_quantile(q, BUCKETS) == pytest.approx(expected)


def test_quantile_is_order_free_and_evens_out_non_monotonic_counts():
    assert histogram_quantile(0.5, list(reversed(BUCKETS))) == pytest.approx(1.75)
    # counts 3, 2 (a scrape race), 4 -> 3, 3, 4; rank 2 of 3 in (0, 1]
    assert histogram_quantile(0.5, [(1.0, 3.0), (2.0, 2.0), (INF, 4.0)]) == pytest.approx(2 / 3)


def test_quantile_edge_cases():
    assert math.isnan(histogram_quantile(0.5, [(1.0, 2.0), (2.0, 4.0)]))  # no +Inf bucket
    assert math.isnan(histogram_quantile(0.5, [(INF, 4.0)]))  # one bucket
    assert math.isnan(histogram_quantile(0.5, [(1.0, 0.0), (INF, 0.0)]))  # no observations
    assert histogram_quantile(-0.1, BUCKETS) == -INF
    assert histogram_quantile(1.1, BUCKETS) == INF
    # a lowest bucket with a bound <= 0 has no known start: its bound is the answer
    assert histogram_quantile(0.2, [(-1.0, 1.0), (0.0, 2.0), (INF, 3.0)]) == -1.0


# --------------------------------------------------------------------------- parser


def test_parse_reads_samples_labels_types_and_special_values():
    expo = parse(RAY_TEXT)
    assert expo.types["ray_aisle_request_latency_ms"] == "histogram"
    assert expo.types["ray_aisle_requests_total"] == "counter"
    assert expo.help["ray_aisle_request_latency_ms"].startswith("time from request")
    assert len(expo.samples) == 19
    inf_bucket = expo.samples[2]
    assert inf_bucket.labels == {"Component": "serve", "WorkerId": "aa", "le": "+Inf", "route": "/v1/search",
                                 "task": "relevance"}
    assert inf_bucket.value == 10.0
    loaded = expo.select("aisle_adapters_loaded")[0]
    assert loaded.labels["model"] == 'x "quoted" \\ back\nslash'
    assert loaded.value == 2.0
    assert math.isnan(expo.select("aisle_feedback_log_depth")[0].value)
    assert expo.total("aisle_requests", route="/v1/search") == 20.0  # the timestamp is not the value
    assert expo.total("aisle_requests", code="500") is None


def test_names_match_with_or_without_ray_prefix_and_total_suffix():
    assert base_name("ray_aisle_requests_total") == base_name("aisle_requests") == "aisle_requests"
    expo = parse(RAY_TEXT)
    assert len(expo.select("aisle_requests_total")) == len(expo.select("aisle_requests")) == 2
    assert len(expo.select("aisle_request_latency_ms", "_bucket")) == 9
    assert expo.select("aisle_request_latency_ms") == []  # the family name alone has no samples


def test_parse_rejects_a_line_that_is_not_a_sample():
    with pytest.raises(PromParseError, match="line 2"):
        parse("ok_metric 1\nthis is not a sample line at all\n")
    with pytest.raises(PromParseError, match="labels"):
        parse('m{le=unquoted} 1\n')


def test_quantiles_by_route_sum_replicas():
    rows = quantiles_by(parse(RAY_TEXT), "aisle_request_latency_ms", ("route",), qs=(0.5, 0.95))
    assert [r["route"] for r in rows] == ["/v1/predict/{task}", "/v1/search"]
    predict, search = rows
    # search: both replicas summed -> le 10: 4, le 100: 10, +Inf: 20
    assert search["count"] == 20.0
    assert search["mean"] == pytest.approx(2400 / 20)
    assert search["p50"] == pytest.approx(10 + 90 * (10 - 4) / 6)  # rank 10 is the top of (10, 100]
    assert search["p95"] == pytest.approx(100.0)  # rank 19 is above 100: the highest finite bound
    assert predict["count"] == 4.0 and predict["p50"] == pytest.approx(5.0)
