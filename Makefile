# The two commands: `make up` serves a demo model, `make test` runs every check.
# Both create or reuse .venv and install what is missing, so a fresh clone with
# Python 3.11 and the package registries is all they need.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP_FLAGS ?= --quiet --disable-pip-version-check --no-input

.PHONY: install test lint contracts typecheck unit up bench compose-check proto clean

# Azurite (the Azure Storage emulator the storage tests start) from the npm registry, into
# the virtual environment: the tests find it there or on PATH.
AZURITE_VERSION ?= 3.35.0
AZURITE := $(VENV)/node/node_modules/.bin/azurite-blob

install: $(STAMP)

$(STAMP): pyproject.toml requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) -r requirements-dev.txt -e '.[all]'
	@touch $(STAMP)

$(AZURITE): | $(STAMP)
	npm install --prefix $(VENV)/node --no-fund --no-audit --loglevel=error azurite@$(AZURITE_VERSION)

test: $(STAMP) $(AZURITE) lint contracts typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

contracts: $(STAMP)  # the import boundaries between the parts (pyproject.toml)
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy tests bench

# Four workers on two cores: most of the suite's time is spent waiting on the servers,
# stores and subprocesses it starts, not computing (one worker kept the CPUs 45% busy).
TEST_WORKERS ?= 4

# Tests marked `alone` compare latencies or batching within one run; they run after the others, by
# themselves, so no neighbour's work skews the comparison.
unit: $(STAMP) $(AZURITE)
	$(BIN)/pytest -n $(TEST_WORKERS) -m "not alone" --cov --cov-report=
	$(BIN)/pytest -m alone --cov --cov-append --cov-report=term:skip-covered

DEMO ?= demo
PORT ?= 8080
MODEL_PORT ?= 8000

up: $(STAMP)
	$(BIN)/python -m examples.demo_workspace $(DEMO)
	cd $(DEMO) && $(CURDIR)/$(BIN)/nexus serve --model-name demo --port $(PORT) --model-port $(MODEL_PORT)

bench: $(STAMP)
	$(BIN)/python bench/local_store.py
	$(BIN)/python bench/list_large.py
	$(BIN)/python bench/registry_team.py
	$(BIN)/python bench/s3_transfer.py
	$(BIN)/python bench/cloud_transfer.py  # SeaweedFS and Azurite
	$(BIN)/python bench/model_server_overhead.py
	$(BIN)/python bench/proxy_batching.py  # needs wrk: apt-get install wrk
	$(BIN)/python bench/proxy_admission.py  # needs wrk too
	$(BIN)/python bench/trust_overhead.py
	$(BIN)/python bench/v2_protocol.py
	$(BIN)/python bench/scale_out.py  # needs wrk too
	$(BIN)/python bench/many_connections.py

# The README's compose flow in real containers (Docker, or podman + podman-compose); minutes,
# so not part of `make test`.
compose-check: $(STAMP)
	bash deploy/compose/check.sh

# The gRPC modules, generated from nexus_common/grpc_v2/inference.proto and committed. They get
# a descriptor pool of their own: tritonclient registers the same message names in the default.
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
		nexus_common/grpc_v2/inference.proto
	sed -i 's/^DESCRIPTOR = _descriptor_pool.Default()/# Our own pool (make proto): tritonclient registers the same message names in the default one.\nDESCRIPTOR = _descriptor_pool.DescriptorPool()/' \
		nexus_common/grpc_v2/inference_pb2.py
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
		nexus_common/grpc_v2/updates.proto
	sed -i 's/^DESCRIPTOR = _descriptor_pool.Default()/# Our own pool (make proto), as inference_pb2.py has.\nDESCRIPTOR = _descriptor_pool.DescriptorPool()/' \
		nexus_common/grpc_v2/updates_pb2.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .coverage
