"""Generation tasks: what each reads, how its prompt is written, what it is judged by.

The generative counterpart of `core.tasks` (which declares the encoder tasks): `describe`
(product attributes -> a description), `summarize` (review text -> the shopper's own title) and
`reply` (support message and intent -> a reply with `{{Placeholder}}` slots). Each declaration is
read by every layer: `data_pipelines.prepare` calls `make_examples` on raw rows (the same
example columns as the encoder tasks, plus `prompt` and `target`), training and evaluation read
`prompt`/`target`, serving builds the same prompt from a request's fields with `prompt_for`.
Pure pandas, no torch and no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Mapping

import pandas as pd

from core import storage
from core.errors import AisleError, InputError
from core.tasks import drop_reasons, mark_dropped
from core.text import dedupe_key, normalize_series, normalize_text, salted_hash

DESCRIBE_ATTRIBUTES = ("title", "category", "brand", "colour", "material", "price")
FAITHFUL_ATTRIBUTES = ("brand", "colour", "material")
"""Attributes a description must not contradict (the hallucination check, `core.gen_metrics`)."""


class NoSuchGenTaskError(AisleError):
    pass


@dataclass(frozen=True)
class GenTask:
    name: str
    description: str
    source: Literal["table", "products"]
    """'table': one CSV/Parquet/JSONL file (`sources.<reads>`); 'products': the catalog's products."""
    reads: str
    """The `sources` entry of configs/prepare.yaml whose file it reads (shared with an encoder task)."""
    required_columns: tuple[str, ...]
    fields: tuple[str, ...]
    """Request fields (`POST /v1/generate/<task>`); the first is required, the rest optional."""
    make_examples: Callable[[pd.DataFrame], pd.DataFrame]
    """Raw rows -> example_id, label (a coarse class, for the prepare report), split_group,
    dedupe_key, drop_reason, the task's fields, prompt, target."""
    instruction: Callable[[Mapping[str, str]], str]
    """Fields (and `exemplar`, when quoted) -> the user turn of the chat prompt."""
    max_new_tokens: int
    """Tokens generated at most (evaluation and the serving default): above the 95th percentile of
    the task's answers in SmolLM2's tokens (training splits: describe 38, summarize 10, reply 216;
    reply's longest 300)."""
    extra_metric: Literal["hallucination_rate", "slot_accuracy", None] = None
    exemplar_field: str | None = None
    """Retrieve-and-edit (`core.gen_exemplars`): the prompt quotes the answer of the training example
    whose field of this name is the most similar; None: no quote."""
    exemplar_group: str | None = None
    """The field an exemplar must share with the input when the input has it (reply: the intent)."""

    def prompt_for(self, fields: Mapping[str, object], exemplar: str | None = None) -> str:
        """The user turn for a request's fields (missing optional fields are left out), quoting
        `exemplar` (a training answer, line breaks kept) when given."""
        values = {k: normalize_text(fields.get(k)) for k in self.fields}
        return self.instruction({**values, "exemplar": exemplar.strip()} if exemplar else values)


def _target_text(values: pd.Series) -> pd.Series:
    """Normalised like inputs, but line breaks kept (numbered steps in a reply stay on their lines)."""
    def one(value: object) -> str:
        if value is None or (isinstance(value, float) and value != value):
            return ""
        lines = (normalize_text(line) for line in str(value).replace("\r\n", "\n").split("\n"))
        return "\n".join(line for line in lines if line)
    return values.map(one).astype("string")


def _frame(columns: dict, prompts: list[str]) -> pd.DataFrame:
    out = pd.DataFrame(columns)
    out["prompt"] = prompts
    return out


# ---- describe: product attributes -> description ----------------------------------------------

def _describe_instruction(f: Mapping[str, str]) -> str:
    parts = [f"{k}: {f[k]}" for k in DESCRIBE_ATTRIBUTES if f.get(k) and f[k] != "n/a"]
    return "Write a product description for the shop from these attributes.\n" + "\n".join(parts)


def _describe_examples(df: pd.DataFrame) -> pd.DataFrame:
    cols = {k: normalize_series(df[k].astype("string")).fillna("") for k in DESCRIBE_ATTRIBUTES if k != "price"}
    price = pd.to_numeric(df["price"], errors="coerce")
    cols["price"] = price.map(lambda p: f"{p:.2f}" if p == p else "").astype("string")
    product = normalize_series(df["product_id"].astype("string")).fillna("")
    target = _target_text(df["description"])
    reason = drop_reasons(df.index)
    mark_dropped(reason, product == "", "missing_product_id")
    mark_dropped(reason, cols["title"] == "", "missing_title")
    mark_dropped(reason, target == "", "missing_description")
    fields = pd.DataFrame(cols)
    return _frame({
        "example_id": product.map(lambda p: salted_hash(p, "describe")),
        "product_id": product, **cols, "target": target,
        "label": cols["category"],
        "split_group": product,  # by product: a held-out product was never described in training
        "dedupe_key": product + "\x00" + target.map(dedupe_key),
        "drop_reason": reason,
    }, [_describe_instruction(r) for r in fields.to_dict("records")])


# ---- summarize: review text -> the shopper's title --------------------------------------------

def _summarize_instruction(f: Mapping[str, str]) -> str:
    return "Write a short title for this customer review.\nReview: " + f.get("text", "")


def _summarize_examples(df: pd.DataFrame) -> pd.DataFrame:
    text = normalize_series(df["Review Text"]).fillna("")
    title = normalize_series(df["Title"]).fillna("")
    product = df["Clothing ID"].astype("string").str.strip().fillna("")
    rating = pd.to_numeric(df["Rating"], errors="coerce")
    reason = drop_reasons(df.index)
    mark_dropped(reason, product == "", "missing_product_id")
    mark_dropped(reason, text.str.len() < 3, "missing_review_text")
    mark_dropped(reason, title == "", "missing_title")
    key = text.map(dedupe_key)
    return _frame({
        "example_id": (product + "\x00" + key).map(lambda k: salted_hash(k, "summarize")),
        "product_id": product, "text": text, "target": title,
        "label": rating.map(lambda r: f"{int(r)} stars" if r == r else "").astype("string"),
        "split_group": product,  # by review product, as the sentiment task
        "dedupe_key": key,
        "drop_reason": reason,
    }, [_summarize_instruction({"text": t}) for t in text])


# ---- reply: support message (+ intent) -> a reply with placeholder slots ----------------------

def _reply_instruction(f: Mapping[str, str]) -> str:
    head = "Write the customer-service reply to this message. Keep placeholders like {{Order Number}} as they are."
    intent = f"\nIntent: {f['intent'].lower()}" if f.get("intent") else ""  # as prepared
    similar = f"\nOur reply to a similar message:\n{f['exemplar']}" if f.get("exemplar") else ""
    return f"{head}{intent}{similar}\nMessage: {f.get('message', '')}"


def _reply_examples(df: pd.DataFrame) -> pd.DataFrame:
    message = normalize_series(df["instruction"]).fillna("")
    intent = normalize_series(df["intent"]).fillna("").str.lower()
    target = _target_text(df["response"])
    reason = drop_reasons(df.index)
    mark_dropped(reason, message.str.len() < 3, "missing_text")
    mark_dropped(reason, target == "", "missing_response")
    key = message.map(dedupe_key)
    example_id = key.map(lambda k: salted_hash(k, "reply"))
    return _frame({
        "example_id": example_id, "message": message, "intent": intent, "target": target,
        "label": intent,
        "split_group": example_id,  # by normalised message text, as the intent task
        "dedupe_key": key,
        "drop_reason": reason,
    }, [_reply_instruction({"message": m, "intent": i}) for m, i in zip(message, intent)])


GEN_TASKS: dict[str, GenTask] = {
    "describe": GenTask(
        name="describe", description="product attributes -> a product description (generated catalog)",
        source="products", reads="catalog_dir",
        required_columns=("product_id", "description", *DESCRIBE_ATTRIBUTES),
        fields=DESCRIBE_ATTRIBUTES, make_examples=_describe_examples, instruction=_describe_instruction,
        max_new_tokens=64, extra_metric="hallucination_rate"),
    "summarize": GenTask(
        name="summarize", description="review text -> its title (the shopper's own)",
        source="table", reads="sentiment", required_columns=("Clothing ID", "Title", "Review Text", "Rating"),
        fields=("text",), make_examples=_summarize_examples, instruction=_summarize_instruction,
        max_new_tokens=16),
    "reply": GenTask(
        name="reply", description="support message (+ intent) -> a reply with {{Placeholder}} slots (Bitext)",
        source="table", reads="intent", required_columns=("instruction", "intent", "response"),
        fields=("message", "intent"), make_examples=_reply_examples, instruction=_reply_instruction,
        max_new_tokens=256, extra_metric="slot_accuracy", exemplar_field="message", exemplar_group="intent"),
}


def get_gen_task(name: str) -> GenTask:
    try:
        return GEN_TASKS[name]
    except KeyError:
        raise NoSuchGenTaskError(f"unknown generation task {name!r} (known: {', '.join(GEN_TASKS)})") from None


def is_gen_task(name: str) -> bool:
    return name in GEN_TASKS


def prepared_split(data_dir: str, task: str, split: str) -> str:
    """The location of a task's prepared split; refuses (naming the command to run) when it is
    missing or has no rows."""
    path = storage.join(storage.absolute(data_dir), task, split)
    if not storage.exists(path) or not storage.parquet_rows(path):
        raise InputError(f"no prepared {split} data for task '{task}' at {path}: run `aisle prepare "
                         f"tasks=[{task}]` first")
    return path
