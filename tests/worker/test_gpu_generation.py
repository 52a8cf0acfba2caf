"""Generation on a tiny random Llama: batching, stop handling, streaming and limits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from gpu_handler.engine import Engine
from gpu_handler.errors import InvalidInput
from gpu_handler.generation import GenerationRequest, TextGenerator
from gpu_handler.schemas import GenerateInput
from gpu_handler.tasks import run_job

PROMPTS = [
    "hello world",
    "the quick brown fox jumps over",
    "a",
    "stop sequences end the completion early when they",
    "batching",
]


def prepare(gen: TextGenerator, prompt: str, **params: Any) -> GenerationRequest:
    return gen.prepare(GenerateInput(prompt=prompt, **params))


def test_a_greedy_generation_returns_text_token_counts_and_finish_reason(tiny_generator: TextGenerator) -> None:
    [result] = tiny_generator.generate([prepare(tiny_generator, "hello world", max_new_tokens=7)])
    assert result.completion_tokens == 7 == len(result.token_ids)
    assert result.finish_reason == "length"
    assert result.text == tiny_generator.decode(result.token_ids)
    assert result.prompt_tokens == len(prepare(tiny_generator, "hello world").input_ids)
    assert result.batch_size == 1


def test_batched_greedy_decoding_equals_one_at_a_time_token_for_token(tiny_generator: TextGenerator) -> None:
    """Prompts of different lengths share one left-padded batch, each with its own max_new_tokens."""
    requests = [prepare(tiny_generator, p, max_new_tokens=n) for p, n in zip(PROMPTS, [20, 5, 30, 12, 25])]
    alone = [tiny_generator.generate([r])[0] for r in requests]
    together = tiny_generator.generate(requests)
    assert len({len(r.input_ids) for r in requests}) > 1, "the test needs prompts of different lengths"
    for a, b, req in zip(alone, together, requests):
        assert b.token_ids == a.token_ids
        assert b.text == a.text
        assert b.completion_tokens == req.max_new_tokens
        assert b.batch_size == len(requests)


def test_concurrent_requests_are_micro_batched_without_changing_greedy_results(
    make_engine: Callable[..., Engine], tiny_generator: TextGenerator
) -> None:
    engine = make_engine(batch_window_ms=50.0)
    alone = [tiny_generator.generate([prepare(tiny_generator, p, max_new_tokens=10)])[0].text for p in PROMPTS]

    async def main() -> list[dict[str, Any]]:
        return list(
            await asyncio.gather(*(engine.generate(GenerateInput(prompt=p, max_new_tokens=10)) for p in PROMPTS))
        )

    results = asyncio.run(main())
    assert [r["text"] for r in results] == alone
    assert engine.batcher.batch_sizes == [len(PROMPTS)]
    assert all(r["timings"]["batch_size"] == len(PROMPTS) for r in results)


def test_the_batcher_never_exceeds_its_max_batch_size(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(batch_window_ms=50.0, batch_max_size=2)

    async def main() -> None:
        await asyncio.gather(*(engine.generate(GenerateInput(prompt=p, max_new_tokens=3)) for p in PROMPTS))

    asyncio.run(main())
    assert sum(engine.batcher.batch_sizes) == len(PROMPTS)
    assert max(engine.batcher.batch_sizes) == 2


def test_greedy_and_sampled_requests_never_share_a_batch() -> None:
    greedy = GenerationRequest([1], 5)
    sampled = GenerationRequest([1], 5, temperature=0.8, top_p=0.9)
    other_sampled = GenerationRequest([1], 5, temperature=0.8, top_p=0.9)
    seeded = GenerationRequest([1], 5, temperature=0.8, top_p=0.9, seed=1)
    assert greedy.batch_key == GenerationRequest([2, 3], 9, stop=("x",)).batch_key
    assert sampled.batch_key == other_sampled.batch_key != greedy.batch_key
    assert seeded.batch_key != GenerationRequest([1], 5, temperature=0.8, top_p=0.9, seed=1).batch_key


def test_a_seeded_sampled_request_is_reproducible(tiny_generator: TextGenerator) -> None:
    def sample(seed: int) -> list[int]:
        req = prepare(tiny_generator, "hello world", max_new_tokens=12, temperature=1.0, top_p=0.9, seed=seed)
        return tiny_generator.generate([req])[0].token_ids

    assert sample(7) == sample(7)


def test_a_stop_sequence_cuts_the_text_before_it_and_reports_stop(tiny_generator: TextGenerator) -> None:
    [free] = tiny_generator.generate([prepare(tiny_generator, "hello world", max_new_tokens=30)])
    stop = free.text[10:13]
    assert free.text.index(stop) > 0, f"pick a stop string from inside the free text: {free.text!r}"
    [cut] = tiny_generator.generate([prepare(tiny_generator, "hello world", max_new_tokens=30, stop=stop)])
    assert cut.text == free.text[: free.text.index(stop)]
    assert cut.finish_reason == "stop"
    assert cut.completion_tokens < free.completion_tokens
    assert cut.token_ids == free.token_ids[: cut.completion_tokens]


def test_stop_sequences_apply_per_request_inside_a_batch(tiny_generator: TextGenerator) -> None:
    [free] = tiny_generator.generate([prepare(tiny_generator, "hello world", max_new_tokens=30)])
    stop = free.text[10:13]
    requests = [
        prepare(tiny_generator, "hello world", max_new_tokens=30, stop=[stop, "never-appears"]),
        prepare(tiny_generator, "hello world", max_new_tokens=30),
        prepare(tiny_generator, "batching", max_new_tokens=30),
    ]
    cut, uncut, other = tiny_generator.generate(requests)
    assert (cut.text, cut.finish_reason) == (free.text[: free.text.index(stop)], "stop")
    assert (uncut.text, uncut.finish_reason) == (free.text, "length")
    assert other.token_ids == tiny_generator.generate([requests[2]])[0].token_ids


def test_eos_ends_generation_with_finish_reason_stop_and_is_counted(
    tiny_lm_dir: Any, tiny_generator: TextGenerator
) -> None:
    [free] = tiny_generator.generate([prepare(tiny_generator, "hello world", max_new_tokens=10)])
    # A generator for the same model that treats the 4th greedy token as its end-of-sequence token.
    gen = TextGenerator(tiny_generator.model, tiny_generator.tokenizer, name="tiny", device="cpu")
    gen.eos_ids = {free.token_ids[3]}
    first = free.token_ids.index(free.token_ids[3])
    [ended] = gen.generate([prepare(gen, "hello world", max_new_tokens=10)])
    assert ended.finish_reason == "stop"
    assert ended.completion_tokens == first + 1  # the EOS token itself is counted
    assert ended.token_ids == free.token_ids[: first + 1]


def test_streamed_chunks_join_to_the_non_streamed_text(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()

    async def both(**params: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        chunks = [c async for c in engine.stream(GenerateInput(prompt="hello world", stream=True, **params))]
        return chunks, await engine.generate(GenerateInput(prompt="hello world", **params))

    chunks, whole = asyncio.run(both(max_new_tokens=25))
    assert len(chunks) > 2, "text should arrive in several chunks"
    assert "".join(c["text"] for c in chunks) == whole["text"]
    assert chunks[-1]["finish_reason"] == whole["finish_reason"] == "length"
    assert chunks[-1]["completion_tokens"] == whole["completion_tokens"] == 25

    stop = whole["text"][8:11]
    chunks, cut = asyncio.run(both(max_new_tokens=25, stop=stop))
    assert "".join(c["text"] for c in chunks) == cut["text"] == whole["text"][: whole["text"].index(stop)]
    assert chunks[-1]["finish_reason"] == "stop"


def test_streaming_holds_back_text_that_may_become_a_stop_sequence(tiny_generator: TextGenerator) -> None:
    ids = tiny_generator.tokenizer("hello wor", add_special_tokens=False)["input_ids"]
    text = tiny_generator.decode(ids)
    assert tiny_generator.streamable_text(ids, ["world"]) == text[: text.rindex("wor")]
    assert tiny_generator.streamable_text(ids, ["xyz"]) == text
    assert tiny_generator.streamable_text(ids, ["lo"]) == text[: text.index("lo")]


def test_messages_are_rendered_with_the_chat_template(tiny_generator: TextGenerator) -> None:
    req = tiny_generator.prepare(
        GenerateInput(messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}])
    )
    rendered = tiny_generator.tokenizer.decode(req.input_ids)
    assert rendered.replace(" ", "").startswith("<|system|>bebrief</s><|user|>hello</s><|assistant|>")


def test_a_bare_prompt_is_sent_as_a_user_message_unless_raw(tiny_generator: TextGenerator) -> None:
    chat = prepare(tiny_generator, "hello")
    as_message = tiny_generator.prepare(GenerateInput(messages=[{"role": "user", "content": "hello"}]))
    raw = prepare(tiny_generator, "hello", raw=True)
    assert chat.input_ids == as_message.input_ids
    assert raw.input_ids == tiny_generator.tokenizer("hello")["input_ids"]


def test_prompt_plus_max_new_tokens_beyond_the_context_is_rejected_naming_the_field(
    tiny_generator: TextGenerator,
) -> None:
    with pytest.raises(InvalidInput) as err:
        prepare(tiny_generator, "hello", max_new_tokens=200)  # the tiny model's context is 128
    assert err.value.field == "max_new_tokens"
    with pytest.raises(InvalidInput) as err:
        prepare(tiny_generator, "hello " * 200, max_new_tokens=1)
    assert err.value.field == "prompt"


def test_max_new_tokens_above_the_worker_limit_is_a_job_error(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(max_new_tokens_limit=8)
    out = asyncio.run(run_job({"task": "generate", "prompt": "hi", "max_new_tokens": 9}, lambda: engine))
    error = json.loads(out["error"])
    assert error["error_type"] == "ValidationError"
    assert error["field"] == "max_new_tokens"
    assert error["retryable"] is False


def test_a_batch_that_runs_out_of_memory_is_split_and_retried(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(batch_window_ms=50.0)
    real = engine.generator_slot.get()
    sizes: list[int] = []

    class SmallMemoryGenerator:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def generate(self, requests: list[GenerationRequest], streamer_sink: Any = None) -> Any:
            sizes.append(len(requests))
            if len(requests) > 2:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return real.generate(requests)

    engine.generator_slot._value = SmallMemoryGenerator()  # type: ignore[assignment]

    async def main() -> list[dict[str, Any]]:
        jobs = [{"task": "generate", "prompt": p, "max_new_tokens": 4} for p in PROMPTS]
        return list(await asyncio.gather(*(run_job(j, lambda: engine) for j in jobs)))

    results = asyncio.run(main())
    assert all("error" not in r for r in results)
    assert sizes == [5, 2, 3, 1, 2]  # halves until a batch fits


def test_a_single_request_out_of_memory_is_a_retryable_job_error(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    real = engine.generator_slot.get()

    class NoMemoryGenerator:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def generate(self, requests: list[GenerationRequest], streamer_sink: Any = None) -> Any:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    engine.generator_slot._value = NoMemoryGenerator()  # type: ignore[assignment]
    for job in (
        {"task": "generate", "prompt": "hi", "max_new_tokens": 4},
        {"task": "generate", "prompt": "hi", "max_new_tokens": 4, "stream": True},
    ):
        out = asyncio.run(run_job(job, lambda: engine))
        error = json.loads(out["error"])
        assert (error["error_type"], error["retryable"]) == ("OutOfMemory", True)
        assert "out of memory" in error["error_message"]
