# Meridian — the two set-up commands are `make run` and `make test`.
# Everything installs itself: uv (pinned) into .local/uv, then the locked workspace into .venv.

PY ?= python3.11
UV_VERSION := 0.13.9
UV := .local/uv/bin/uv
VENV := .venv
STAMP := $(VENV)/.installed
export UV_PYTHON_DOWNLOADS := never

.PHONY: install run test unit integration lint proto proto-check bench infra-up infra-down infra-env clean help

help:
	@echo "make run         embedded replay of the shared data through all six services, with a report"
	@echo "make test        lint, unit tests and integration tests (real Kafka + PostgreSQL)"
	@echo "make bench       candles/s embedded vs over Kafka"
	@echo "make proto       regenerate Python contracts from proto/"
	@echo "make infra-up    start local Kafka + PostgreSQL (then: eval \$$(make -s infra-env))"
	@echo "make infra-down  stop them"

$(UV):
	$(PY) -m venv .local/uv
	.local/uv/bin/pip install --quiet uv==$(UV_VERSION)

$(STAMP): $(UV) uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml) apps/cli/pyproject.toml $(wildcard services/*/pyproject.toml)
	$(UV) sync --frozen --python $(PY)
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/meridian run

lint: install
	$(VENV)/bin/ruff check .

unit: install
	$(VENV)/bin/python -m pytest libs/common/tests libs/fake-exchange/tests libs/ml/tests libs/research/tests services apps/cli/tests -q

integration: install
	bash scripts/ci-prereqs.sh
	$(VENV)/bin/python -m pytest tests/integration -q

test: install lint
	bash scripts/ci-prereqs.sh
	$(VENV)/bin/python -m pytest -q

proto: install
	$(VENV)/bin/python scripts/gen_proto.py

bench: install
	bash scripts/ci-prereqs.sh
	$(VENV)/bin/meridian bench

infra-up:
	$(PY) scripts/localinfra.py up

infra-down:
	$(PY) scripts/localinfra.py down

infra-env:
	@$(PY) scripts/localinfra.py env

clean:
	rm -rf $(VENV) .local reports .pytest_cache .ruff_cache
