"""Council prompts and parsing (after karpathy/llm-council): answer, rank anonymised, synthesise.

Pure functions: the workflow tasks call them, the tests read them as the spec of each stage.
"""
from __future__ import annotations

import re
import string
from typing import Any

RANKING_MARKER = "FINAL RANKING:"


def labels_for(models: list[str]) -> dict[str, str]:
    """Anonymous labels, in answer order: {"A": model, "B": model, ...}."""
    return {string.ascii_uppercase[i]: model for i, model in enumerate(models)}


def answer_messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def ranking_messages(prompt: str, answers: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, str]]:
    by_model = {a["model"]: a["text"] for a in answers}
    blocks = "\n\n".join(f"Response {label}:\n{by_model[model]}" for label, model in labels.items())
    return [{"role": "user", "content": (
        f"Question: {prompt}\n\nHere are anonymised responses from several assistants.\n\n{blocks}\n\n"
        "Evaluate each response for accuracy and insight. Then end with a line "
        f"'{RANKING_MARKER}' followed by one line per response, best first, e.g. '1. Response B'."
    )}]


def parse_ranking(text: str, labels: dict[str, str]) -> list[str]:
    """Models in the order a ranker put them (labels after the last FINAL RANKING: marker)."""
    tail = text.rsplit(RANKING_MARKER, 1)[1] if RANKING_MARKER in text else text
    ranked: list[str] = []
    for label in re.findall(r"Response ([A-Z])\b", tail):
        model = labels.get(label)
        if model is not None and model not in ranked:
            ranked.append(model)
    return ranked


def aggregate_rankings(rankings: list[list[str]]) -> list[dict[str, Any]]:
    """Average position per model over the rankers that placed it (lower is better)."""
    positions: dict[str, list[int]] = {}
    for ranking in rankings:
        for position, model in enumerate(ranking, start=1):
            positions.setdefault(model, []).append(position)
    rows = [{"model": m, "average_rank": sum(p) / len(p), "votes": len(p)} for m, p in positions.items()]
    return sorted(rows, key=lambda r: (r["average_rank"], r["model"]))


def synthesis_messages(prompt: str, answers: list[dict[str, Any]], aggregate: list[dict[str, Any]] | None) -> list[dict[str, str]]:
    blocks = "\n\n".join(f"Answer from {a['model']}:\n{a['text']}" for a in answers)
    ranking = ""
    if aggregate:
        ranking = "\n\nPeer ranking (best first): " + ", ".join(r["model"] for r in aggregate)
    return [{"role": "user", "content": (
        f"You chair a council of assistants. Question: {prompt}\n\n{blocks}{ranking}\n\n"
        "Write the single best final answer to the question, using the strongest points above."
    )}]
