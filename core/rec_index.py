"""A live recommend index: the trained towers over a catalog that changes while serving. No Ray.

Holds every catalog item's vector from the recommend adapter (text tower + id embedding; an item
the model never saw gets its vector from its text alone), the shoppers' stored histories (the
prepared interactions, by pseudonymised user id), and answers exact top-k over the whole catalog.
`upsert` embeds new or changed items and `delete` removes them: both swap in a new set of arrays
at once, so a concurrent reader sees the old catalog or the new one, never half of each.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from core import rec_model as R


@dataclass(frozen=True)
class _Arrays:
    ids: list[str]
    index: dict[str, int]
    texts: list[str]
    raw: torch.Tensor          # history vectors (unnormalised), one row per item, plus a zero pad row
    out: torch.Tensor          # candidate vectors (unnormalised), one row per item
    unit: np.ndarray           # candidate vectors, L2-normalised


class RecIndex:
    def __init__(self, model: R.RecModel, tokenizer, items: pd.DataFrame, histories: dict[str, list[str]] | None = None,
                 precomputed: pd.DataFrame | None = None):
        """`precomputed`: item_id, text, history, candidate rows (data_pipelines.rec_item_vectors, made by
        this model version): an item whose text is unchanged takes its vectors from there, the rest
        are embedded here."""
        self.model, self.tokenizer = model.eval(), tokenizer
        self.histories = histories or {}
        self._lock = threading.Lock()
        ids, texts = items["item_id"].astype(str).tolist(), items["text"].astype(str).tolist()
        self.reused = 0
        self._arrays = self._build(ids, texts, self._with_precomputed(ids, texts, precomputed))

    def _with_precomputed(self, ids: list[str], texts: list[str], pre: pd.DataFrame | None):
        if pre is None or pre.empty:
            return None
        row = {(i, t): r for r, (i, t) in enumerate(zip(pre["item_id"].astype(str), pre["text"].astype(str)))}
        found = [row.get((i, t)) for i, t in zip(ids, texts)]
        hist = np.stack(pre["history"].to_numpy()).astype(np.float32)
        cand = np.stack(pre["candidate"].to_numpy()).astype(np.float32)
        out_h, out_c = np.zeros((len(ids), hist.shape[1]), np.float32), np.zeros((len(ids), cand.shape[1]), np.float32)
        missing = [k for k, r in enumerate(found) if r is None]
        have = [k for k, r in enumerate(found) if r is not None]
        out_h[have], out_c[have] = hist[[found[k] for k in have]], cand[[found[k] for k in have]]
        if missing:
            h, c = self._vectors([ids[k] for k in missing], [texts[k] for k in missing])
            out_h[missing], out_c[missing] = h.numpy(), c.numpy()
        self.reused = len(have)
        return torch.from_numpy(out_h), torch.from_numpy(out_c)

    def _vectors(self, ids: Sequence[str], texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(history vectors, candidate vectors) of items; one the model never saw has its text alone."""
        return R.item_vectors(self.model, self.tokenizer, ids, texts)

    def _build(self, ids: list[str], texts: list[str], vectors: tuple[torch.Tensor, torch.Tensor] | None = None) -> _Arrays:
        raw, out = self._vectors(ids, texts) if vectors is None else vectors
        padded = torch.cat([raw, torch.zeros(1, raw.shape[1])])
        return _Arrays(ids, {item: i for i, item in enumerate(ids)}, texts, padded, out,
                       F.normalize(out, dim=-1).numpy())

    def __len__(self) -> int:
        return len(self._arrays.ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._arrays.index

    def text(self, item_id: str) -> str:
        a = self._arrays
        return a.texts[a.index[item_id]]

    def stored_history(self, user: str) -> list[str]:
        return self.histories.get(user, [])

    def recommend(self, history: Sequence[str], k: int, exclude: Sequence[str] = (), session: Sequence[str] = (),
                  session_weight: float = 0.0) -> list[tuple[str, float]]:
        """Top `k` items for a shopper whose recent items are `history` then `session` (the live
        session's, oldest first; unknown ids skipped), without the `exclude` ids. With
        `session_weight` > 0 the live session's own user vector is added, at that weight, to the one
        of the whole history (both unit length): what a shopper does now says what they want now,
        and one click among twenty stored purchases barely moves the model's recency pooling.
        No known item at all: no answer ([])."""
        a = self._arrays
        positions = [a.index[i] for i in [*history, *session] if i in a.index]
        if not positions:
            return []
        user = self._user(a, positions)
        live = [a.index[i] for i in session if i in a.index]
        if live and session_weight > 0:
            user = user + session_weight * self._user(a, live)
        return self._top(a, a.unit @ user, k, {a.index[i] for i in exclude if i in a.index})

    def _user(self, a: _Arrays, positions: list[int]) -> np.ndarray:
        idx, mask = R.right_aligned([positions], self.model.meta.history, len(a.ids))
        with torch.inference_mode():
            return F.normalize(self.model.user_vectors(a.raw[idx] * mask.unsqueeze(-1), mask), dim=-1).numpy()[0]

    def similar(self, item_ids: Sequence[str], k: int) -> list[tuple[str, float]]:
        """What a shopper who just took the given items buys next (the given ones excluded)."""
        return self.recommend(item_ids, k, exclude=item_ids)

    @staticmethod
    def _top(a: _Arrays, scores: np.ndarray, k: int, exclude: set[int]) -> list[tuple[str, float]]:
        if exclude:
            scores = scores.copy()
            scores[list(exclude)] = -np.inf
        k = min(k, len(scores) - len(exclude))
        if k <= 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(a.ids[i], float(scores[i])) for i in top]

    def upsert(self, items: Sequence[tuple[str, str]]) -> None:
        """Add new items or change the text of existing ones (their vectors recomputed)."""
        if not items:
            return
        with self._lock:
            a = self._arrays
            new_raw, new_out = self._vectors([i for i, _ in items], [t for _, t in items])
            ids, texts, raw, out = list(a.ids), list(a.texts), a.raw[:-1].clone(), a.out.clone()
            added = []
            for row_new, (item_id, text) in enumerate(items):
                if item_id in a.index:
                    row = a.index[item_id]
                    texts[row], raw[row], out[row] = text, new_raw[row_new], new_out[row_new]
                else:
                    ids.append(item_id)
                    texts.append(text)
                    added.append(row_new)
            if added:
                raw, out = torch.cat([raw, new_raw[added]]), torch.cat([out, new_out[added]])
            self._arrays = self._build(ids, texts, (raw, out))

    def delete(self, item_ids: Sequence[str]) -> int:
        """Remove items from every answer; returns how many were in the catalog."""
        with self._lock:
            a = self._arrays
            gone = {a.index[i] for i in item_ids if i in a.index}
            if not gone:
                return 0
            keep = [i for i in range(len(a.ids)) if i not in gone]
            self._arrays = self._build([a.ids[i] for i in keep], [a.texts[i] for i in keep],
                                       (a.raw[:-1][keep], a.out[keep]))
            return len(gone)


def stored_histories(events: pd.DataFrame, length: int) -> dict[str, list[str]]:
    """Each user's last `length` items from interactions ordered by user and time."""
    tail = events.groupby("user_id", sort=False).tail(length)
    return {user: items.tolist() for user, items in tail.groupby("user_id", sort=False)["item_id"]}
