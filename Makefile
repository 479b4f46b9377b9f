# The two commands a newcomer needs: `make demo` and `make test`. Each does its own set-up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install demo test lint unit faults bench model-quality broker-fetch clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed: set PYTHON=python3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

broker-fetch: install
	$(BIN)/python -c 'from fraudstream.kafka.broker import resolve_jars; print("Kafka jars in", resolve_jars())'

lint: install
	$(BIN)/ruff check fraudstream tests
	$(BIN)/ruff format --check fraudstream tests
	$(BIN)/mypy

## The whole test suite, against a real Kafka broker started for the run.
test: lint broker-fetch
	$(BIN)/pytest -m "not slow" -q

unit: install
	$(BIN)/pytest tests/unit -q

## Local broker + topics + a worker + the simulator, with a live view. Ctrl-C stops everything.
demo: install broker-fetch
	$(BIN)/fraudstream demo $(if $(DURATION),--duration $(DURATION))

## Every fault scenario (fast + slow) on real processes; rewrites the table in docs/faults.md.
faults: install broker-fetch
	$(BIN)/pytest tests/faults -q; status=$$?; $(BIN)/python -m fraudstream.faults --write-docs; exit $$status

bench: install broker-fetch
	$(BIN)/pip install -q -e '.[bench]'
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && apt-get install -y -qq wrk; } || \
		echo "wrk is not installed: the API section falls back to an aiohttp loop (apt-get install wrk)"
	$(BIN)/fraudstream bench

## The Fraud Detection Handbook benchmark, in process (not in CI; ~20-40 min on 2 cores): train on
## the labelled history before 2018-08-01, replay it through the engine, print the test week's
## table beside the published one. Data: FRAUD_HANDBOOK_DIR, else ../shared/data/handbook.
model-quality: install
	$(BIN)/pip install -q -e '.[backtest]'
	$(BIN)/python -m fraudstream.backtest.handbook --out .fraudstream/model-quality

clean:
	rm -rf $(VENV) .fraudstream .pytest_cache .mypy_cache .ruff_cache
