"""`sam build` makes the layer and functions the template deploys: the layer holds the core and its
requirements (built for arm64) and nothing of the local runtime or the GPU stack, and each function's
artifact imports its handler on Python 3.12 with only the layer and what the Lambda runtime provides."""
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAM = REPO / "scripts" / "sam.sh"
LAYER_REQUIREMENTS = REPO / "layers" / "core" / "requirements.txt"
#: What must never reach Lambda (pyproject's forbidden contract, and the embedded runtime).
FORBIDDEN = ("moto", "runpod", "torch", "transformers", "stillhouse_local", "localstack_client")
#: What the python3.12 Lambda runtime itself provides (the layer's requirements file leaves boto3 out).
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def requirement_names(path: Path) -> list[str]:
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("--"):  # the lock's `--hash=...` lines belong to the line above
            names.append(normalized(re.split(r"[\[<>=!~; ]", line, maxsplit=1)[0]))
    return names


def distributions(directory: Path) -> dict[str, str]:
    """normalized distribution name -> version, from the *.dist-info folders in `directory`."""
    found = {}
    for info in directory.glob("*.dist-info"):
        name, _, version = info.name[: -len(".dist-info")].rpartition("-")
        found[normalized(name)] = version
    return found


def sam_env() -> dict[str, str]:
    return {**os.environ, "SAM_CLI_TELEMETRY": "0"}


@pytest.fixture(scope="module")
def python312():
    found = subprocess.run([str(SAM), "--python"], capture_output=True, text=True, check=False)
    if found.returncode != 0:
        pytest.skip(found.stderr.strip() or "no Python 3.12 for the functions' runtime")
    return found.stdout.strip()


@pytest.fixture(scope="module")
def built(python312, tmp_path_factory):
    build_dir = tmp_path_factory.mktemp("sam-build")
    tools = Path(os.environ.get("STILLHOUSE_TOOLS") or Path.home() / ".cache" / "stillhouse")
    done = subprocess.run(
        [str(SAM), "build", "--template-file", str(REPO / "template.yaml"), "--base-dir", str(REPO),
         "--build-dir", str(build_dir), "--cached", "--cache-dir", str(tools / "sam-build-cache")],
        cwd=REPO, env=sam_env(), capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, f"sam build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return build_dir


def template_functions() -> dict[str, dict]:
    from cfnlint.decode import cfn_yaml  # understands !Ref, !GetAtt ...

    template = cfn_yaml.load(str(REPO / "template.yaml"))
    # A function behind the Lambda Web Adapter (Handler: run.sh) is checked through its stream handler.
    return {name: {**res["Properties"], "Handler": res.get("Metadata", {}).get("StreamHandler", res["Properties"]["Handler"])}
            for name, res in template["Resources"].items() if res["Type"] == "AWS::Serverless::Function"}


def test_the_layer_holds_the_core_and_its_requirements(built):
    layer = built / "CoreLayer" / "python"
    assert (layer / "stillhouse" / "__init__.py").is_file()
    core = {p.relative_to(REPO / "layers" / "core") for p in (REPO / "layers" / "core" / "stillhouse").rglob("*.py")}
    assert core <= {p.relative_to(layer) for p in (layer / "stillhouse").rglob("*.py")}
    present = distributions(layer)
    missing = [name for name in requirement_names(LAYER_REQUIREMENTS) if name not in present]
    assert not missing, f"the layer lacks {missing} (it has {sorted(present)})"


def test_the_layer_is_built_for_arm64(built):
    compiled = list((built / "CoreLayer" / "python").rglob("*.so"))
    assert compiled, "pydantic-core at least is compiled"
    wrong = [p.name for p in compiled if "aarch64" not in p.name]
    assert not wrong, f"not built for arm64 (the template's architecture): {wrong}"


def test_nothing_of_the_local_runtime_or_the_gpu_stack_is_deployed(built):
    shipped = {normalized(p.name.split("-")[0].removesuffix(".py")) for artifact in built.iterdir()
               if artifact.is_dir() for p in list(artifact.iterdir()) + list((artifact / "python").glob("*"))}
    assert not shipped & set(FORBIDDEN)


@pytest.fixture(scope="module")
def runtime_overlay(built, python312, tmp_path_factory):
    """What importing the arm64 artifacts on this machine needs besides them: the packages the Lambda
    runtime provides, and this machine's build of each compiled package, same version (nothing else)."""
    runtime = tmp_path_factory.mktemp("lambda-runtime")
    for name in RUNTIME_PACKAGES:
        source = Path(__import__(name).__file__)
        if source.name == "__init__.py":  # a package: its folder; else a module (six.py): its file
            (runtime / name).symlink_to(source.parent)
        else:
            (runtime / source.name).symlink_to(source)
    compiled = tmp_path_factory.mktemp("host-compiled")
    layer = built / "CoreLayer" / "python"
    versions = distributions(layer)
    packages = {p.relative_to(layer).parts[0] for p in layer.rglob("*.so")}
    pins = [f"{package}=={versions[normalized(package)]}" for package in packages]
    subprocess.run([python312, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--target", str(compiled), *pins], check=True, capture_output=True, timeout=300)
    return compiled, runtime


@pytest.mark.parametrize("function", sorted(template_functions()))
def test_each_function_artifact_imports_its_handler(built, python312, runtime_overlay, function):
    compiled, runtime = runtime_overlay
    module, _, attribute = template_functions()[function]["Handler"].rpartition(".")
    # Lambda's order: the function's code, then the layer (/opt/python), then the runtime's own packages;
    # -S: none of this interpreter's own site-packages.
    path = [str(compiled), str(built / function), str(built / "CoreLayer" / "python"), str(runtime)]
    probe = (f"import sys, json; sys.path[:0] = {json.dumps(path)}; import {module}; "
             f"assert callable({module}.{attribute}); "
             f"print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))")
    env = {"PATH": os.environ["PATH"], "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
           "PYTHONNOUSERSITE": "1"}
    done = subprocess.run([python312, "-I", "-S", "-c", probe], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not set(json.loads(done.stdout.splitlines()[-1])) & set(FORBIDDEN)



def test_the_streaming_front_ships_its_executable_start_script(built):
    """The Lambda Web Adapter runs the Handler (run.sh) as a program: it must be in the artifact, executable."""
    script = built / "OpenAIStreamFunction" / "run.sh"
    assert script.is_file() and os.access(script, os.X_OK)
    assert "app.py" in script.read_text()
