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
	# Graphviz's dot draws the architecture diagrams (segzoo figures) and TeX Live compiles the paper (segzoo paper;
	# its packages, about 160 MB without recommendations, are named in segzoo.report.latex): installed with apt when
	# we are root, else the command to run is printed.
	@dot=""; command -v dot >/dev/null 2>&1 || dot="graphviz"; \
	tex=""; command -v latexmk >/dev/null 2>&1 || \
		tex="$$($(BIN)/python -c 'from segzoo.report.latex import APT_PACKAGES; print(APT_PACKAGES)')"; \
	if [ -z "$$dot$$tex" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && \
		if [ -n "$$dot" ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null; fi && \
		if [ -n "$$tex" ]; then echo "installing TeX Live for the paper: $$tex"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$tex >/dev/null; fi; \
	else \
		if [ -n "$$dot" ]; then echo "NOTE: Graphviz's dot is missing; segzoo figures needs it: sudo apt-get install graphviz" >&2; fi; \
		if [ -n "$$tex" ]; then echo "NOTE: TeX Live is missing; segzoo paper needs it for main.pdf: sudo apt-get install --no-install-recommends $$tex" >&2; fi; \
	fi
	@touch $@

# `make demo TRACKING=1` also logs every training, zoo and G.pt run to W&B (offline) and MLflow (a local store),
# both under results/tracking/, after installing the segzoo[tracking] extra.
TRACKING ?=
TRACKING_CONFIG := --config 'tracking={wandb: offline, mlflow: local}'
demo: $(STAMP)
	$(if $(TRACKING),$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[tracking]')
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES) --resources gpu=2 \
		$(if $(TRACKING),$(TRACKING_CONFIG))

# Two pytest-xdist workers, each taking whole test modules (their module fixtures are made once); most tests wait
# on subprocesses, so two workers keep both cores busy. pytest exits 5 when it collected no tests: not a failure.
PYTEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadscope --durations=25 $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

clean-results:
	rm -rf results .snakemake
