# One entry point for developers and CI. Everything runs inside an isolated virtual
# environment (no system site packages) created on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Real firmware for the demo and the tests: Debian's ovmf package.
OVMF   := /usr/share/ovmf/OVMF.fd
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint typecheck unit bench clean

$(BIN)/cvmlaunch: pyproject.toml
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

$(OVMF):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq ovmf

demo: $(BIN)/cvmlaunch $(OVMF)
	$(BIN)/cvmlaunch measure
	$(BIN)/cvmlaunch launch

lint: $(BIN)/cvmlaunch
	$(BIN)/ruff check cvmlaunch tests examples benchmarks
	$(BIN)/ruff format --check cvmlaunch tests examples benchmarks

typecheck: $(BIN)/cvmlaunch
	$(BIN)/mypy cvmlaunch tests examples benchmarks

unit: $(BIN)/cvmlaunch $(OVMF)
	$(BIN)/pytest

test: lint typecheck unit

# Start-up is compared fairly only between regular (non-editable, byte-compiled) installs:
# both tools go into a separate venv.
bench: $(OVMF)
	$(PYTHON) -m venv --clear .venv-bench
	.venv-bench/bin/python -m pip install --quiet . sev-snp-measure==0.0.13 omne-attest==0.1.0 dcap-qvl==0.7.0
	.venv-bench/bin/python benchmarks/measure_vs_reference.py
	.venv-bench/bin/python benchmarks/mrtd_vs_sha384.py
	.venv-bench/bin/python benchmarks/authenticode_vs_sha384sum.py
	.venv-bench/bin/python benchmarks/launch_population.py
	.venv-bench/bin/python benchmarks/audit_throughput.py
	.venv-bench/bin/python benchmarks/matrix_vs_reference.py
	.venv-bench/bin/python benchmarks/eventlog_replay.py
	.venv-bench/bin/python benchmarks/publish_matrix.py
	.venv-bench/bin/python benchmarks/collateral_audit.py
	# igvm-tooling's side needs its source (IGVM_TOOLING=DIR/src, see the script's header).
	.venv-bench/bin/python benchmarks/igvm_measure.py $(if $(IGVM_TOOLING),--igvm-tooling $(IGVM_TOOLING))

clean:
	rm -rf $(VENV) .venv-bench .mypy_cache .pytest_cache .ruff_cache
