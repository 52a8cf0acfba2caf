"""Fixtures for the GPU worker tests: tiny random models built here (fast), and the engine around them.

Nothing downloads: the hub is switched off before transformers is imported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest

from gpu_handler.embedding import TextEmbedder
from gpu_handler.engine import Engine
from gpu_handler.generation import TextGenerator
from gpu_handler.loading import ModelSource, load_causal_lm, load_embedder, plan_device
from gpu_handler.settings import WorkerSettings

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a serverless worker takes jobs from a queue and returns results",
    "greedy decoding picks the most likely next token every step",
    "batching several requests together makes better use of the accelerator",
    "stop sequences end the completion early when they appear in the text",
    "hello world, how are you today? fine, thanks: 1 2 3 4 5",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _byte_level_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    # Metaspace rather than byte-level BPE: every token decodes to whole characters, so the random
    # model's output is readable text and stop strings can be picked from it.
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>"],
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama (hidden size 32) with a byte-level BPE tokenizer and a chat template, on disk."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = _byte_level_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # Larger than the default 0.02, so logits are far apart: greedy choices are clear-cut and
        # comparisons between runs test the batching logic, not float rounding luck.
        initializer_range=0.3,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # never pick EOS on its own: tests choose when generation should end
        model.lm_head.weight[tokenizer.eos_token_id] = 0.0
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_generator(tiny_lm_dir: Path) -> TextGenerator:
    model, tokenizer = load_causal_lm(
        ModelSource(name="tiny-llama", ref=str(tiny_lm_dir)), Path("/nonexistent"), plan_device("cpu")
    )
    return TextGenerator(model, tokenizer, name="tiny-llama", device="cpu", default_max_new_tokens=16)


@pytest.fixture(scope="session")
def tiny_embed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT (hidden size 32) laid out like a sentence-transformers model (mean pooling)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert")
    words = sorted({w.strip(",.?:") for line in CORPUS for w in line.split()})
    (path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(path / "vocab.txt"))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True})
    )
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 32}))
    return path


@pytest.fixture(scope="session")
def tiny_embedder(tiny_embed_dir: Path) -> TextEmbedder:
    model, tokenizer, pooling = load_embedder(
        ModelSource(name="tiny-bert", ref=str(tiny_embed_dir)), plan_device("cpu")
    )
    return TextEmbedder(model, tokenizer, pooling, name="tiny-bert", device="cpu", batch_size=4)


@pytest.fixture
def make_engine(tiny_generator: TextGenerator, tiny_embedder: TextEmbedder) -> Callable[..., Engine]:
    """An Engine serving the tiny models; keyword arguments override WorkerSettings fields."""

    def make(**overrides: Any) -> Engine:
        settings = WorkerSettings(**{"batch_window_ms": 20.0, "batch_max_size": 16, **overrides})
        return Engine(settings, build_generator=lambda: tiny_generator, build_embedder=lambda: tiny_embedder)

    return make
