# K2: `make run` brings the platform up; `make test` runs the test suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean-var chromium prometheus

$(STAMP): requirements/base.txt requirements/dev.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m k2portal.run

test: $(STAMP) chromium prometheus
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

# The admin's browser test drives Debian's chromium with Playwright (never a browser download).
chromium:
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian's chromium for the browser test"; \
	  apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; } \
	  || { echo "could not install chromium: install Debian's chromium package, then run make test again"; exit 1; }

# The alert tests run Debian's promtool and prometheus (unit tests of the rules, an end-to-end alert).
prometheus:
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || { echo "installing Debian's prometheus for the alert tests"; \
	  apt-get install -y -q prometheus >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q prometheus >/dev/null; }; } \
	  || { echo "could not install prometheus: install Debian's prometheus package, then run make test again"; exit 1; }

# ruff, and the import contracts of pyproject.toml (the layers; also checked by
# tests/architecture/test_layers.py, so `make test` fails when one breaks).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean-var:
	rm -rf var/warehouse var/prometheus var/*.log
