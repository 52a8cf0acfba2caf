"""What every `stillhouse` command shares: where the API is, its key, `--json`, errors and exit codes.

Exit codes: 0 done; 1 the API refused (its error's code, message and field are printed) or a waited-for job
did not complete; 2 bad usage or bad input caught before any request; 3 the API could not be reached.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any, NoReturn

import requests
import typer
from rich.console import Console
from rich.markup import escape

DEFAULT_API_URL = "http://127.0.0.1:3000"
EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3

console = Console()
errors = Console(stderr=True)

UrlOption = Annotated[str | None, typer.Option("--url", help="the router's API URL (env STILLHOUSE_API_URL)",
                                               show_default=False)]
KeyOption = Annotated[str | None, typer.Option("--key", help="API key (env STILLHOUSE_API_KEY)",
                                               show_default=False)]
JsonOption = Annotated[bool, typer.Option("--json", help="print the API's JSON, for scripts")]


def fail(message: str, *, code: int = EXIT_REFUSED, field: str | None = None) -> NoReturn:
    """Print an error to stderr and end the command with `code`."""
    where = f" (field: {field})" if field else ""
    errors.print(f"[bold red]error[/]: {escape(message + where)}", highlight=False)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    """Plain JSON on stdout (no colour, no wrapping), so `| jq` always works."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


class ApiClient:
    """The router's HTTP API, bound to one URL and key; an error answer ends the command (exit 1)."""

    def __init__(self, url: str, key: str | None, *, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None,
                headers: dict[str, str] | None = None, missing_ok: bool = False, files: Any = None,
                form: dict[str, str] | None = None, raw: bool = False, timeout_s: float | None = None) -> Any:
        """The answer's JSON; None for a 404 when `missing_ok` (an optional route, e.g. a trace).

        `files` (with `form`'s fields) sends multipart/form-data instead of a JSON body; `raw` returns the
        answer's bytes as they came (a file's content) instead of its JSON; `timeout_s` replaces the client's
        (an upload)."""
        if not self.key:
            fail("an API key is needed: --key or STILLHOUSE_API_KEY (`stillhouse up` prints one)", code=EXIT_USAGE,
                 field="--key")
        try:
            response = requests.request(method, self.url + path, json=body, params=params,
                                        timeout=timeout_s or self.timeout_s, files=files, data=form,
                                        headers={"Authorization": f"Bearer {self.key}", **(headers or {})})
        except requests.RequestException as err:
            fail(f"cannot reach the API at {self.url}: {err.__class__.__name__} (is `stillhouse up` running? "
                 "--url or STILLHOUSE_API_URL)", code=EXIT_UNREACHABLE)
        if missing_ok and response.status_code in (404, 405):
            return None
        if raw and response.ok:
            return response.content
        try:
            data = response.json()
        except ValueError:
            data = None
        if not response.ok:
            error = (data or {}).get("error") if isinstance(data, dict) else None
            if isinstance(error, dict):  # ours ({code, message, field}) or OpenAI's ({type, code, message, param})
                fail(f"{response.status_code} {error.get('code') or error.get('type') or ''}: "
                     f"{error.get('message', '')}", field=error.get("field") or error.get("param"))
            fail(f"{response.status_code} from {method} {path}: {response.text[:300]}")
        return data

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, body=body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("PUT", path, body=body, **kw)


def _inherited(ctx: typer.Context | None, name: str) -> Any:
    """An option given to this command or to any group above it (`stillhouse --url X jobs`)."""
    while ctx is not None:
        value = ctx.params.get(name)
        if value is not None:
            return value
        ctx = ctx.parent
    return None


def api_client(ctx: typer.Context | None, url: str | None = None, key: str | None = None) -> ApiClient:
    """The API client for a command: flags first (its own, then its groups'), then the environment."""
    url = url or _inherited(ctx, "url") or os.environ.get("STILLHOUSE_API_URL") or DEFAULT_API_URL
    key = key or _inherited(ctx, "key") or os.environ.get("STILLHOUSE_API_KEY") \
        or os.environ.get("STILLHOUSE_DEV_API_KEY")
    return ApiClient(url, key)


def parse_json_argument(value: str, option: str) -> Any:
    """`--input '{"text": "hi"}'` or `--input @file.json` (`@-` reads stdin); bad JSON exits 2 naming the option."""
    text = value
    if value.startswith("@"):
        name = value[1:]
        try:
            text = sys.stdin.read() if name == "-" else open(name, encoding="utf-8").read()  # noqa: SIM115
        except OSError as err:
            fail(f"cannot read {name}: {err.strerror}", code=EXIT_USAGE, field=option)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        fail(f"not JSON: {err.msg} at line {err.lineno} column {err.colno}", code=EXIT_USAGE, field=option)
