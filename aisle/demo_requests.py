"""Example requests against a running Aisle API, each printed with a readable summary of its answer.

The demo ends with these; they work against any server (`aisle serve`, `serve run configs/serve.yaml`):

    python -m aisle.demo_requests http://127.0.0.1:8000

Every answer line names the model that produced it (`<task>@<version>`, or the retriever's
`retrieval:<backbone>`) and the request id the server gave it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

import httpx

REVIEWS = [
    "I love this dress! The fabric is soft, it fits perfectly and the colour is even prettier in person.",
    "Very disappointed: the seams came apart after one wash and the material is see-through. Sent it back.",
    "It's okay. Nice colour, but it runs large and the sleeves are a bit long for me.",
]
SUPPORT_MESSAGES = [
    "I need to cancel the order I placed yesterday",
    "where is my refund? I returned the shoes two weeks ago",
]
GENERATE = {  # one request per generation task (POST /v1/generate/<task>)
    "describe": {"title": "Ferro Home Swift Lite Chopping Board", "category": "home & kitchen", "brand": "Ferro Home",
                 "material": "acacia wood", "price": "25.99"},
    "summarize": {"text": REVIEWS[0]},
    "reply": {"message": SUPPORT_MESSAGES[0], "intent": "cancel_order"},
}
SEARCH = {"query": "navy sneakers", "k": 5}
"""The generated catalog sells running shoes as 'sneakers'/'trainers' and navy among their colours."""
RECOMMEND_K = 5
ADAPTERS_TASK = "sentiment"
SHOPPER = "17850"
"""A customer of the retail log (data/retail) with a long purchase history."""
CLICKED = "22423"
"""What the shopper clicks next: the log's three-tier cake stand."""


@dataclass
class Exchange:
    """One request and its answer, as sent and received."""

    method: str
    path: str
    payload: dict | None
    status: int
    body: Any
    request_id: str
    model: str | None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def send_examples(base_url: str, timeout_s: float = 120.0) -> list[Exchange]:
    """Sentiment and intent predictions, a search, a recommendation, the sentiment adapters and one
    answer of each generation task.

    Prints each request and a summary of its answer. An error answer (e.g. 404 for a task with no
    CURRENT version) is printed and returned, not raised; a connection failure raises.
    The recommendation asks for products like the search's top hit (a real catalog id).
    """
    print(f"Example requests to {base_url}")
    out: list[Exchange] = []
    with httpx.Client(base_url=base_url, timeout=timeout_s) as client:
        out.append(_send(client, "POST", "/v1/predict/sentiment", {"inputs": REVIEWS}, _predictions))
        out.append(_send(client, "POST", "/v1/predict/intent", {"inputs": SUPPORT_MESSAGES}, _predictions))
        search = _send(client, "POST", "/v1/search", dict(SEARCH), _products)
        out.append(search)
        if search.ok and search.body["products"]:
            product_ids = [search.body["products"][0]["product_id"]]
            out.append(_send(client, "POST", "/v1/recommend", {"product_ids": product_ids, "k": RECOMMEND_K},
                             _products))
        else:
            print("\nPOST /v1/recommend skipped: the search returned no product to start from")
        out.append(_send(client, "GET", f"/v1/adapters/{ADAPTERS_TASK}", None, _adapters))
        for task, fields in GENERATE.items():
            out.append(_send(client, "POST", f"/v1/generate/{task}", {"input": fields}, _generated))
    return out


def shopper_click_example(base_url: str, ingest_token: str, timeout_s: float = 60.0) -> list[Exchange]:
    """A retail shopper's recommendations from the trained recommend adapter, a click on a product
    (POST /v1/events), and the next answer, which the click has changed. Skipped (one line) when
    /v1/recommend is not served by a recommend adapter."""
    import time

    out: list[Exchange] = []
    with httpx.Client(base_url=base_url, timeout=timeout_s) as client:
        listing = client.get("/v1/adapters/recommend")
        if listing.status_code != 200 or not listing.json().get("current"):
            print("\nNo recommend adapter in the registry: the shopper example is skipped")
            return out
        body = {"user_id": SHOPPER, "k": RECOMMEND_K}
        before = _send(client, "POST", "/v1/recommend", body, _products)
        out.append(before)
        if not before.ok or not str(before.model).startswith("recommend:"):
            return out
        # The shopper sees the product (an impression: the anomaly screen flags a click on something
        # never shown), then clicks it.
        now, session = time.time(), f"demo-{SHOPPER}-{time.time_ns()}"
        events = [{"event_id": f"demo-{kind}-{time.time_ns()}", "ts": now + i, "user_id": SHOPPER, "session_id": session,
                   "type": kind, "product_id": CLICKED} for i, kind in enumerate(("impression", "click"))]
        out.append(_send(client, "POST", "/v1/events", {"events": events}, lambda ex: [
            f"new {ex.body['new']}, flagged {ex.body['flagged']}, log depth {ex.body['end_offset']}"],
            headers={"Authorization": f"Bearer {ingest_token}"}))
        after = _send(client, "POST", "/v1/recommend", body, _products)
        out.append(after)
        if after.ok and before.ok:
            old = [p["product_id"] for p in before.body["products"]]
            new = [p["product_id"] for p in after.body["products"]]
            changed = sum(1 for p in new if p not in old)
            print(f"     after the click: {changed} of {len(new)} recommendations are new; the order changed: {old != new}")
    return out


def _send(client: httpx.Client, method: str, path: str, payload: dict | None, summarise,
          headers: dict | None = None) -> Exchange:
    print(f"\n{method} {path}" + (f" {json.dumps(payload)}" if payload is not None else ""))
    r = client.request(method, path, json=payload, headers=headers)
    try:
        body = r.json()
    except ValueError:
        body = r.text
    # The body's request_id, else the X-Request-ID header (Serve's proxy and the ingress both set it: take one).
    header_ids = r.headers.get_list("x-request-id", split_commas=True)
    request_id = (body.get("request_id") if isinstance(body, dict) else None) or (header_ids[0] if header_ids else "")
    model = None
    if isinstance(body, dict):  # an adapters listing has no `model`: it names the CURRENT version
        model = body.get("model") or (f"{body.get('task')}@{body['current']}" if body.get("current") else None)
    ex = Exchange(method, path, payload, r.status_code, body, request_id, model)
    print(f"  -> {ex.status}  model {ex.model or '-'}  request_id {ex.request_id or '-'}")
    if not ex.ok:
        error = body.get("error") if isinstance(body, dict) else str(body)[:200]
        print(f"     error: {error}")
        return ex
    for line in summarise(ex):
        print(f"     {line}")
    return ex


def _predictions(ex: Exchange) -> list[str]:
    preds = ex.body["predictions"]
    width = max((len(p["label"]) for p in preds), default=0)
    lines = []
    for text, p in zip(ex.payload["inputs"], preds):
        score = f"  score {p['score']:.2f}" if p.get("score") is not None else ""
        lines.append(f"{p['label']:<{width}}  confidence {p['confidence']:.2f}{score}  {_clip(text, 60)!r}")
    return lines


def _generated(ex: Exchange) -> list[str]:
    body = ex.body
    return [f"{_clip(' '.join(body['text'].split()), 300)!r} ({body['tokens']} tokens, {body['finish_reason']})"]


def _products(ex: Exchange) -> list[str]:
    lines = []
    for i, p in enumerate(ex.body["products"], 1):
        price = f"${p['price']:.2f}" if p.get("price") is not None else "-"
        lines.append(f"{i}. {p['product_id']}  {_clip(p['title'], 58):<58}  {price:>8}  score {p['score']:.3f}")
    return lines or ["(no products)"]


def _adapters(ex: Exchange) -> list[str]:
    body = ex.body
    lines = [f"CURRENT {body['current'] or '-'} of {len(body['versions'])} version(s)"]
    for v in body["versions"]:
        quality = {k: x for k, x in sorted(v["metrics"].items()) if k.startswith(("test_", "val_"))}
        metrics = ", ".join(f"{k} {_number(x)}" for k, x in (quality or v["metrics"]).items())
        lines.append(f"{'*' if v['current'] else ' '} {v['model_id']}  created {v['created_at'][:19]}  "
                     f"{metrics or 'no metrics'}")
    return lines


def _number(x) -> str:
    if isinstance(x, float) and not x.is_integer():
        return f"{x:.4f}"
    return str(int(x)) if isinstance(x, (int, float)) else str(x)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    exchanges = send_examples(args[0] if args else "http://127.0.0.1:8000")
    return 0 if all(ex.ok for ex in exchanges) else 1


if __name__ == "__main__":
    sys.exit(main())
