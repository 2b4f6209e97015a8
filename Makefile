# Two commands for a new user: `make run` and `make test`. Everything else is set up on demand.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 8501

.PHONY: run test test-aws bench chromium clean-venv

$(VENV)/.runtime: requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

## Start the dashboard on the local backend.
run: $(VENV)/.runtime
	@$(PY) -c "import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', $(PORT)))" 2>/dev/null || \
		{ echo "Port $(PORT) is in use (a dashboard already running?): open http://127.0.0.1:$(PORT), stop it, or run 'make run PORT=8502'." >&2; exit 1; }
	@echo "Scones Unlimited dashboard: http://127.0.0.1:$(PORT)  (backend: $${SCONES_BACKEND:-local}, workspace: $${SCONES_HOME:-~/.scones})"
	$(VENV)/bin/streamlit run app.py --server.headless true --server.address 127.0.0.1 \
		--server.port $(PORT) --browser.gatherUsageStats false

## Run every test (unit, backend contract, AppTest, browser).
test: $(VENV)/.dev chromium
	$(PY) -m pytest

## Debian's Chromium for the browser tests; installed when running as root.
chromium:
	@command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium || { \
		if [ "$$(id -u)" = "0" ]; then \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) || \
			{ echo "Could not install Chromium with apt-get; install Debian's 'chromium' package and run 'make test' again." >&2; exit 1; }; \
		else \
			echo "The browser tests need Debian's Chromium at /usr/bin/chromium: run 'sudo apt-get install -y chromium', then 'make test' again." >&2; exit 1; \
		fi; }

## Benchmarks (JSON out); not part of `make test`.
bench: $(VENV)/.dev
	@for b in bench/*.py; do echo "== $$b" >&2; $(PY) $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
