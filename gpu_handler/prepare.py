"""Prepare the worker's models ahead of time (Docker build step, or a network volume):

    python -m gpu_handler.prepare            # the configured models (MODEL_ID / EMBED_MODEL_ID or defaults)
    python -m gpu_handler.prepare --task generate

Converts a GGUF source into $STILLHOUSE_MODEL_CACHE, downloads hub models into the Hugging Face cache
(when online), then loads each model once and runs a tiny job through it, so a broken model fails the
image build instead of the first job. Exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time

from .engine import Engine
from .errors import JobError
from .schemas import EmbedInput, GenerateInput
from .settings import WorkerSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["generate", "embed"], action="append", help="default: both")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tasks = args.task or ["generate", "embed"]
    engine = Engine(WorkerSettings.from_env())
    report: dict[str, object] = {}
    try:
        for task in tasks:
            started = time.perf_counter()
            if task == "generate":
                out = asyncio.run(engine.generate(GenerateInput(prompt="Say hello.", max_new_tokens=4)))
                report[task] = {"model": out["model"], "sample": out["text"]}
            else:
                out = asyncio.run(engine.embed(EmbedInput(text="hello")))
                report[task] = {"model": out["model"], "dims": out["dims"]}
            report[task]["seconds"] = round(time.perf_counter() - started, 2)  # type: ignore[index]
    except JobError as exc:
        print(json.dumps({"error": exc.payload()}), file=sys.stderr)
        return 1
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
