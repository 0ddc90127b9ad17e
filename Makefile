# trimtab: `make demo` and `make test` set everything up on a fresh machine and are quick after.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.stamp-install
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEB_PACKAGES := prometheus prometheus-alertmanager nginx

.PHONY: demo test live-demo venv debs validate bench clean

demo: venv
	$(VENV)/bin/trimtab replay --out reports/demo

test: venv debs
	$(VENV)/bin/python -m pytest -q

live-demo: venv debs
	$(VENV)/bin/trimtab up --out reports/live

validate: venv
	$(VENV)/bin/trimtab sim validate

bench: venv debs
	$(PY) bench/run.py

venv: $(STAMP)

# Reinstall only when the project's metadata changes.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; trimtab needs Python 3.11" >&2; exit 1; }
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev,ray]'
	@touch $(STAMP)

# Debian packages the tests drive for real: promtool, prometheus, alertmanager, amtool, nginx.
debs:
	@missing=""; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v prometheus-alertmanager >/dev/null || missing="$$missing prometheus-alertmanager"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

clean:
	rm -rf $(VENV) reports .pytest_cache
