"""The inference engine: lazily loaded models, the generation micro-batcher, streaming and embeddings.

All model work runs on ONE inference thread (a single-worker executor): one accelerator executes one
batch at a time anyway, and a single thread keeps torch's global state (RNG seeding, CUDA caches)
free of races. The asyncio side only queues, batches and awaits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .batching import MicroBatcher
from .embedding import TextEmbedder
from .errors import InvalidInput, is_out_of_memory
from .generation import GenerationRequest, GenerationResult, TextGenerator
from .loading import (
    LazySlot,
    ModelSource,
    embedding_source,
    generation_source,
    load_causal_lm,
    load_embedder,
    plan_device,
)
from .schemas import EmbedInput, GenerateInput
from .settings import TaskName, WorkerSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)


class Engine:
    def __init__(
        self,
        settings: WorkerSettings,
        *,
        build_generator: Callable[[], TextGenerator] | None = None,
        build_embedder: Callable[[], TextEmbedder] | None = None,
    ) -> None:
        """`build_*` replace the default model loaders (tests inject tiny models this way)."""
        self.settings = settings
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stillhouse-infer")
        self.generator_slot: LazySlot[TextGenerator] = LazySlot(build_generator or self._load_generator, "generation")
        self.embedder_slot: LazySlot[TextEmbedder] = LazySlot(build_embedder or self._load_embedder, "embedding")
        self.batcher: MicroBatcher[GenerationRequest, GenerationResult] = MicroBatcher(
            self._run_generation_batch,
            key=lambda r: r.batch_key,
            executor=self._executor,
            window_s=settings.batch_window_ms / 1000.0,
            max_size=settings.batch_max_size,
            on_cancel=lambda r: r.cancelled.set(),
        )

    # ---------------------------------------------------------------------------------------------
    # Model loading.

    def sources(self) -> dict[TaskName, ModelSource]:
        return {
            "generate": generation_source(self.settings.model_id),
            "embed": embedding_source(self.settings.embed_model_id),
        }

    def _load_generator(self) -> TextGenerator:
        source = generation_source(self.settings.model_id)
        plan = plan_device(self.settings.device, self.settings.dtype)
        model, tokenizer = load_causal_lm(source, self.settings.model_cache_dir, plan)
        return TextGenerator(
            model,
            tokenizer,
            name=source.name,
            device=plan.device,
            default_max_new_tokens=self.settings.default_max_new_tokens,
            max_new_tokens_limit=self.settings.max_new_tokens_limit,
        )

    def _load_embedder(self) -> TextEmbedder:
        source = embedding_source(self.settings.embed_model_id)
        plan = plan_device(self.settings.device, self.settings.dtype)
        model, tokenizer, pooling = load_embedder(source, plan)
        return TextEmbedder(
            model, tokenizer, pooling, name=source.name, device=plan.device, batch_size=self.settings.embed_batch_size
        )

    def preload(self, tasks: tuple[TaskName, ...]) -> None:
        """Load models now, synchronously (worker start-up); raises ModelLoadError on failure."""
        for task in tasks:
            (self.generator_slot if task == "generate" else self.embedder_slot).get()

    async def _on_inference_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _slot(self, slot: LazySlot[T]) -> T:
        # Loading takes seconds: do it on the inference thread, never on the event loop.
        return slot.get() if slot.loaded else await self._on_inference_thread(slot.get)

    # ---------------------------------------------------------------------------------------------
    # Generation.

    def _run_generation_batch(
        self, requests: list[GenerationRequest], streamer_sink: Callable[[list[int]], None] | None = None
    ) -> list[GenerationResult]:
        """Runs on the inference thread. On out-of-memory, a batch is split in halves and retried, so
        one oversized batch degrades to smaller ones instead of failing every request in it."""
        generator = self.generator_slot.get()
        try:
            return generator.generate(requests, streamer_sink)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            _release_accelerator_memory()
            if len(requests) == 1 or streamer_sink is not None:
                raise
            half = len(requests) // 2
            log.warning(
                "out of memory on a batch of %d; retrying as %d + %d", len(requests), half, len(requests) - half
            )
            return self._run_generation_batch(requests[:half]) + self._run_generation_batch(requests[half:])

    def _prepare(self, generator: TextGenerator, params: GenerateInput) -> GenerationRequest:
        return generator.prepare(
            params,
            default_max_new_tokens=self.settings.default_max_new_tokens,
            max_new_tokens_limit=self.settings.max_new_tokens_limit,
        )

    async def generate(self, params: GenerateInput) -> dict[str, Any]:
        """A complete (non-streamed) generation through the micro-batcher."""
        submitted = time.perf_counter()
        generator = await self._slot(self.generator_slot)
        request = self._prepare(generator, params)
        queued_from = time.perf_counter()
        result = await self.batcher.submit(request)
        return self._result_body(generator, result, queued_from, submitted)

    async def stream(self, params: GenerateInput) -> AsyncIterator[dict[str, Any]]:
        """Text chunks as they are decoded: `{"text": ...}` items, the last one also carrying the
        finish reason, token counts and timings. Joined, the chunks equal the non-streamed text.

        Streams bypass the micro-batcher (a batch would hold every row's tokens until the batch
        ends) but share the inference thread, so they run between batches."""
        submitted = time.perf_counter()
        generator = await self._slot(self.generator_slot)
        request = self._prepare(generator, params)
        loop = asyncio.get_running_loop()
        arrivals: asyncio.Queue[list[int] | None] = asyncio.Queue()

        def sink(token_ids: list[int]) -> None:  # called on the inference thread
            loop.call_soon_threadsafe(arrivals.put_nowait, token_ids)

        queued_from = time.perf_counter()
        run = loop.run_in_executor(self._executor, self._run_generation_batch, [request], sink)
        # Scheduled after every token already handed over, so it also ends the stream on errors.
        run.add_done_callback(lambda _: arrivals.put_nowait(None))
        ids: list[int] = []
        sent = ""
        try:
            while (chunk := await arrivals.get()) is not None:
                ids.extend(chunk)
                text = generator.streamable_text(ids, request.stop)
                if len(text) > len(sent) and text.startswith(sent):
                    yield {"text": text[len(sent) :]}
                    sent = text
            [result] = await run
        except BaseException:
            request.cancelled.set()  # the consumer went away (or failed): stop decoding at the next step
            raise
        if not result.text.startswith(sent):  # cannot happen with prefix-stable decoding; be loud if it does
            log.error("streamed text diverged from the final text: %r vs %r", sent, result.text)
        final = self._result_body(generator, result, queued_from, submitted)
        final["text"] = result.text[len(sent) :] if result.text.startswith(sent) else ""
        yield final

    def _result_body(
        self, generator: TextGenerator, result: GenerationResult, queued_from: float, submitted: float
    ) -> dict[str, Any]:
        done = time.perf_counter()
        decode_s = max(result.generate_s - result.first_token_s, 1e-9)
        return {
            "text": result.text,
            "finish_reason": result.finish_reason,
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "model": generator.name,
            "timings": {
                "queue_ms": _ms(max(result.started_at - queued_from, 0.0)),
                "first_token_ms": _ms(result.first_token_s),
                "generate_ms": _ms(result.generate_s),
                "total_ms": _ms(done - submitted),
                "batch_size": result.batch_size,
                # Per-row decode speed; a batch of n produces n times this in aggregate.
                "tokens_per_s": round(max(result.completion_tokens - 1, 0) / decode_s, 2),
            },
        }

    # ---------------------------------------------------------------------------------------------
    # Embeddings.

    async def embed(self, params: EmbedInput) -> dict[str, Any]:
        started = time.perf_counter()
        texts = params.all_texts
        if len(texts) > self.settings.max_embed_texts:
            raise InvalidInput(
                f"at most {self.settings.max_embed_texts} texts per job (got {len(texts)})", field="texts"
            )
        embedder = await self._slot(self.embedder_slot)
        result = await self._on_inference_thread(embedder.embed, texts)
        return {
            "embeddings": result.vectors,
            "dims": result.dims,
            "count": len(result.vectors),
            "prompt_tokens": result.prompt_tokens,
            "model": embedder.name,
            "timings": {"total_ms": _ms(time.perf_counter() - started)},
        }


def _release_accelerator_memory() -> None:
    """Give cached CUDA blocks back after an OOM so the next (smaller) attempt has room."""
    import sys

    torch = sys.modules.get("torch")  # only if already imported: never import torch just for this
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
