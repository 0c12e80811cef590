# Two entry points for a newcomer: `make demo` and `make test`.
# Both create .venv when missing and install into it once; a second call reuses it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.segzoo-installed
CORES  ?= all

.PHONY: demo test install clean-results

install: $(STAMP)

# Reinstall only when the package definition or the pinned versions change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	# nnU-Net's network library without its dependencies: its unet.py needs none of timm/torchvision, and pip
	# would otherwise pull a CUDA torchvision that fails to import on CPU machines.
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt dynamic-network-architectures
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	@touch $@

demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES) --resources gpu=2

# Two pytest-xdist workers, each taking whole test modules (their module fixtures are made once); most tests wait
# on subprocesses, so two workers keep both cores busy. pytest exits 5 when it collected no tests: not a failure.
PYTEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadscope --durations=25 $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

clean-results:
	rm -rf results .snakemake
