"""The Lambda layer installs a lock, not ranges: layers/core/requirements.txt pins every package `sam build`
installs, each with the hashes pip checks, made by `make lock` from pyproject's dependencies for the Lambda
runtime (Python 3.12 on arm64). These tests read files only: no index is asked."""
import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "layers" / "core" / "requirements.txt"
RUNTIME_PROVIDES = {"boto3"}  # the Lambda runtime's own: never in the layer


def _declared() -> dict[str, Requirement]:
    """pyproject's dependencies, as the layer needs them."""
    deps = [Requirement(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    return {canonicalize_name(r.name): r for r in deps if canonicalize_name(r.name) not in RUNTIME_PROVIDES}


def _locked(text: str) -> dict[str, dict]:
    """name -> {"version", "hashes", "via"} of each entry of a `uv pip compile --generate-hashes` file."""
    entries: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        if pin := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line):
            current = entries[canonicalize_name(pin[1])] = {"version": pin[2], "hashes": [], "via": []}
        elif current is not None and (digest := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            current["hashes"].append(digest[1])
        elif current is not None and (via := re.match(r"^\s+#\s+(?:via\s+)?(\S.*)$", line)) and via[1] != "via":
            current["via"].append(via[1])
        elif line.strip() and not line.startswith(("#", " ")):
            raise AssertionError(f"not a pinned entry: {line!r}")  # a range or a bare name slipped in
    return entries


def _mismatches(declared: dict[str, Requirement], locked: dict[str, dict]) -> list[str]:
    problems = []
    for name, requirement in declared.items():
        if name not in locked:
            problems.append(f"{name} is a dependency but not in the lock")
        elif not requirement.specifier.contains(locked[name]["version"], prereleases=True):
            problems.append(f"{name}=={locked[name]['version']} does not satisfy {requirement}")
    for name, entry in locked.items():
        if not entry["hashes"]:
            problems.append(f"{name} has no hash")
        if not entry["via"] and name not in declared:  # required by nothing in the lock: a dependency no more
            problems.append(f"{name} is locked but no longer a dependency")
    return problems


def test_the_layers_lock_pins_with_hashes_exactly_what_pyproject_declares():
    assert _mismatches(_declared(), _locked(LOCK.read_text())) == [], "run `make lock`"


def test_the_check_finds_a_lock_out_of_date_with_pyproject():
    locked = _locked(LOCK.read_text())
    declared = _declared()
    added = {**declared, "httpx": Requirement("httpx>=0.27")}
    assert _mismatches(added, locked) == ["httpx is a dependency but not in the lock"]
    raised = {**declared, "pydantic": Requirement(f"pydantic>{locked['pydantic']['version']}")}
    assert [p for p in _mismatches(raised, locked) if p.startswith("pydantic==")]
    dropped = {k: v for k, v in declared.items() if k != "cachetools"}
    assert _mismatches(dropped, locked) == ["cachetools is locked but no longer a dependency"]
    unhashed = {**locked, "tenacity": {**locked["tenacity"], "hashes": []}}
    assert _mismatches(declared, unhashed) == ["tenacity has no hash"]


def test_the_lock_is_made_for_the_runtime_and_architecture_the_template_deploys():
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=Loader)
    (layer,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::Serverless::LayerVersion"]
    assert (ROOT / layer["Properties"]["ContentUri"] / "requirements.txt") == LOCK
    functions = template["Globals"]["Function"]
    assert layer["Metadata"]["BuildArchitecture"] == "arm64" and functions["Architectures"] == ["arm64"]
    python = functions["Runtime"].removeprefix("python")
    recipe = re.search(r"^lock:.*?(?=^\S)", (ROOT / "Makefile").read_text(), re.S | re.M)[0]
    assert "--generate-hashes" in recipe and "-o layers/core/requirements.txt" in recipe
    assert "--python-platform aarch64-manylinux2014" in recipe and f"--python-version {python}" in recipe


def test_the_workers_base_image_is_pinned_by_digest():
    """A tag moves; a digest names the exact image that was reviewed."""
    dockerfile = (ROOT / "gpu_handler" / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)
    assert bases and all(re.search(r"@sha256:[0-9a-f]{64}$", base) for base in bases), bases
