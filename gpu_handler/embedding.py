"""Sentence embeddings with a plain transformers encoder, pooled the way sentence-transformers would pool
it (read from the model's `1_Pooling/config.json`), then L2-normalised. Synchronous."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The order sentence-transformers concatenates pooled vectors in when several modes are enabled.
POOLING_MODES = (
    "pooling_mode_cls_token",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_lasttoken",
)


@dataclass
class EmbeddingResult:
    vectors: list[list[float]]
    dims: int
    prompt_tokens: int


class TextEmbedder:
    def __init__(
        self, model: Any, tokenizer: Any, pooling: dict[str, Any], *, name: str, device: str, batch_size: int = 32
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.device = device
        self.batch_size = batch_size
        if pooling.get("pooling_mode_weightedmean_tokens"):
            raise ValueError("weighted-mean pooling is not supported")
        self.modes = [m for m in POOLING_MODES if pooling.get(m)] or ["pooling_mode_mean_tokens"]
        limits = [pooling.get("max_seq_length"), getattr(model.config, "max_position_embeddings", None)]
        model_max = getattr(tokenizer, "model_max_length", None)
        if isinstance(model_max, int) and model_max < 1_000_000:  # "no limit" is a huge sentinel
            limits.append(model_max)
        self.max_length: int = min(x for x in limits if x) if any(limits) else 512
        self.dims: int = model.config.hidden_size * len(self.modes)

    def embed(self, texts: list[str]) -> EmbeddingResult:
        import torch

        # Sorting by length keeps each batch's padding small; results go back in the caller's order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors: list[list[float] | None] = [None] * len(texts)
        tokens = 0
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                enc = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                tokens += int(enc["attention_mask"].sum())
                hidden = self.model(**enc).last_hidden_state.float()
                pooled = self._pool(hidden, enc["attention_mask"])
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                for i, vec in zip(idx, pooled.cpu().tolist()):
                    vectors[i] = vec
        return EmbeddingResult(vectors=[v for v in vectors if v is not None], dims=self.dims, prompt_tokens=tokens)

    def _pool(self, hidden: Any, mask: Any) -> Any:
        import torch

        m = mask.unsqueeze(-1).to(hidden.dtype)
        parts = []
        for mode in self.modes:
            if mode == "pooling_mode_cls_token":
                parts.append(hidden[:, 0])
            elif mode == "pooling_mode_max_tokens":
                parts.append(hidden.masked_fill(m == 0, float("-inf")).max(dim=1).values)
            elif mode == "pooling_mode_mean_tokens":
                parts.append((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9))
            elif mode == "pooling_mode_mean_sqrt_len_tokens":
                parts.append((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9).sqrt())
            elif mode == "pooling_mode_lasttoken":
                # Works for right padding (the tokenizer default for encoders): last unmasked position.
                last = mask.sum(1) - 1
                parts.append(hidden[torch.arange(hidden.shape[0], device=hidden.device), last])
        return torch.cat(parts, dim=-1)
