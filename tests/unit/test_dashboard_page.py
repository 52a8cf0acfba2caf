"""The dashboard page ships where both runtimes find it: in the core package (the layer's ContentUri), declared
as package data for installs; the route serves it as HTML with no key (the page holds no data)."""
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
