# The two commands: `make run` and `make test`.  Both create .venv on first
# use (only python3 is needed) and install the project into it.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= conf/orchestrator.yaml
PYTEST_ARGS ?=

.PHONY: run test install install-test bench check-config clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Editable install in compat mode, so twistd sees twisted/plugins.
# (The distribution was called "orchestrator" before it became txorchestrator:
# the metadata an old editable install of that name left is removed first.)
$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	@rm -rf orchestrator.egg-info
	$(BIN)/python -m pip install --quiet -e . --config-settings editable_mode=compat
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed setup.cfg
	$(BIN)/python -m pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	$(BIN)/twistd -n --pidfile= orchestrator --config $(CONFIG)

check-config: install
	$(BIN)/orchestrator check-config $(CONFIG)

# Tools some tests need are fetched, never installed: .ci/fetch-deb-tool
# unpacks their Debian package under .cache/, .ci/fetch-chromium Chromium and
# its missing libraries (one line says what was fetched, or why not: those
# tests then skip with that reason).
TOOLS := $(CURDIR)/.cache/bin

test: install-test
	@command -v promtool >/dev/null 2>&1 || ./.ci/fetch-deb-tool prometheus promtool
	@command -v systemd-analyze >/dev/null 2>&1 || ./.ci/fetch-deb-tool systemd systemd-analyze
	@./.ci/fetch-chromium || echo "browser tests will skip: Chromium could not be fetched"
	PATH="$(TOOLS):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install-test
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build dist *.egg-info twisted/plugins/dropin.cache .orchestrator-state .cache
