"""The code's map holds: the core's import directions, and a Lambda layer that ships the core only.

The directions are import-linter contracts in pyproject.toml ([tool.importlinter]); these tests run them
on the real import graph and show that each one catches what it forbids.
"""
import re
import tomllib
from pathlib import Path

import grimp
import pytest
import yaml
from importlinter import configuration
from importlinter.contracts.forbidden import ForbiddenContract
from importlinter.contracts.layers import LayersContract

ROOT = Path(__file__).resolve().parents[2]
LINTER = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
# Never in the deployed layer: the embedded runtime, its AWS and RunPod stand-ins, the GPU stack.
NOT_DEPLOYED = {"stillhouse_local", "moto", "runpod", "torch", "transformers", "localstack_client",
                "localstack-client", "gguf", "accelerate"}

configuration.configure()


def _contract(contract_type):
    (options,) = [c for c in LINTER["contracts"] if c["type"] == contract_type]
    session = {"root_packages": LINTER["root_packages"], "include_external_packages": True}
    contract_options = {k: v for k, v in options.items() if k not in ("name", "type")}
    cls = {"layers": LayersContract, "forbidden": ForbiddenContract}[contract_type]
    return cls(name=options["name"], session_options=session, contract_options=contract_options)


@pytest.fixture
def graph():
    return grimp.build_graph(*LINTER["root_packages"], include_external_packages=True)  # cached by grimp


@pytest.mark.parametrize("contract_type", ["layers", "forbidden"])
def test_the_core_keeps_its_import_contracts(graph, contract_type):
    result = _contract(contract_type).check(graph, verbose=False)
    assert result.kept, result.metadata


@pytest.mark.parametrize(("importer", "imported"), [
    ("stillhouse.errors", "stillhouse.jobs.store"),  # the bottom reaching up
    ("stillhouse.jobs.dispatch", "stillhouse.container"),  # a domain object calling up into the root
    ("stillhouse.routing.router", "stillhouse.workflows.recovery"),
    ("stillhouse.jobs.dispatch", "stillhouse.jobs.sweeper"),  # siblings stay independent
])
def test_an_import_against_the_layers_breaks_the_contract(graph, importer, imported):
    graph.add_import(importer=importer, imported=imported, line_number=1, line_contents=f"import {imported}")
    assert not _contract("layers").check(graph, verbose=False).kept


def test_a_core_import_of_the_local_runtime_breaks_the_contract(graph):
    graph.add_import(importer="stillhouse.jobs.dispatch", imported="stillhouse_local", line_number=1,
                     line_contents="import stillhouse_local")
    assert not _contract("forbidden").check(graph, verbose=False).kept


def _core_layer_dir() -> Path:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)  # !Sub, !Ref: not needed here
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=Loader)
    (layer,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::Serverless::LayerVersion"]
    return ROOT / layer["Properties"]["ContentUri"]


def _layer_contents(layer: Path) -> tuple[list[str], list[str]]:
    """What `sam build` puts in the layer: the files under ContentUri and the requirements it installs."""
    files = [p.relative_to(layer).as_posix() for p in layer.rglob("*")
             if p.is_file() and "__pycache__" not in p.parts and ".egg-info" not in str(p)]
    lines = (layer / "requirements.txt").read_text().splitlines()
    requirements = [re.split(r"[\s\[<>=~!;]", line.strip(), maxsplit=1)[0].lower()
                    for line in lines if line.strip() and not line.strip().startswith(("#", "--"))]
    return files, requirements


def _offenders(files: list[str], requirements: list[str]) -> list[str]:
    tops = {f.split("/")[0].removesuffix(".py") for f in files}
    return sorted((tops | set(requirements)) & NOT_DEPLOYED)


def test_the_deployed_layer_holds_the_core_and_its_requirements_only():
    files, requirements = _layer_contents(_core_layer_dir())
    assert "stillhouse/container.py" in files and requirements
    assert {f.split("/")[0] for f in files} == {"stillhouse", "requirements.txt"}
    assert _offenders(files, requirements) == []


def test_the_layer_check_finds_the_local_runtime_or_a_test_backend():
    assert _offenders(["stillhouse/jobs/store.py", "stillhouse_local/stack.py"], ["pydantic"]) == ["stillhouse_local"]
    assert _offenders(["stillhouse/aws.py"], ["boto3", "moto", "torch"]) == ["moto", "torch"]
