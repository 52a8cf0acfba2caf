"""Embeddings on a tiny random BERT: pooling as configured, unit length, order and padding invariance."""

from __future__ import annotations

import math

import pytest

from gpu_handler.embedding import TextEmbedder

TEXTS = ["hello world", "the quick brown fox jumps over the lazy dog", "a", "batching several requests together"]


def test_vectors_are_unit_length_with_the_model_hidden_size(tiny_embedder: TextEmbedder) -> None:
    result = tiny_embedder.embed(TEXTS)
    assert result.dims == 32
    assert len(result.vectors) == len(TEXTS)
    for vec in result.vectors:
        assert len(vec) == 32
        assert math.sqrt(sum(x * x for x in vec)) == pytest.approx(1.0, abs=1e-5)
    assert result.prompt_tokens > len(TEXTS)


def test_results_keep_the_input_order_and_do_not_depend_on_batch_padding(tiny_embedder: TextEmbedder) -> None:
    together = tiny_embedder.embed(TEXTS).vectors  # batch_size 4: one padded batch
    for text, vec in zip(TEXTS, together):
        assert tiny_embedder.embed([text]).vectors[0] == pytest.approx(vec, abs=1e-5)


def test_the_pooling_config_is_honoured(tiny_embedder: TextEmbedder) -> None:
    import torch

    cls_embedder = TextEmbedder(
        tiny_embedder.model, tiny_embedder.tokenizer, {"pooling_mode_cls_token": True}, name="cls", device="cpu"
    )
    enc = tiny_embedder.tokenizer(["hello world"], return_tensors="pt")
    with torch.inference_mode():
        cls = tiny_embedder.model(**enc).last_hidden_state[0, 0]
    expected = torch.nn.functional.normalize(cls, dim=0).tolist()
    assert cls_embedder.embed(["hello world"]).vectors[0] == pytest.approx(expected, abs=1e-5)

    both = TextEmbedder(
        tiny_embedder.model,
        tiny_embedder.tokenizer,
        {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True},
        name="cls+mean",
        device="cpu",
    )
    assert both.dims == 64 and len(both.embed(["hello"]).vectors[0]) == 64


def test_texts_longer_than_max_seq_length_are_truncated_not_rejected(tiny_embedder: TextEmbedder) -> None:
    assert tiny_embedder.max_length == 32  # from sentence_bert_config.json
    result = tiny_embedder.embed(["hello world " * 100])
    assert result.prompt_tokens == 32
