# Border fusion: `make demo` runs the pipeline with simulated events; `make test` runs every test.
# Each target installs what it needs the first time (venv, Python packages, Kafka jars).

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
BROKER  := deploy/kafka/broker.sh
DEMO_SECONDS ?= 60
COUNTRY ?= mx

.DEFAULT_GOAL := help
.PHONY: help setup demo test unit integration lint types rules-test bench bench-e2e schemas broker-start broker-stop clean console vendor-console

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) ## create the venv, install packages, the Kafka jars, Prometheus and Chromium
	$(BROKER) install
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium package (the console and report browser tests)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null; \
	  else echo "note: install Debian's chromium package for the browser tests (sudo apt-get install chromium)"; fi; }
	@command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's prometheus package (server and promtool)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "note: install Debian's prometheus package for the Prometheus tests (sudo apt-get install prometheus)"; fi; }

demo: setup ## broker, worker, a console per country, simulator: every rule fires in both within a minute
	$(BIN)/python -m streams.tools.demo --seconds $(DEMO_SECONDS)

test: setup ## every test: lint, types, rule tests, unit, integration (starts its own broker)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/fusion rules test
	$(BIN)/pytest -p no:cacheprovider

unit: setup ## unit tests only (no broker)
	$(BIN)/pytest -m "not integration"

integration: setup ## integration tests only (real Kafka broker)
	$(BIN)/pytest -m integration

lint: setup ## ruff
	$(BIN)/ruff check .

types: setup ## mypy --strict
	$(BIN)/mypy

rules-test: setup ## run the tests carried in the rule files
	$(BIN)/fusion rules test

schemas: setup ## regenerate the JSON Schema files
	$(BIN)/python -m schemas.generate

console: setup ## the operations console of one country: make console COUNTRY=mx (broker, worker running)
	$(BIN)/fusion console $(COUNTRY)

vendor-console: ## vendor Leaflet from npm, pinned (deploy/console/vendor.sh)
	deploy/console/vendor.sh

bench: setup ## engine benchmark (no broker)
	$(BIN)/python bench/engine_bench.py

bench-e2e: setup ## peers and the worker on one broker it starts (ARGS="--quick" for a smoke run)
	$(BIN)/python bench/e2e_bench.py $(ARGS)

broker-start: setup ## start the local Kafka broker on 127.0.0.1:9092
	$(BROKER) start

broker-stop: ## stop the local Kafka broker
	$(BROKER) stop

clean: ## stop brokers and remove local state (venv kept)
	-$(BROKER) stop
	rm -rf .broker .broker-test* .demo
