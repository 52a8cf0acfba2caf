"""Model sources, device choice and the lazy, once-per-process model slot."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from gpu_handler.errors import ModelLoadError
from gpu_handler.loading import LazySlot, ModelSource, embedding_source, generation_source, plan_device


def test_without_model_ids_the_packaged_models_are_used() -> None:
    gen = generation_source(None)
    assert gen.name == "SmolLM2-135M-Instruct"
    assert gen.gguf is not None and gen.gguf.name.endswith(".gguf")
    emb = embedding_source(None)
    assert emb.name == "all-MiniLM-L6-v2"
    assert emb.ref is not None and (Path(emb.ref) / "model.safetensors").is_file()
    gen.check()
    emb.check()


def test_model_ids_may_be_hub_ids_local_directories_or_gguf_files(tmp_path: Path) -> None:
    assert generation_source("HuggingFaceTB/SmolLM2-360M-Instruct") == ModelSource(
        name="SmolLM2-360M-Instruct", ref="HuggingFaceTB/SmolLM2-360M-Instruct"
    )
    assert generation_source(str(tmp_path / "m.Q8_0.gguf")).gguf == tmp_path / "m.Q8_0.gguf"
    assert embedding_source(str(tmp_path)).ref == str(tmp_path)


def test_a_missing_source_fails_the_start_up_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        generation_source(str(tmp_path / "absent.gguf")).check()
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        generation_source(str(tmp_path)).check()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache"):
        generation_source("nobody/not-a-cached-model").check()


def test_on_a_machine_without_cuda_the_model_runs_on_cpu_in_float32() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    plan = plan_device()
    assert (plan.device, plan.dtype, plan.device_map) == ("cpu", torch.float32, None)
    assert plan_device(dtype="bfloat16").dtype == torch.bfloat16


def test_a_lazy_slot_builds_once_even_when_many_threads_ask_at_once() -> None:
    builds: list[int] = []

    def build() -> str:
        builds.append(1)
        time.sleep(0.05)
        return "model"

    slot: LazySlot[str] = LazySlot(build, "test")
    assert not slot.loaded
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(slot.get())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["model"] * 8 and builds == [1] and slot.loaded


def test_a_failed_load_is_remembered_as_a_model_load_error() -> None:
    calls: list[int] = []

    def build() -> str:
        calls.append(1)
        raise OSError("disk on fire")

    slot: LazySlot[str] = LazySlot(build, "test")
    for _ in range(2):
        with pytest.raises(ModelLoadError, match="disk on fire"):
            slot.get()
    assert calls == [1]
