# The two commands a newcomer needs: `make demo` and `make test`. Each does its own set-up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LOCK   := requirements/dev.txt
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | cksum | cut -d' ' -f1)

.PHONY: install lock tools demo test lint unit faults bench model-quality broker-fetch clean

# Dependencies from the lock (exact versions and hashes: every install is the same), then the
# project itself without dependencies; `pip check` proves the lock satisfies pyproject.toml.
$(STAMP): pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed: set PYTHON=python3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --require-hashes -r $(LOCK)
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/pip check
	@rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

## Re-resolve the locks after changing dependencies in pyproject.toml (every platform, Python 3.11+):
## runtime.txt (the image, the wheel test) and dev.txt (what `make install` and CI install).
lock:
	@test -x $(BIN)/uv || { $(PYTHON) -m venv $(VENV) && $(BIN)/pip install -q 'uv>=0.9,<1'; }
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 \
		--generate-hashes --custom-compile-command "make lock" -o requirements/runtime.txt -q
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
		-c requirements/runtime.txt \
		--generate-hashes --custom-compile-command "make lock" -o $(LOCK) -q

broker-fetch: install
	$(BIN)/python -c 'from fraudstream.kafka.jvm import resolve_jars; print("Kafka jars in", resolve_jars())'

lint: install
	$(BIN)/ruff check fraudstream tests
	$(BIN)/ruff format --check fraudstream tests
	$(BIN)/mypy

## prometheus + promtool (Debian's package) and helm (its Go module), once, into the cache.
tools: install
	deploy/install-tools.sh "$$($(BIN)/python -c 'from fraudstream.kafka.jvm import cache_root; print(cache_root() / "tools")')"

## The whole test suite, against a real Kafka broker started for the run.
## In TEST_WORKERS pytest-xdist processes, each with a broker of its own; who runs what:
## tests/xdist_groups.py. Most tests wait on the broker and on worker processes: one after
## another, the suite kept ~60 % of one core busy. 2 on a 2-core machine: the tests that time or
## load the machine on purpose (the "heavy" group: fault scenarios, bench, stall, scaling), by
## estimate close to half of the serial run, go one after another to one process while the rest
## fits in the other; a third process could not shorten the heavy half, only take CPU from the
## tests that time it.
TEST_WORKERS ?= 2
test: lint broker-fetch tools
	$(BIN)/pytest -m "not slow" -q -n $(TEST_WORKERS) --dist loadgroup

unit: install
	$(BIN)/pytest tests/unit -q

## Local broker + topics + a worker + the simulator, with a live view. Ctrl-C stops everything.
demo: install broker-fetch
	$(BIN)/fraudstream demo $(if $(DURATION),--duration $(DURATION))

## Every fault scenario (fast + slow) on real processes, RUNS times (default 1); rewrites the table
## in docs/faults.md with each scenario's worst run.
RUNS ?= 1
faults: install broker-fetch
	$(BIN)/python -m fraudstream.faults --reset
	status=0; for i in $$(seq $(RUNS)); do $(BIN)/pytest tests/faults -q || status=1; done; \
		$(BIN)/python -m fraudstream.faults --write-docs; exit $$status

bench: install broker-fetch
	$(BIN)/pip install -q -e '.[bench]'
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && apt-get install -y -qq wrk; } || \
		echo "wrk is not installed: the API section falls back to an aiohttp loop (apt-get install wrk)"
	$(BIN)/fraudstream bench

## The Fraud Detection Handbook benchmark (not in CI; ~1 h on 2 cores): train on the labelled
## history before 2018-08-01, replay it through the live stream (a broker of its own, a worker
## with the aggregator and the join), print the test week's table beside the published one.
## Data: FRAUD_HANDBOOK_DIR, else ../shared/data/handbook. In process only: drop --through-kafka.
model-quality: install broker-fetch
	$(BIN)/python -m fraudstream.backtest.handbook --out .fraudstream/model-quality --through-kafka

clean:
	rm -rf $(VENV) .fraudstream .pytest_cache .mypy_cache .ruff_cache
