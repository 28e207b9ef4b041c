"""Retrieve-and-edit for a generation task: the answer of the most similar training example, quoted
in the prompt, so that the model edits a real answer to a close question instead of writing one
from nothing (the retrieval baseline's strength, with the fine-tuned model's fit to the input).

An `ExemplarBank` holds the training examples (input text, group, answer) and finds each input's
nearest by TF-IDF cosine of character n-grams (typos and inflections still match; no encoder to
load where the prompt is built), among the examples of the same group when the input names one
(`reply`: the same intent). Training quotes each example's nearest *other* example (leave-one-out,
as a held-out input never finds itself); evaluation and serving quote the nearest of the version's
own bank, saved beside its adapter (`BANK_FILE`). Pure pandas and scikit-learn, no torch, no Ray.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from core import storage

BANK_FILE = "exemplars.parquet"
BANK_COLUMNS = ("text", "group", "answer")


class ExemplarBank:
    """Training examples to quote: `text` (what inputs are compared with), `group` ("" for none),
    `answer` (what is quoted)."""

    def __init__(self, frame: pd.DataFrame):
        from sklearn.feature_extraction.text import TfidfVectorizer

        if frame.empty:
            raise ValueError("an exemplar bank needs at least one training example")
        self.frame = frame.loc[:, list(BANK_COLUMNS)].astype(str).reset_index(drop=True)
        self.vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, lowercase=True)
        self.matrix = self.vectorizer.fit_transform(self.frame["text"])
        self.groups = self.frame["group"].str.lower().to_numpy()  # an intent is matched whatever its case

    def __len__(self) -> int:
        return len(self.frame)

    def nearest(self, texts: Sequence[str], groups: Sequence[str] | None = None,
                exclude: Sequence[int] | None = None) -> list[int]:
        """The bank row most similar to each text; within its group when the group is in the bank
        (else among all rows); never the row `exclude[i]` (the text's own row in training)."""
        sims = (self.vectorizer.transform([str(t) for t in texts]) @ self.matrix.T).toarray()
        out = []
        for i, row in enumerate(sims):
            group = str(groups[i]).lower() if groups is not None and groups[i] is not None else ""
            if group and (self.groups == group).any():
                row = np.where(self.groups == group, row, -1.0)
            if exclude is not None and exclude[i] is not None and len(self.frame) > 1:
                row[exclude[i]] = -2.0
            out.append(int(np.argmax(row)))
        return out

    def answers(self, texts: Sequence[str], groups: Sequence[str] | None = None,
                exclude: Sequence[int] | None = None) -> list[str]:
        return [self.frame["answer"].iloc[j] for j in self.nearest(texts, groups, exclude)]

    def save(self, directory: str) -> None:
        storage.write_parquet(self.frame, storage.join(directory, BANK_FILE))

    @classmethod
    def load(cls, directory: str) -> ExemplarBank:
        return cls(storage.read_parquet(storage.join(directory, BANK_FILE), columns=list(BANK_COLUMNS)))


def bank_frame(examples: pd.DataFrame, text_field: str, group_field: str | None) -> pd.DataFrame:
    """A task's prepared examples as bank rows."""
    group = examples[group_field].fillna("").astype(str) if group_field else pd.Series([""] * len(examples))
    return pd.DataFrame({"text": examples[text_field].fillna("").astype(str).to_numpy(),
                         "group": group.to_numpy(), "answer": examples["target"].fillna("").astype(str).to_numpy()})


def quoted_prompts(task, examples: pd.DataFrame, bank: ExemplarBank, exclude: Sequence[int] | None = None) -> list[str]:
    """The prompts of a task's prepared `examples` (a `core.gen_tasks.GenTask` with an
    `exemplar_field`), each quoting the answer of its nearest bank row (never row `exclude[i]`)."""
    texts = examples[task.exemplar_field].fillna("").astype(str).tolist()
    group = task.exemplar_group
    groups = examples[group].fillna("").astype(str).tolist() if group and group in examples else None
    answers = bank.answers(texts, groups, exclude)
    fields = examples[[f for f in task.fields if f in examples]].to_dict("records")
    return [task.prompt_for(row, answer) for row, answer in zip(fields, answers)]
