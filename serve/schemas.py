"""Request and response bodies of the HTTP API (pydantic): validation lives here, not in handlers."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_INPUTS = 64
MAX_TEXT_CHARS = 4000
MAX_K = 50  # search reranks max(k, rerank_candidates) candidates in one batch
MAX_BODY_BYTES = 256 * 1024


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

    _query = field_validator("query")(classmethod(lambda cls, v: _not_blank(_utf8(v))))


class RecommendRequest(_Strict):
    product_ids: list[str] = Field(min_length=1, max_length=50, description="products the shopper looked at")
    k: int = Field(default=10, ge=1, le=MAX_K, strict=True)

    @field_validator("product_ids")
    @classmethod
    def _ids(cls, product_ids):
        for product_id in product_ids:
            _utf8(product_id)
        return product_ids


class Product(BaseModel):
    product_id: str
    title: str
    category: str | None = None
    price: float | None = None
    score: float


class SearchResponse(BaseModel):
    request_id: str
    model: str = Field(description="the reranker's <task>@<version>, or 'retrieval-only' when none is CURRENT")
    products: list[Product]


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
