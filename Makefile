# darkroom: `make run` brings the whole pipeline up locally; `make test` installs what it needs and runs every check.
PYTHON ?= python3
VENV := .venv
TOOLS := .venv-tools
CHECKOV := .venv-checkov
DEPLOY := .venv-deploy
PY := $(VENV)/bin/python
PIP := --quiet --disable-pip-version-check

.DEFAULT_GOAL := help
.PHONY: help install run emulator test lint browser unit integration e2e fault bench template build deploy clean

help: ## List the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## Create .venv with darkroom, its tests and local tooling

$(VENV)/.installed: requirements-dev.txt layers/darkroom/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP) -r requirements-dev.txt
	$(PY) -m pip install $(PIP) --no-deps -e .
	touch $@

$(TOOLS)/.installed: requirements-tools.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install $(PIP) -r requirements-tools.txt
	touch $@

$(DEPLOY)/.installed: requirements-deploy.txt requirements-tools.txt
	$(PYTHON) -m venv $(DEPLOY)
	$(DEPLOY)/bin/python -m pip install $(PIP) -r requirements-deploy.txt
	touch $@

$(CHECKOV)/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV)
	$(CHECKOV)/bin/python -m pip install $(PIP) -r requirements-checkov.txt
	touch $@

run: install ## Run API, worker, moto and the provider emulator on 127.0.0.1 (DARKROOM_PORT, default 3000)
	$(VENV)/bin/darkroom run

emulator: install ## Run only the OpenAI Images API emulator (PORT, default 8080)
	$(VENV)/bin/darkroom emulator --port $${PORT:-8080}

# Two processes (TEST_PROCESSES), one file's tests in the same one: the local stack runs in one Python process and
# is bound by its one core, so the fault runs take one process while the rest of the suite takes the other.
TEST_PROCESSES ?= 2

test: lint browser ## Everything CI runs: lint, then unit, integration, end-to-end, browser and fault tests, with coverage
	$(PY) -m pytest -q -n $(TEST_PROCESSES) --dist loadfile --cov --cov-report=term

lint: install template $(CHECKOV)/.installed ## ruff, mypy, the template through aws-sam-translator, cfn-lint and checkov
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy layers/darkroom/darkroom functions local tests bench
	$(CHECKOV)/bin/checkov --skip-download --quiet --compact --framework cloudformation -f build/template.cfn.json

template: $(TOOLS)/.installed ## Transform template.yaml and lint the result
	$(TOOLS)/bin/python local/transform_template.py template.yaml build/template.cfn.json
	$(TOOLS)/bin/cfn-lint build/template.cfn.json

# sam build without a container: the runtime's Python (found, or installed with pyenv or uv) goes first on PATH, and
# aws-lambda-builders fetches the layer's manylinux aarch64 wheels for it.
CONFIG_ENV ?= dev
# Then the build's Python is compiled to bytecode by the runtime's own interpreter (Lambda cannot write it).
build: install template $(DEPLOY)/.installed ## sam build: the layer and the functions for arm64 into .aws-sam/build
	@runtime_dir=$$($(PY) -m darkroom_local.deploy runtime-dir) || exit 1; \
	  PATH="$$runtime_dir:$$PATH" $(DEPLOY)/bin/sam build --template-file template.yaml
	$(PY) -m darkroom_local.deploy compile .aws-sam/build

deploy: build ## sam deploy with samconfig.toml's CONFIG_ENV (dev, or prod); needs AWS credentials and a region
	@$(PY) -m darkroom_local.deploy credentials
	$(DEPLOY)/bin/sam deploy --config-env $(CONFIG_ENV)

# The playground's browser test drives Debian's chromium through its chromedriver: installed here when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser: ## Install Debian's chromium and chromium-driver when missing
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

unit: install ## Unit tests only (no servers)
	$(PY) -m pytest -q tests/unit

integration: install ## Handlers against moto's server over HTTP
	$(PY) -m pytest -q tests/integration

e2e: install ## The local stack end to end, and the fault run
	$(PY) -m pytest -q tests/e2e

# Every benchmark runs in its own interpreter, even after one misses a goal or crashes; one table at the end; the
# target fails if any figure did.
bench: install ## Every benchmark under bench/ (bench/suite.py), then one table: figure, measured, goal, pass or fail
	$(PY) bench/suite.py

clean: ## Remove environments and build output
	rm -rf $(VENV) $(TOOLS) $(CHECKOV) $(DEPLOY) build .aws-sam .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage .coverage.*
