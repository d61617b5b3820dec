# Squall: `make run` starts a single node on :8080, `make test` runs every check.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck pytest redis browser screenshots bench chaos soak clean

$(STAMP): requirements.txt requirements-dev.txt
	@test -n "$(PYTHON)" || { echo "need python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV) || { bash scripts/ensure-venv.sh && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

run: $(STAMP)
	$(PY) server.py --config conf/dev.yaml

redis:
	@bash scripts/ensure-redis.sh

# chromium + chromedriver, node, prometheus/promtool (Debian), typescript (npm) into .node/
browser:
	@bash scripts/ensure-browser.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict server.py core handlers client

pytest: $(STAMP) redis browser
	$(PY) -m pytest

# Saves the demo and the dashboard under load to docs/img/ (the README shows them).
screenshots: $(STAMP) redis browser
	SQUALL_SCREENSHOTS=1 $(PY) -m pytest tests/browser -q

test: lint typecheck pytest

# Faults and storms at the issue's scale (real nodes, Redis, a TCP fault proxy; ~10 min);
# figures printed and appended to bench/results/chaos.jsonl. `make test` runs a short
# version of every scenario. `make soak`: the 30,000-connect churn (~6 min).
chaos: $(STAMP) redis
	SQUALL_CHAOS=full SQUALL_CHAOS_RESULTS=bench/results/chaos.jsonl \
		$(PY) -m pytest tests/chaos -p no:randomly -s -q

soak: $(STAMP) redis
	SQUALL_CHAOS=soak SQUALL_CHAOS_RESULTS=bench/results/chaos.jsonl \
		$(PY) -m pytest tests/chaos/test_churn.py -p no:randomly -s -q

$(VENV)/.bench: $(STAMP) bench/requirements.txt
	$(PY) -m pip install -q -r bench/requirements.txt
	touch $(VENV)/.bench

bench: $(VENV)/.bench redis
	$(PY) -m bench.run --short

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .node .wheelhouse
