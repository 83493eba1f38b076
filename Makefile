# Two commands on a fresh machine:  make up   (install + start with demo data)
#                                   make test (install everything the tests need + run them)
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PORT ?= 8080
# What the VRE itself needs on the host: bubblewrap builds every step's sandbox.
RUNTIME_DEBS := bubblewrap
# Debian packages the tests start as real servers (XRootD) or use as clients.
DEBS := $(RUNTIME_DEBS) xrootd-server xrootd-client nginx libnginx-mod-http-dav-ext openssl podman runc busybox-static
PG_CLUSTER = $(shell ls /etc/postgresql 2>/dev/null | head -n1)

.PHONY: up install clients test lint runtime-deps system-deps postgres bench clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.installed: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

install: $(VENV)/.installed

# The real third-party clients, in their own venv: their pins would downgrade ours.
CLIENTS := .venv-clients
$(CLIENTS)/.installed: $(UV)
	$(UV) venv -q --allow-existing $(CLIENTS) --python $(PYTHON)
	$(UV) pip install -q --python $(CLIENTS)/bin/python "reana-client==0.9.6" "rucio-clients==41.5.1"
	touch $@

# A real Rucio server (the tests' external Rucio instance), in its own venv too.
RUCIO_SERVER := .venv-rucio-server
$(RUCIO_SERVER)/.installed: $(UV)
	$(UV) venv -q --allow-existing $(RUCIO_SERVER) --python $(PYTHON)
	$(UV) pip install -q --python $(RUCIO_SERVER)/bin/python "rucio==41.5.1" "gunicorn==27.0.1" "psycopg[binary]==3.3.9"
	touch $@

clients: $(CLIENTS)/.installed $(RUCIO_SERVER)/.installed

up: install runtime-deps
	$(VENV)/bin/vre up --demo --port $(PORT)

runtime-deps:
	@$(MAKE) --no-print-directory system-deps DEBS="$(RUNTIME_DEBS)"

system-deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

postgres:
	@pg_isready -h 127.0.0.1 -p 5432 -q || \
	  { echo "starting PostgreSQL $(PG_CLUSTER)"; pg_ctlcluster --skip-systemctl-redirect $(PG_CLUSTER) main start; \
	    for i in $$(seq 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done; }

lint: install
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples
	$(VENV)/bin/mypy

test: install clients system-deps postgres lint
	$(VENV)/bin/pytest -q

bench: install system-deps postgres
	$(VENV)/bin/python bench/catalogue.py
	$(VENV)/bin/python bench/upload.py
	$(VENV)/bin/python bench/transfers.py
	$(VENV)/bin/python bench/workflows.py
	$(VENV)/bin/python bench/containers.py
	$(VENV)/bin/python bench/isolation.py

clean:
	rm -rf $(VENV) $(CLIENTS) $(TOOLS) .pytest_cache .ruff_cache
