"""GET /dashboard: one static page (dashboard.html, shipped in the layer) that reads the API in the browser
with the key its user enters; the page itself holds no data, so it needs no key to be served."""
from __future__ import annotations

from functools import lru_cache
from importlib.resources import files

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router

router = Router()
PATH = "/dashboard"


@lru_cache(maxsize=1)
def page() -> str:
    return files("stillhouse.http").joinpath("dashboard.html").read_text(encoding="utf-8")


@router.get(PATH, include_in_schema=False)
def dashboard():  # no return annotation: Powertools would build a response schema from it
    return Response(status_code=200, content_type="text/html; charset=utf-8", body=page(),
                    headers={"Cache-Control": "no-cache",
                             # the page talks only to its own origin; nothing inline from elsewhere
                             "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                                                        "style-src 'self' 'unsafe-inline'; img-src 'self' data:"})
