"""Request and response bodies of the HTTP API (pydantic): validation lives here, not in handlers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.events import EVENT_TYPES, MAX_ABS_SCORE, MAX_ID_CHARS, MAX_POSITION, MAX_PRODUCT_ID_CHARS, MAX_QUERY_CHARS

MAX_INPUTS = 64
MAX_TEXT_CHARS = 4000
MAX_K = 50  # search reranks max(k, rerank_candidates) candidates in one batch
MAX_BODY_BYTES = 256 * 1024
MAX_EVENTS = 500


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or blank")
    return value


def _utf8(value: str) -> str:
    """JSON may carry lone UTF-16 surrogates ("\\ud800"); no tokenizer or JSON response can encode them."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no unpaired surrogate code points)") from None
    return value


class PredictRequest(_Strict):
    inputs: list[str | tuple[str, str]] = Field(min_length=1, max_length=MAX_INPUTS,
                                                description="texts, or [query, product text] pairs for relevance")
    version: str | None = Field(default=None, pattern=r"^v[1-9][0-9]*$", description="default: the CURRENT version")

    @field_validator("inputs")
    @classmethod
    def _texts(cls, inputs):
        for item in inputs:
            for text in (item,) if isinstance(item, str) else item:
                _not_blank(_utf8(text))
                if len(text) > MAX_TEXT_CHARS:
                    raise ValueError(f"each text must be at most {MAX_TEXT_CHARS} characters")
        return inputs


class Prediction(BaseModel):
    label: str
    confidence: float
    score: float | None = None


class PredictResponse(BaseModel):
    request_id: str
    model: str
    predictions: list[Prediction]


class SearchRequest(_Strict):
    query: str = Field(min_length=1, max_length=512)
    k: int = Field(default=10, ge=1, le=MAX_K, strict=True)
    version: str | None = Field(default=None, pattern=r"^v[1-9][0-9]*$",
                                description="rerank with this relevance version alone (default: CURRENT, blended as configured)")
    online: bool = Field(default=True, strict=True, description="apply the stream's online click layer (false: the reranker's order)")

    _query = field_validator("query")(classmethod(lambda cls, v: _not_blank(_utf8(v))))


class RecommendRequest(_Strict):
    product_ids: list[str] | None = Field(default=None, min_length=1, max_length=50,
                                          description="products the shopper looked at")
    user_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID_CHARS,
                               description="or a shopper: their latest clicks and purchases from the stream")
    k: int = Field(default=10, ge=1, le=MAX_K, strict=True)

    @field_validator("product_ids")
    @classmethod
    def _ids(cls, product_ids):
        for product_id in product_ids or ():
            _utf8(product_id)
        return product_ids

    @field_validator("user_id")
    @classmethod
    def _user(cls, user_id):
        return _not_blank(_utf8(user_id)) if user_id is not None else None

    @model_validator(mode="after")
    def _one_of(self):
        if (self.product_ids is None) == (self.user_id is None):
            raise ValueError("give exactly one of product_ids or user_id")
        return self


class EventIn(_Strict):
    event_id: str = Field(min_length=1, max_length=MAX_ID_CHARS, description="client-supplied id: the idempotency key")
    ts: float | str = Field(description="unix seconds, or ISO-8601 with a timezone")
    user_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    session_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    type: Literal[EVENT_TYPES]
    product_id: str = Field(min_length=1, max_length=MAX_PRODUCT_ID_CHARS)
    query: str | None = Field(default=None, max_length=MAX_QUERY_CHARS, description="the search the product was shown for")
    position: int | None = Field(default=None, ge=0, le=MAX_POSITION, strict=True, description="0-based rank shown")
    score: float | None = Field(default=None, ge=-MAX_ABS_SCORE, le=MAX_ABS_SCORE, allow_inf_nan=False,
                                description="the score the product was shown with (its /v1/search `score`)")


class EventsRequest(_Strict):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsResponse(BaseModel):
    request_id: str
    new: int
    duplicate: int
    flagged: int = Field(description="new events the anomaly screen flagged: kept in the log, never trained on")
    end_offset: int = Field(description="log depth after this batch")


class PromoteRequest(_Strict):
    version: str = Field(pattern=r"^v[1-9][0-9]*$")
    reason: str = Field(default="", max_length=500)


class RollbackRequest(_Strict):
    reason: str = Field(default="", max_length=500)


class ReleaseRequest(_Strict):
    reason: str = Field(default="", max_length=500, description="why the held window is genuine (audited)")


class ReleaseResponse(BaseModel):
    request_id: str
    update_id: str
    queued: int = Field(description="its place among the releases waiting (1: next, after the update in flight)")


class PointerResponse(BaseModel):
    request_id: str
    task: str
    previous: str | None
    current: str


class StreamStatus(BaseModel):
    log_end_offset: int
    consumers: dict[str, int]


class StatusResponse(BaseModel):
    request_id: str
    replicas: dict[str, dict[str, int]] = Field(description="deployment -> replica state -> count")
    current: dict[str, str | None]
    stream: StreamStatus | None = Field(description="null when the stream loop is not running")


class Product(BaseModel):
    product_id: str
    title: str
    category: str | None = None
    price: float | None = None
    score: float = Field(description="the score it was ranked by (the reranker's, moved by the online layer)")
    model_score: float | None = Field(default=None, description="the reranker's score alone: send it as the event's "
                                                                "`score` so the click model judges clicks against it")


class OnlineApplied(BaseModel):
    snapshot: str = Field(description="version <log offset>.<admin epoch> of the online layer's snapshot applied")
    offset: int = Field(description="the snapshot covers every event below this log offset")
    enabled: bool
    adjusted: int = Field(description="products whose score it moved")


class SearchResponse(BaseModel):
    request_id: str
    model: str = Field(description="the reranker's <task>@<version>, or 'retrieval-only' when none is CURRENT")
    ensemble: dict[str, float] | None = Field(default=None, description="blend weights when scores mix two versions")
    online: OnlineApplied | None = Field(default=None, description="the online click layer's snapshot, or null when "
                                                                   "none applied (no stream, not asked, retrieval only)")
    reranked: int = Field(default=0, description="candidates the reranker ordered: the first stage's top "
                          "rerank_candidates, or 0 when the answer keeps the first stage's order (retrieval only, "
                          "or the reranker missed rerank_budget_ms: its scores are cached for the next search)")
    products: list[Product]


class CatalogProduct(_Strict):
    product_id: str = Field(min_length=1, max_length=MAX_PRODUCT_ID_CHARS)
    title: str = Field(min_length=1, max_length=512, description="what the item tower reads, with the description")
    description: str = Field(default="", max_length=MAX_TEXT_CHARS)

    _text = field_validator("product_id", "title")(classmethod(lambda cls, v: _not_blank(_utf8(v))))
    _desc = field_validator("description")(classmethod(lambda cls, v: _utf8(v)))


class ProductsRequest(_Strict):
    products: list[CatalogProduct] = Field(min_length=1, max_length=MAX_INPUTS,
                                           description="new products, or new texts of existing ones")

    @field_validator("products")
    @classmethod
    def _distinct(cls, products):
        ids = [p.product_id for p in products]
        if len(set(ids)) != len(ids):
            raise ValueError("each product_id at most once per request")
        return products


class ProductsResponse(BaseModel):
    request_id: str
    catalogs: dict[str, int] = Field(description="products in each catalog the change reached, after it: "
                                                 "'search' (the retriever's) and 'recommend' (the recommender's)")
    removed: int | None = Field(default=None, description="DELETE: catalogs the product was removed from")


class RecommendResponse(BaseModel):
    request_id: str
    model: str
    products: list[Product]


class AdapterVersion(BaseModel):
    model_id: str
    version: str
    current: bool
    created_at: str
    metrics: dict
    lineage: dict


class TaskAdapters(BaseModel):
    task: str
    current: str | None
    versions: list[AdapterVersion]


class ErrorBody(BaseModel):
    request_id: str
    error: str
    field: str | None = None


class OnlineKeyRequest(_Strict):
    key: str = Field(min_length=1, max_length=300, pattern=r"^[^|]+\|[^=|]+=.+$",
                     description="a click-model key: <segment>|<field>=<value>, e.g. footwear|brand=Acme")
    reason: str = Field(default="", max_length=500)


class OnlineEnableRequest(_Strict):
    enabled: bool = Field(strict=True)


class OnlineEffect(BaseModel):
    key: str
    effect: float


class OnlineStatus(BaseModel):
    request_id: str
    serving: str | None = Field(description="the snapshot version this replica applies (null: none yet)")
    snapshot: str = Field(description="the layer's newest snapshot version")
    offset: int = Field(description="log offset the layer has read up to")
    enabled: bool
    event_ts: float
    keys_tracked: int
    active_keys: int
    frozen_keys: list[str]
    largest_effects: list[OnlineEffect]
    counts: dict[str, int] = Field(description="records read by outcome (used, or left out and why)")
    restored_offset: int = Field(description="the offset the layer's checkpoint held when it (re)started")
    last_read: float | None


MAX_GENERATED_TOKENS = 256
"""max_tokens above this is refused with 413 (the ingress's limit; ServeConfig.max_generated_tokens)."""


class GenerateRequest(_Strict):
    input: dict[str, str] = Field(min_length=1, max_length=16, description=(
        "the task's fields: describe {title, category, brand, colour, material, price}; summarize {text}; "
        "reply {message, intent}; the first is required"))
    max_tokens: int | None = Field(default=None, ge=1, description="tokens generated at most (default: the task's; "
                                                                    "over the server's limit: 413)")
    stream: bool = Field(default=False, description="answer as server-sent events (text/event-stream): one "
                                                    "`data: {\"text\": ...}` per piece, then `data: {\"done\": true, ...}`")
    version: str | None = Field(default=None, pattern=r"^v[1-9][0-9]*$", description="default: the CURRENT version")

    @field_validator("input")
    @classmethod
    def _texts(cls, fields):
        for value in fields.values():
            _utf8(value)
            if len(value) > MAX_TEXT_CHARS:
                raise ValueError(f"each field must be at most {MAX_TEXT_CHARS} characters")
        return fields


class GenerateResponse(BaseModel):
    request_id: str
    model: str = Field(description="<task>@<version> that wrote the text")
    text: str
    tokens: int = Field(description="tokens generated")
    finish_reason: Literal["stop", "length"] = Field(description="stop: the model ended; length: cut at max_tokens")
