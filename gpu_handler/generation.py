"""Text generation with transformers: prompt preparation, one left-padded `generate` call per batch,
per-request stop handling, and token streaming. Synchronous; `engine.py` runs it off the event loop.

Why batching does not change greedy results: every row gets its own attention mask (left padding is
masked out), and `generate` derives position ids from that mask, so a padded row sees exactly the
positions and keys it would see alone. Each request keeps its own `max_new_tokens` and `stop`
strings: a per-row stopping criterion marks a row finished, and the tokens the batch produces for it
afterwards are dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .errors import InvalidInput
from .schemas import GenerateInput

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass
class GenerationRequest:
    """One prepared request: token ids plus everything that decides how it is decoded."""

    input_ids: list[int]
    max_new_tokens: int
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int | None = None
    # Set when the caller went away: the row is marked finished at the next decoding step.
    cancelled: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def batch_key(self) -> tuple[Any, ...]:
        """Requests with equal keys may share one `generate` call.

        Greedy requests all batch together. Sampled ones batch by sampling parameters; a seeded one runs
        alone, because the rows of a batch draw from one random stream and a seed would then not
        reproduce its result."""
        if self.greedy:
            return ("greedy",)
        if self.seed is not None:
            return ("seeded", id(self))
        return ("sample", self.temperature, self.top_p, self.top_k)


@dataclass
class GenerationResult:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    token_ids: list[int]
    batch_size: int
    started_at: float  # time.perf_counter() when the batch's generate started
    first_token_s: float  # from batch start to the first new token (prefill included)
    generate_s: float  # wall time of the whole batch's generate


class _RowTracker:
    """Per-row stopping criterion: EOS, the row's own stop strings, its own max_new_tokens, or a cancel.

    `generate` calls it after every decoding step with all ids so far; it returns one bool per row.
    (Duck-typed rather than subclassing StoppingCriteria so that torch/transformers stay lazy imports.)
    """

    def __init__(self, requests: Sequence[GenerationRequest], prompt_width: int, eos_ids: set[int], gen: TextGenerator):
        self.requests = requests
        self.prompt_width = prompt_width
        self.eos_ids = eos_ids
        self.gen = gen
        self.done = [False] * len(requests)
        self.lengths: list[int | None] = [None] * len(requests)
        self.reasons: list[FinishReason | None] = [None] * len(requests)
        self.first_call_at: float | None = None
        # A stop string of n characters spans at most 4n byte-level tokens: decoding that window of the
        # newest tokens each step finds it without re-decoding the whole completion.
        self.windows = [4 * max((len(s) for s in r.stop), default=0) + 8 for r in requests]

    def _finish(self, row: int, length: int, reason: FinishReason) -> None:
        self.done[row] = True
        self.lengths[row] = length
        self.reasons[row] = reason

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.Tensor:
        import torch

        if self.first_call_at is None:
            self.first_call_at = time.perf_counter()
        step = input_ids.shape[1] - self.prompt_width  # tokens generated so far
        last = input_ids[:, -1].tolist()
        for row, req in enumerate(self.requests):
            if self.done[row]:
                continue
            newest = input_ids[row, -min(step, self.windows[row]) :]
            if last[row] in self.eos_ids or (req.stop and self._has_stop(newest.tolist(), req.stop)):
                self._finish(row, step, "stop")
            elif step >= req.max_new_tokens:
                self._finish(row, step, "length")
            elif req.cancelled.is_set():
                self._finish(row, step, "cancelled")
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)

    def _has_stop(self, ids: list[int], stops: tuple[str, ...]) -> bool:
        text = self.gen.decode(ids)
        return any(s in text for s in stops)


class _TokenStreamer:
    """Hands each new token id to `sink` (called on the generating thread). `generate` first puts the
    prompt, which is skipped."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.sink(value.reshape(-1).tolist())

    def end(self) -> None:
        pass


class TextGenerator:
    """A causal LM plus its tokenizer. Thread-compatible, not thread-safe: call from one thread."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        device: str,
        default_max_new_tokens: int = 128,
        max_new_tokens_limit: int = 2048,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.device = device
        self.default_max_new_tokens = default_max_new_tokens
        self.max_new_tokens_limit = max_new_tokens_limit
        gen_cfg = model.generation_config
        eos = gen_cfg.eos_token_id if gen_cfg.eos_token_id is not None else tokenizer.eos_token_id
        self.eos_ids: set[int] = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = gen_cfg.pad_token_id
        if pad is None:
            # Padding positions are masked out, so any id works; EOS is the usual choice.
            pad = min(self.eos_ids) if self.eos_ids else 0
        self.pad_id: int = int(pad)
        self.max_positions: int | None = getattr(model.config, "max_position_embeddings", None)
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))

    # ---------------------------------------------------------------------------------------------
    # Preparation (cheap; runs on the event loop thread).

    def prepare(
        self,
        params: GenerateInput,
        *,
        default_max_new_tokens: int | None = None,
        max_new_tokens_limit: int | None = None,
    ) -> GenerationRequest:
        """Tokenize and validate one request. The keyword arguments override this generator's limits
        (the engine passes the worker's settings)."""
        limit = max_new_tokens_limit or self.max_new_tokens_limit
        max_new = params.max_new_tokens or default_max_new_tokens or self.default_max_new_tokens
        if max_new > limit:
            raise InvalidInput(f"max_new_tokens must be <= {limit} (got {max_new})", field="max_new_tokens")
        ids = self._prompt_ids(params)
        if not ids:
            raise InvalidInput("the prompt encodes to zero tokens", field="prompt")
        if self.max_positions is not None and len(ids) + max_new > self.max_positions:
            where = "messages" if params.messages is not None else "prompt"
            if len(ids) >= self.max_positions:
                raise InvalidInput(
                    f"the prompt is {len(ids)} tokens; this model takes at most {self.max_positions}", field=where
                )
            raise InvalidInput(
                f"prompt ({len(ids)} tokens) + max_new_tokens ({max_new}) exceeds the model's context of "
                f"{self.max_positions} tokens",
                field="max_new_tokens",
            )
        return GenerationRequest(
            input_ids=ids,
            max_new_tokens=max_new,
            stop=tuple(params.stop),
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            seed=params.seed,
        )

    def _prompt_ids(self, params: GenerateInput) -> list[int]:
        if params.messages is not None:
            messages = [m.model_dump() for m in params.messages]
            if not self.has_chat_template:
                raise InvalidInput(f"model {self.name} has no chat template; send `prompt` instead", field="messages")
            return self._chat_ids(messages, field_name="messages")
        assert params.prompt is not None
        if self.has_chat_template and not params.raw:
            return self._chat_ids([{"role": "user", "content": params.prompt}], field_name="prompt")
        return list(self.tokenizer(params.prompt, add_special_tokens=True)["input_ids"])

    def _chat_ids(self, messages: list[dict[str, str]], field_name: str) -> list[int]:
        try:
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # jinja raises TemplateError, e.g. for a bad role order
            raise InvalidInput(f"the chat template rejected the messages: {exc}", field=field_name) from exc
        # The rendered template already holds the special tokens (BOS, role markers): add none twice.
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # ---------------------------------------------------------------------------------------------
    # Decoding helpers.

    def decode(self, ids: Sequence[int]) -> str:
        # No space clean-up: it would make the text of a prefix of tokens not a prefix of the full text,
        # and streaming relies on that.
        return self.tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)

    @staticmethod
    def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
        hits = [i for i in (text.find(s) for s in stops) if i >= 0]
        return (text[: min(hits)], True) if hits else (text, False)

    def streamable_text(self, ids: Sequence[int], stops: Sequence[str]) -> str:
        """The part of the text so far that can be sent and will never change: cut at a stop string, and
        holding back a tail that could still grow into one (or is an incomplete UTF-8 character)."""
        text, stopped = self.cut_at_stop(self.decode(ids), stops)
        if stopped:
            return text
        text = text.rstrip("\ufffd")
        hold = 0
        for s in stops:
            for k in range(min(len(s) - 1, len(text)), hold, -1):
                if text.endswith(s[:k]):
                    hold = k
                    break
        return text[: len(text) - hold]

    # ---------------------------------------------------------------------------------------------
    # The batch call (runs on the inference thread).

    def generate(self, requests: Sequence[GenerationRequest], streamer_sink: Any = None) -> list[GenerationResult]:
        import torch
        from transformers import StoppingCriteriaList

        if not requests:
            return []
        if streamer_sink is not None and len(requests) != 1:
            raise ValueError("streaming generates one request at a time")
        first = requests[0]
        if any(r.batch_key != first.batch_key for r in requests):
            raise ValueError("a batch mixes incompatible sampling settings")

        width = max(len(r.input_ids) for r in requests)
        input_ids = torch.full((len(requests), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(requests), width), dtype=torch.long)
        for row, req in enumerate(requests):  # left padding: every row's last prompt token is aligned
            n = len(req.input_ids)
            input_ids[row, width - n :] = torch.tensor(req.input_ids, dtype=torch.long)
            attention_mask[row, width - n :] = 1
        input_ids = input_ids.to(self.device)
        attention_mask = attention_mask.to(self.device)

        tracker = _RowTracker(requests, width, self.eos_ids, self)
        config = self._generation_config(first, max(r.max_new_tokens for r in requests))
        if first.seed is not None and not first.greedy:
            torch.manual_seed(first.seed)  # generate samples from the global RNG; this thread owns it

        started = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=config,
                stopping_criteria=StoppingCriteriaList([tracker]),
                streamer=_TokenStreamer(streamer_sink) if streamer_sink is not None else None,
            )
        elapsed = time.perf_counter() - started
        first_token_s = (tracker.first_call_at or started + elapsed) - started
        new_tokens = out[:, width:].tolist()

        results = []
        for row, req in enumerate(requests):
            length = tracker.lengths[row]
            reason: FinishReason = tracker.reasons[row] or "length"
            ids = new_tokens[row][: length if length is not None else len(new_tokens[row])]
            text, _ = self.cut_at_stop(self.decode(ids), req.stop)
            results.append(
                GenerationResult(
                    text=text,
                    finish_reason=reason,
                    prompt_tokens=len(req.input_ids),
                    completion_tokens=len(ids),
                    token_ids=ids,
                    batch_size=len(requests),
                    started_at=started,
                    first_token_s=first_token_s,
                    generate_s=elapsed,
                )
            )
        return results

    def _generation_config(self, req: GenerationRequest, max_new_tokens: int) -> Any:
        from transformers import GenerationConfig

        # An explicit config: a model's own generation_config may enable sampling or top-k by default.
        common: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "pad_token_id": self.pad_id,
            "eos_token_id": sorted(self.eos_ids) or None,
            "use_cache": True,
        }
        if req.greedy:
            return GenerationConfig(do_sample=False, **common)
        return GenerationConfig(
            do_sample=True,
            temperature=req.temperature,
            top_p=req.top_p,
            top_k=req.top_k or 0,  # 0 disables top-k (older transformers default it to 50)
            **common,
        )
