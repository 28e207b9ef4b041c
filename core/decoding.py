"""Continuous batching for the instruct LM: requests join and leave a running greedy decode between
two steps, instead of waiting for a whole batch to finish (Orca, OSDI '22; vLLM).

`DecodeBatch` holds the rows being generated and one key/value cache for all of them, left-padded
to a common width with an attention mask. `admit` runs the new prompts' prefill (one forward over
them, left-padded), takes each one's first token and joins their cache to the running one (the
narrower side padded on the left); `step` runs one forward over every row's last token. A row
leaves as soon as it produced its end-of-turn token or its own token limit, and the cache's
columns no remaining row needs are cut. Positions are each row's own count of real tokens, so a
row's answer does not depend on what it was batched with: greedy answers equal
`core.lm.generate`'s (tested).

Serving (`serve/decode_loop.py`) drives it: admit what waits, step, hand out what finished, again.
One adapter at a time: the peft model's active adapter is the batch's. No Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from core import lm


@dataclass
class Row:
    tag: object
    """The caller's handle for this request (returned with its events)."""
    limit: int
    prompt_tokens: int
    produced: list[int] = field(default_factory=list)
    sent: int = 0
    """Characters of the answer already handed out as pieces (streaming)."""


@dataclass(frozen=True)
class Finished:
    tag: object
    generation: lm.Generation
    rest: str
    """The answer's text not yet handed out by `pieces` (all of it for a caller that never asked)."""


class DecodeBatch:
    """The running rows of a continuous greedy decode over one model (see the module's doc)."""

    def __init__(self, model, tokenizer, *, max_prompt_tokens: int = 384, device: str | torch.device = "cpu"):
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.max_prompt_tokens = max_prompt_tokens
        self.eot = lm.end_of_turn(tokenizer)
        self.rows: list[Row] = []
        self.cache = None
        self.mask: torch.Tensor | None = None  # [rows, width]: 1 where a cached position is a real token

    def __len__(self) -> int:
        return len(self.rows)

    @torch.inference_mode()
    def admit(self, prompts: Sequence[str], limits: Sequence[int], tags: Sequence[object]) -> list[Finished]:
        """Prefill `prompts` (user turns) and join them to the running rows; returns the ones that
        are already done (a one-token limit, or an empty answer)."""
        if not prompts:
            return []
        batch = lm.encode_prompts(self.tokenizer, prompts, self.max_prompt_tokens)
        ids, mask = batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                         use_cache=True, logits_to_keep=1)
        first = out.logits[:, -1].argmax(-1).tolist()
        rows = [Row(tag, max(1, int(limit)), int(m.sum()), [token])
                for tag, limit, m, token in zip(tags, limits, mask, first)]
        self._join(out.cache, mask, rows)
        return self._retire()

    @torch.inference_mode()
    def step(self) -> list[Finished]:
        """One token more for every row; returns the rows that finished with it."""
        if not self.rows:
            return []
        ids = torch.tensor([[row.produced[-1]] for row in self.rows], device=self.device)
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        out = self.model(input_ids=ids, attention_mask=self.mask, position_ids=self.mask.sum(-1, keepdim=True) - 1,
                         cache=self.cache, use_cache=True)
        self.cache = out.cache
        for row, token in zip(self.rows, out.logits[:, -1].argmax(-1).tolist()):
            row.produced.append(token)
        return self._retire()

    def pieces(self, tags=None) -> list[tuple[object, str]]:
        """(tag, new text) for each running row (of `tags` only, when given: the streamed ones)
        whose answer grew since the last call (a piece that ends inside a multi-byte character
        waits for the next token)."""
        out = []
        for row in self.rows:
            if tags is not None and row.tag not in tags:
                continue
            text = self._text(row)
            if len(text) > row.sent and not text.endswith("\ufffd"):
                out.append((row.tag, text[row.sent:]))
                row.sent = len(text)
        return out

    # ---- internals ------------------------------------------------------------------------------

    def _text(self, row: Row) -> str:
        tokens = row.produced[: row.limit]
        if self.eot in tokens:
            tokens = tokens[: tokens.index(self.eot)]
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _done(self, row: Row) -> bool:
        return row.produced[-1] == self.eot or len(row.produced) >= row.limit

    def _retire(self) -> list[Finished]:
        done = [i for i, row in enumerate(self.rows) if self._done(row)]
        if not done:
            return []
        finished = []
        for i in done:
            row = self.rows[i]
            keep = row.produced[: row.limit]
            stopped = self.eot in keep
            text = self._text(row)
            finished.append(Finished(row.tag, lm.Generation(text.strip(), row.prompt_tokens,
                                                            keep.index(self.eot) if stopped else len(keep),
                                                            "stop" if stopped else "length"), text[row.sent:]))
        keep_idx = [i for i in range(len(self.rows)) if i not in set(done)]
        self.rows = [self.rows[i] for i in keep_idx]
        if not self.rows:
            self.cache, self.mask = None, None
            return finished
        index = torch.tensor(keep_idx, device=self.device)
        self.mask = self.mask.index_select(0, index)
        start = int((self.mask.sum(0) > 0).nonzero()[0])  # columns every remaining row has as padding
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, start:]
            layer.values = layer.values.index_select(0, index)[:, :, start:]
        return finished

    def _join(self, cache, mask: torch.Tensor, rows: list[Row]) -> None:
        if not self.rows:
            self.cache, self.mask, self.rows = cache, mask, rows
            return
        width = max(self.mask.shape[1], mask.shape[1])

        def left(t: torch.Tensor, have: int) -> torch.Tensor:  # pad the sequence axis (-2) on the left
            return F.pad(t, (0, 0, width - have, 0)) if have < width else t

        old_w, new_w = self.mask.shape[1], mask.shape[1]
        for mine, theirs in zip(self.cache.layers, cache.layers):
            mine.keys = torch.cat([left(mine.keys, old_w), left(theirs.keys, new_w)], dim=0)
            mine.values = torch.cat([left(mine.values, old_w), left(theirs.values, new_w)], dim=0)
        self.mask = torch.cat([F.pad(self.mask, (width - old_w, 0)), F.pad(mask, (width - new_w, 0))], dim=0)
        self.rows += rows
