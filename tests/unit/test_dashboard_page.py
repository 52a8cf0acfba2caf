"""The dashboard page ships where both runtimes find it: in the core package (the layer's ContentUri), declared
as package data for installs; the route serves it as HTML with no key (the page holds no data)."""
import re
import tomllib
from importlib.resources import files
from pathlib import Path

import yaml

from stillhouse.http import dashboard, public_api

ROOT = Path(__file__).resolve().parents[2]


def test_the_page_lives_in_the_layer_and_in_the_package_data():
    page = Path(str(files("stillhouse.http").joinpath("dashboard.html")))
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=yaml.BaseLoader)
    (layer,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::Serverless::LayerVersion"]
    assert page.is_relative_to(ROOT / layer["Properties"]["ContentUri"])
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "*.html" in package_data["stillhouse.http"]


def test_the_route_serves_html_without_a_key():
    response = dashboard.dashboard()
    assert response.status_code == 200
    assert response.content_type.startswith("text/html")
    assert "<title>stillhouse dashboard</title>" in response.body
    assert dashboard.PATH in public_api.PUBLIC_PATHS
    assert "/dashboard" in (ROOT / "template.yaml").read_text()  # API Gateway routes it to the API function


def test_the_batches_panel_reads_the_batch_api_and_hides_itself_on_a_server_without_it():
    """GET /v1/batches?limit=20 through the page's own `api()` (the key it holds, as Bearer), apart from the
    other calls; a 404 or 405 (an older server) hides the panel for good, without an error on the page."""
    html = dashboard.page()
    for element in ('<section class="span12" id="batches-panel" hidden>', '<table id="batches">',
                    'id="batches-note"'):
        assert element in html, element
    refresh = html[html.index("async function refresh()"):html.index("async function refreshBatches")]
    assert "refreshBatches();" in refresh and "Promise.all" in refresh
    batches = html[html.index("async function refreshBatches"):html.index("function batchProgress")]
    assert 'await api("/v1/batches?limit=20")' in batches
    assert "error.status === 404 || error.status === 405" in batches
    assert 'state.batches = false;\n      $("batches-panel").hidden = true;' in batches
    assert '$("error")' not in batches  # the page's error line is for the calls it cannot do without


def test_each_batch_shows_its_progress_completed_and_failed_apart_and_its_text_escaped():
    html = dashboard.page()
    progress = html[html.index("function batchProgress"):html.index("function renderBatches")]
    assert 'class="done"' in progress and 'class="failed"' in progress  # two parts of one bar
    assert "count(c.total), done = count(c.completed), failed = count(c.failed)" in progress  # numbers only
    rows = html[html.index("function renderBatches"):html.index("function render(")]
    fields = re.findall(r"\bb\.(\w+)", rows)
    assert {"id", "status", "endpoint", "request_counts", "created_at", "errors"} <= set(fields)
    # Text from the API goes into the page only through esc(), as in the page's other panels.
    assert not re.findall(r"\$\{(?!esc\(|batchProgress\(b\.request_counts\))[^}]*\bb\.", rows)
    assert "${esc(said.join(" in rows
