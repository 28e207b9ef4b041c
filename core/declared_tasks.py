"""Tasks a shop declares in YAML, with no code: text classification and text-pair classification
over the columns of its own file.

    # configs/tasks.yaml (or the file AISLE_TASKS names)
    tasks:
      - name: ticket_topic
        kind: text_classification            # or text_pair: (text, pair) -> label
        source: data/tickets.csv             # CSV, Parquet or JSONL
        columns: {text: [subject, body], label: topic, group: customer_id}
        labels: null                         # the label column's values as they are, or a mapping:
        metric: accuracy                     #   {negative: [1, 2], neutral: [3], positive: [4, 5]}

`core.tasks` turns each declaration into a `Task`, so `aisle prepare`, `aisle train`, `aisle
evaluate`, the registry and `/v1/predict/{task}` take it like a built-in one. Pure: pandas only.

Examples. The text columns are joined (". ", empty ones skipped) into `text` (and the pair
columns into `pair`). A row is dropped, with its reason counted, when its text is empty or under
3 characters, its label is missing or not in the mapping, or (with a group column) its group is
missing. Split groups: the group column (e.g. a product or customer id: all its rows on one side),
else the normalised text, so copies of one message never sit in two splits.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml

from core.config import ConfigError, doc, from_dict
from core.text import dedupe_key, normalize_series, salted_hash

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
DEFAULT_FILE = Path("configs") / "tasks.yaml"
ENV = "AISLE_TASKS"


@dataclass
class DeclaredColumns:
    text: list[str] = doc([], "text columns, joined in this order (the first text of a pair)")
    label: str = doc("", "the label column")
    pair: list[str] = doc([], "text_pair: the second text's columns")
    group: str | None = doc(None, "rows sharing a value stay in one split (a product, a customer); "
                                  "null: split by the normalised text")


@dataclass
class TaskDeclaration:
    name: str = doc("", "task name: lowercase letters, digits and _ (a registry and URL path segment)")
    kind: Literal["text_classification", "text_pair"] = doc("text_classification", "one text, or a pair of texts")
    source: str = doc("", "the file (CSV, Parquet or JSONL; s3:// for Parquet)")
    columns: DeclaredColumns = doc(DeclaredColumns, "which of the file's columns is which")
    labels: dict[str, list[Any]] | None = doc(None, "label -> the label column's values that mean it (its order is the "
                                               "label order); null: the values as they are")
    metric: Literal["accuracy", "macro_f1"] = doc("accuracy", "the primary metric")
    class_weighted_loss: bool = doc(False, "weight the loss by inverse class frequency (skewed labels)")
    description: str = doc("", "one line for `aisle config` and the docs")

    def __post_init__(self):
        where = f"task {self.name or '?'}"
        if not NAME_PATTERN.match(self.name):
            raise ConfigError(f"{where}: name must match {NAME_PATTERN.pattern}")
        if not self.source:
            raise ConfigError(f"{where}: source (the file) is required")
        if not self.columns.text or not self.columns.label:
            raise ConfigError(f"{where}: columns.text and columns.label are required")
        if (self.kind == "text_pair") != bool(self.columns.pair):
            raise ConfigError(f"{where}: columns.pair is required for kind text_pair, and only for it")
        if self.labels is not None:
            if len(self.labels) < 2:
                raise ConfigError(f"{where}: labels must map at least two labels")
            seen: dict[str, str] = {}
            for label, values in self.labels.items():
                if not isinstance(values, list) or not values:
                    raise ConfigError(f"{where}: labels.{label} must be a non-empty list of the label column's values")
                for value in values:
                    key = raw_label(value)
                    if key in seen:
                        raise ConfigError(f"{where}: value {value!r} is mapped to both {seen[key]} and {label}")
                    seen[key] = label

    @property
    def required_columns(self) -> tuple[str, ...]:
        c = self.columns
        return tuple(dict.fromkeys([*c.text, *c.pair, c.label, *([c.group] if c.group else [])]))

    @property
    def label_order(self) -> tuple[str, ...] | None:
        return tuple(self.labels) if self.labels is not None else None


def raw_label(value: object) -> str:
    """A label cell as a comparable string: stripped, and whole numbers without a decimal part
    (a CSV's '4', a Parquet 4 and a float 4.0 are one value)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text[:-2] if re.fullmatch(r"-?\d+\.0", text) else text


def _joined(df: pd.DataFrame, columns: list[str]) -> pd.Series:
    parts = [normalize_series(df[c].astype("string")).fillna("") for c in columns]
    out = parts[0]
    for part in parts[1:]:
        out = out.where(part == "", out.where(out == "", out + ". ") + part)
    return out


def declared_examples(decl: TaskDeclaration, df: pd.DataFrame) -> pd.DataFrame:
    """Raw rows of the declared file -> example rows (see the module doc)."""
    c = decl.columns
    text = _joined(df, c.text)
    pair = _joined(df, c.pair) if c.pair else None
    raw = df[c.label].map(lambda v: None if pd.isna(v) else raw_label(v)).astype("object")
    raw = raw.where(raw != "", None)
    if decl.labels is not None:
        lookup = {raw_label(v): label for label, values in decl.labels.items() for v in values}
        label = raw.map(lambda v: lookup.get(v) if v is not None else None)
    else:
        label = raw
    reason = pd.Series([None] * len(df), index=df.index, dtype="object")

    def mark(mask: pd.Series, why: str) -> None:
        reason[mask & reason.isna()] = why

    mark(text == "", "missing_text")
    mark(text.str.len() < 3, "text_too_short")
    if pair is not None:
        mark(pair == "", "missing_pair_text")
    mark(raw.isna(), "missing_label")
    mark(raw.notna() & label.isna(), "label_not_mapped")
    norm = text.map(dedupe_key) if pair is None else (text + "\x00" + pair).map(dedupe_key)
    if c.group:
        group = df[c.group].astype("string").str.strip().fillna("")
        mark(group == "", "missing_group")
    else:
        group = norm.map(lambda k: salted_hash(k, decl.name))
    out = {"example_id": (group + "\x00" + norm).map(lambda k: salted_hash(k, decl.name)), "text": text}
    if pair is not None:
        out["pair"] = pair
    out.update({"label": label.astype("string"), "split_group": group, "dedupe_key": norm, "drop_reason": reason})
    return pd.DataFrame(out, index=df.index)


def declared_inputs(frame: pd.DataFrame) -> list[str] | list[tuple[str, str]]:
    texts = frame["text"].fillna("").astype(str)
    if "pair" in frame.columns:
        return list(zip(texts, frame["pair"].fillna("").astype(str)))
    return texts.tolist()


def declarations_file() -> Path | None:
    """The declarations in use: AISLE_TASKS, else configs/tasks.yaml of the working directory, else
    the project's; None when there is none."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (base / DEFAULT_FILE).is_file():
            return base / DEFAULT_FILE
    return None


def load_declarations(path: Path | None, reserved: frozenset[str] = frozenset()) -> list[TaskDeclaration]:
    """The file's declarations (none when `path` is None); a bad file is a ConfigError naming the
    task and the key. `reserved`: built-in task names a declaration may not take."""
    if path is None:
        return []
    if not path.is_file():
        raise ConfigError(f"{ENV}={path}: no such file")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    items = data.get("tasks") or [] if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ConfigError(f"{path}: expected `tasks:` with a list of task declarations")
    out: list[TaskDeclaration] = []
    for i, item in enumerate(items):
        decl = from_dict(TaskDeclaration, item, where=f"{path}: tasks[{i}]")
        if decl.name in reserved or decl.name in {d.name for d in out}:
            raise ConfigError(f"{path}: task name {decl.name!r} is taken (built-in or declared twice)")
        out.append(decl)
    return out
