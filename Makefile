# nxs-mesh: every target creates .venv itself, so a fresh clone needs only Python 3.11+, git and make.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PORT    ?= 4222

.DEFAULT_GOAL := help
.PHONY: help install run test demo bench lint clean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the project with its test tools

run: $(STAMP) ## start the embedded NATS server (JetStream, 127.0.0.1:PORT (default 4222), store in .nxs/) and ensure the streams
	$(BIN)/nxs up --port $(PORT)

test: $(STAMP) ## run the whole test suite against real nats-server processes (two workers, then the `alone` files serially)
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not alone" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -m alone $(PYTEST_ARGS)

demo: $(STAMP) ## scripted local scenario: three nodes, chat, command, task, a node killed, the alert, a gather, an agent handoff
	$(BIN)/nxs demo

bench: $(STAMP) ## mesh vs nats-py (raw, lean, push) and Synadia's agent SDK (default scenarios), then presence at scale
	@$(BIN)/python -c "import synadia_ai.agent_service" 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/nxs bench
	$(BIN)/nxs bench scale --nodes 10,50,150,300

lint: $(STAMP) ## ruff on everything, mypy --strict on the library (both installed into .venv on first use)
	@$(BIN)/python -m mypy --version >/dev/null 2>&1 || $(BIN)/python -m pip install --quiet -e '.[test,lint]'
	$(BIN)/python -m ruff check nxs_mesh cli tests examples
	$(BIN)/python -m mypy

clean: ## remove .venv and the local store
	rm -rf $(VENV) .nxs build *.egg-info
