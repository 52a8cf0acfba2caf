"""GPU worker throughput: tokens/s at concurrency 1 vs 16 through the engine, a `batch` chunk vs the same
prompts as single jobs, plus model load times.

    .venv/bin/python -m benchmarks.worker_throughput [--max-new-tokens 64] [--concurrency 16] [--batch-lines 16]

Run it as a module from the repository root (as `make bench` does): that puts the root on sys.path, where
the `gpu_handler` package lives.

Prints ONE JSON object on stdout (progress goes to stderr). Same 16 prompts and the same engine path
(engine.generate -> micro-batcher -> model.generate) in both modes, greedy decoding:
  c1  = the requests one at a time (each waits for the previous one), so every batch has one row;
  c16 = all requests submitted concurrently, so the batcher runs them as one batch.
Then the Batch API's path, both through tasks.run_job (the dispatch a RunPod job takes):
  singles = the --batch-lines prompts as that many `generate` jobs, one after another;
  batch   = the same prompts as the lines of one `batch` job (a chunk), whose lines run concurrently.
load_s_cold includes the one-time GGUF -> safetensors conversion (into a fresh temporary cache);
load_s_cached is a second load from that cache. Both exclude importing torch/transformers (import_s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from gpu_handler import tasks
from gpu_handler.engine import Engine
from gpu_handler.schemas import GenerateInput
from gpu_handler.settings import WorkerSettings

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how photosynthesis works.",
    "Describe the water cycle in detail.",
    "What are the benefits of regular exercise?",
    "Explain the difference between weather and climate.",
    "Write a poem about autumn leaves.",
    "Describe how a computer processor works.",
    "What is the history of the bicycle?",
    "Explain why the sky is blue.",
    "Give some advice for learning a new language.",
    "Describe a day in the life of a honeybee.",
    "How do airplanes stay in the air?",
    "Explain what machine learning is to a child.",
    "Write a letter to a friend about a trip to the mountains.",
    "What makes a good cup of coffee?",
    "Describe the solar system and its planets.",
]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def run_requests(
    engine: Engine, prompts: list[str], max_new: int, concurrent: bool
) -> tuple[float, list[dict[str, Any]]]:
    def params(p: str) -> GenerateInput:
        return GenerateInput(prompt=p, max_new_tokens=max_new)

    started = time.perf_counter()
    if concurrent:
        results = list(await asyncio.gather(*(engine.generate(params(p)) for p in prompts)))
    else:
        results = [await engine.generate(params(p)) for p in prompts]
    return time.perf_counter() - started, results


async def run_jobs(
    engine: Engine, settings: WorkerSettings, model: str, prompts: list[str], max_new: int, as_batch: bool
) -> tuple[float, list[dict[str, Any]]]:
    """The prompts as `generate` jobs through tasks.run_job: one `batch` chunk, or single jobs in turn."""
    jobs = [{"task": "generate", "model": model, "prompt": p, "max_new_tokens": max_new} for p in prompts]
    started = time.perf_counter()
    if as_batch:
        chunk = {"task": "batch", "model": model,
                 "lines": [{"custom_id": f"line-{i}", "input": job} for i, job in enumerate(jobs)]}
        out = await tasks.run_job(chunk, lambda: engine, settings)
        if "error" in out:
            raise SystemExit(f"the batch job failed: {out['error']}")
        failed = [line for line in out["lines"] if "error" in line]
        if failed:
            raise SystemExit(f"{len(failed)} batch lines failed, the first: {failed[0]['error']}")
        results = [line["output"] for line in out["lines"]]
    else:
        results = []
        for job in jobs:
            out = await tasks.run_job(job, lambda: engine, settings)
            if "error" in out:
                raise SystemExit(f"a generate job failed: {out['error']}")
            results.append(out)
    return time.perf_counter() - started, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--window-ms", type=float, default=10.0)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's own, i.e. OMP_NUM_THREADS or the cores)",
    )
    parser.add_argument(
        "--batch-lines",
        type=int,
        default=16,
        help="lines in the `batch` chunk compared with as many single generate jobs (0 skips that comparison)",
    )
    args = parser.parse_args()
    prompts = (PROMPTS * (args.concurrency // len(PROMPTS) + 1))[: args.concurrency]
    batch_prompts = (PROMPTS * (args.batch_lines // len(PROMPTS) + 1))[: args.batch_lines]

    load_avg_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    import torch
    import transformers

    import_s = time.perf_counter() - t0
    if args.threads:
        torch.set_num_threads(args.threads)

    cache = Path(tempfile.mkdtemp(prefix="stillhouse-bench-cache-"))
    try:
        settings = WorkerSettings.from_env().model_copy(
            update={
                "model_id": None,
                "model_cache_dir": cache,
                "batch_window_ms": args.window_ms,
                # Big enough for either mode to run as one batch (a c-mode run never has more pending).
                "batch_max_size": max(args.concurrency, args.batch_lines, 1),
            }
        )
        log("cold load (GGUF conversion into a fresh cache)...")
        t0 = time.perf_counter()
        Engine(settings).generator_slot.get()
        load_s_cold = time.perf_counter() - t0

        engine = Engine(settings)
        t0 = time.perf_counter()
        generator = engine.generator_slot.get()
        load_s_cached = time.perf_counter() - t0
        log(f"loads: cold {load_s_cold:.1f}s, cached {load_s_cached:.2f}s")

        asyncio.run(run_requests(engine, prompts[:2], 4, concurrent=True))  # warm-up, not measured
        log("c1: one request at a time...")
        c1_s, c1 = asyncio.run(run_requests(engine, prompts, args.max_new_tokens, concurrent=False))
        log(f"c{args.concurrency}: all requests at once...")
        cn_s, cn = asyncio.run(run_requests(engine, prompts, args.max_new_tokens, concurrent=True))
        if batch_prompts:
            log(f"singles: {len(batch_prompts)} generate jobs, one after another...")
            singles_s, singles = asyncio.run(
                run_jobs(engine, settings, generator.name, batch_prompts, args.max_new_tokens, as_batch=False)
            )
            log(f"batch: one batch job of {len(batch_prompts)} lines...")
            before = len(engine.batcher.batch_sizes)
            batch_s, batched = asyncio.run(
                run_jobs(engine, settings, generator.name, batch_prompts, args.max_new_tokens, as_batch=True)
            )
            batch_sizes_batch = engine.batcher.batch_sizes[before:]
    finally:
        shutil.rmtree(cache, ignore_errors=True)

    c1_tokens = sum(r["completion_tokens"] for r in c1)
    cn_tokens = sum(r["completion_tokens"] for r in cn)
    tps_c1 = c1_tokens / c1_s
    tps_cn = cn_tokens / cn_s
    plan_device = generator.device
    dtype = str(next(generator.model.parameters()).dtype).removeprefix("torch.")
    if plan_device == "cuda":
        device = f"cuda:{torch.cuda.get_device_name(0)}"
    else:
        cpu = platform.processor() or platform.machine()
        device = f"cpu:{cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    result = {
        "tokens_per_s_c1": round(tps_c1, 2),
        f"tokens_per_s_c{args.concurrency}": round(tps_cn, 2),
        "speedup": round(tps_cn / tps_c1, 2),
        "load_s_cold": round(load_s_cold, 2),
        "load_s_cached": round(load_s_cached, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "device": device,
        "dtype": dtype,
        "model": generator.name,
        "max_new_tokens": args.max_new_tokens,
        "requests": len(prompts),
        "completion_tokens_c1": c1_tokens,
        f"completion_tokens_c{args.concurrency}": cn_tokens,
        "wall_s_c1": round(c1_s, 2),
        f"wall_s_c{args.concurrency}": round(cn_s, 2),
        f"batch_sizes_c{args.concurrency}": sorted({r["timings"]["batch_size"] for r in cn}),
        "greedy_outputs_identical": [r["text"] for r in c1] == [r["text"] for r in cn],
        "import_s": round(import_s, 2),
        # Other processes competing for the cores skew the figures: record how busy the machine was.
        "loadavg_1m_start": round(load_avg_start, 2),
        "loadavg_1m_end": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    if batch_prompts:
        singles_tokens = sum(r["completion_tokens"] for r in singles)
        batch_tokens = sum(r["completion_tokens"] for r in batched)
        tps_singles = singles_tokens / singles_s
        tps_batch = batch_tokens / batch_s
        result.update({
            "batch_lines": len(batch_prompts),
            "tokens_per_s_singles": round(tps_singles, 2),
            "tokens_per_s_batch": round(tps_batch, 2),
            "batch_speedup": round(tps_batch / tps_singles, 2),
            "completion_tokens_singles": singles_tokens,
            "completion_tokens_batch": batch_tokens,
            "wall_s_singles": round(singles_s, 2),
            "wall_s_batch": round(batch_s, 2),
            "batch_sizes_batch": batch_sizes_batch,  # the micro-batches the chunk's lines ran in
            "batch_max_size": settings.batch_max_size,
            "batch_outputs_identical": [r["text"] for r in singles] == [r["text"] for r in batched],
        })
    print(json.dumps(result))


if __name__ == "__main__":
    main()
