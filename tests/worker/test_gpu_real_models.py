"""The packaged default models, for real: SmolLM2-135M-Instruct (from its GGUF) and all-MiniLM-L6-v2.

The first run converts the GGUF once (~25 s on 2 CPU cores) into $STILLHOUSE_MODEL_CACHE (default
~/.cache/stillhouse/models); later runs load the converted model in under a second.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from gpu_handler.engine import Engine
from gpu_handler.schemas import GenerateInput
from gpu_handler.settings import WorkerSettings

pytestmark = pytest.mark.slow

QUESTIONS = ["What is the capital of France?", "Name a primary colour.", "Write one word about the sea."]


@pytest.fixture(scope="session")
def real_engine() -> Engine:
    # The packaged defaults whatever MODEL_ID says; only the cache location comes from the environment.
    env = WorkerSettings.from_env()
    return Engine(env.model_copy(update={"model_id": None, "embed_model_id": None, "batch_window_ms": 50.0}))


def test_smollm2_answers_a_chat_question(real_engine: Engine) -> None:
    out = asyncio.run(
        real_engine.generate(GenerateInput(messages=[{"role": "user", "content": QUESTIONS[0]}], max_new_tokens=12))
    )
    assert "Paris" in out["text"]
    assert out["model"] == "SmolLM2-135M-Instruct"
    assert 0 < out["completion_tokens"] <= 12


def test_smollm2_batched_greedy_output_equals_one_at_a_time(real_engine: Engine) -> None:
    async def together() -> list[dict[str, Any]]:
        return list(
            await asyncio.gather(*(real_engine.generate(GenerateInput(prompt=q, max_new_tokens=10)) for q in QUESTIONS))
        )

    batched = asyncio.run(together())
    generator = real_engine.generator_slot.get()
    alone = [generator.generate([generator.prepare(GenerateInput(prompt=q, max_new_tokens=10))])[0] for q in QUESTIONS]
    assert [b["timings"]["batch_size"] for b in batched] == [len(QUESTIONS)] * len(QUESTIONS)
    assert [b["text"] for b in batched] == [a.text for a in alone]
    assert [b["completion_tokens"] for b in batched] == [a.completion_tokens for a in alone]


def test_smollm2_streamed_text_equals_the_non_streamed_text(real_engine: Engine) -> None:
    params = {"prompt": "Tell me about the moon.", "max_new_tokens": 16}

    async def both() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        chunks = [c async for c in real_engine.stream(GenerateInput(stream=True, **params))]
        return chunks, await real_engine.generate(GenerateInput(**params))

    chunks, whole = asyncio.run(both())
    assert "".join(c["text"] for c in chunks) == whole["text"]
    assert chunks[-1]["completion_tokens"] == whole["completion_tokens"]


def test_the_converted_smollm2_is_reused_from_the_cache(real_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    from gpu_handler.loading import MARKER_FILE, convert_gguf, generation_source

    real_engine.generator_slot.get()  # converted by now
    source = generation_source(None)
    assert source.gguf is not None

    def no_conversion(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the cached conversion should have been used")

    monkeypatch.setattr(gguf_utils, "load_gguf_checkpoint", no_conversion)
    target = convert_gguf(source.gguf, real_engine.settings.model_cache_dir, source.name)
    assert (target / MARKER_FILE).is_file() and (target / "model.safetensors").is_file()


def test_minilm_embeddings_are_384_dimensional_unit_vectors_that_capture_meaning(real_engine: Engine) -> None:
    from gpu_handler.schemas import EmbedInput

    texts = ["A cat sits on the mat.", "A kitten is resting on a rug.", "Quarterly stock market earnings rose."]
    out = asyncio.run(real_engine.embed(EmbedInput(texts=texts)))
    assert (out["dims"], out["count"], out["model"]) == (384, 3, "all-MiniLM-L6-v2")
    cat, kitten, stocks = out["embeddings"]
    assert all(math.isclose(sum(x * x for x in v), 1.0, abs_tol=1e-4) for v in (cat, kitten, stocks))

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b))

    assert cos(cat, kitten) > 0.5 > cos(cat, stocks)
