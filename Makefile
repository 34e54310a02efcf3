# Two commands from a fresh clone: `make demo` (the Shallow-π story on the bundled teacher, ~5 min on a
# 2-core CPU) and `make test` (lint + the default test run, what CI runs). Both install into a local
# virtualenv (.venv) the first time and reuse it afterwards; it is rebuilt when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= sim,plot,dev,export
# Headless MuJoCo rendering: EGL unless the user chose a backend (mujoco reads it once, at its first import).
export MUJOCO_GL ?= egl

.PHONY: demo test setup clean-venv

setup: $(VENV)/.installed

# A machine without a GPU takes torch 2.13.0's CPU wheel first, so that pyproject's range installs nothing
# more; on a CUDA machine pip picks the registry's CUDA build (or point VENV at an env with your own torch).
$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if ! command -v nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/python -m pip install -q --disable-pip-version-check "torch==2.13.0"; fi
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[$(EXTRAS)]"
	@touch $@

demo: setup
	$(BIN)/shallowpi demo $(ARGS)

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -p no:cacheprovider $(ARGS)

clean-venv:
	rm -rf $(VENV)
