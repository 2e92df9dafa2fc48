# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv on first use; torch is pinned to the CPU build 2.13.0 and installed first,
# because a bare range would pull a multi-GB CUDA build.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgedeploy-installed

.PHONY: install demo test check clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,report]"  # dev includes report; named so `make demo` plainly has it
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/edgedeploy demo

test: $(STAMP)
	$(PY) -m pytest -q

check: $(STAMP)
	$(VENV)/bin/ruff check edgedeploy calibration tests benchmarks
	$(VENV)/bin/ruff format --check edgedeploy calibration tests benchmarks
	$(VENV)/bin/mypy
	@if [ -f tools/trt_stubs/check.sh ]; then PATH="$(abspath $(VENV))/bin:$$PATH" bash tools/trt_stubs/check.sh; fi
	@if command -v shellcheck >/dev/null; then cd edgedeploy/device && shellcheck -x *.sh; else echo "shellcheck not installed: skipped"; fi

clean:
	rm -rf $(VENV) edgedeploy-demo .mypy_cache .ruff_cache .pytest_cache
