# Two commands for a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
# Service environments built by `make install` (the nvidia and amd ones are built in their images: CUDA/ROCm torch).
SERVICE_VENVS := services/cpu/.venv services/tpu/.venv services/intel/.venv
BUF := npx -y @bufbuild/buf@1.75.0
PIP_QUIET ?= -q
# tpu and intel run PyPI's CUDA builds of torch 2.9.0 and 2.8.0: about 4.3 GB of NVIDIA libraries each, nearly
# all the same releases. uv installs those two environments from one cache, hard-linked, so the shared libraries
# are on disk once (both environments: about 10 GB, against 15 GB plus pip's download cache). The cache lives in
# .venv so that it is on the same filesystem as the environments and goes with `make clean`. uv reads the system's
# certificate store, as pip does (a proxy's own CA, where the registry is reached through one).
UV := $(VENV)/bin/uv
UV_ENV := UV_CACHE_DIR=$(CURDIR)/$(VENV)/uv-cache UV_LINK_MODE=hardlink UV_PYTHON_DOWNLOADS=never UV_SYSTEM_CERTS=1
UV_VENVS := services/tpu/.venv services/intel/.venv

.PHONY: install system-deps demo test test-fast lint check-protos protos bench-cpu bench-bus down clean screenshot

# The development/test environment: contract tools, test runner, and the cpu stack for unit tests.
$(VENV)/.done: requirements-dev.txt services/cpu/requirements.txt shared/pyproject.toml gateway/pyproject.toml services/*/pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_QUIET) --no-cache-dir -r requirements-dev.txt -r services/cpu/requirements.txt -e shared -e gateway -e services/cpu
	# the GPU services' code (no CUDA torch here): their no-GPU behaviour is tested from this environment
	$(VENV)/bin/pip install $(PIP_QUIET) --no-deps -e services/nvidia -e services/amd
	touch $@

# Each service runs from its own environment (their torch pins conflict across services: cpu torch 2.13,
# tpu torch 2.9 + torch_xla 2.9, intel torch 2.8 + IPEX 2.8).
services/cpu/.venv/.done: services/cpu/requirements.txt shared/pyproject.toml services/cpu/pyproject.toml
	$(PY) -m venv services/cpu/.venv
	services/cpu/.venv/bin/pip install $(PIP_QUIET) --no-cache-dir -r services/cpu/requirements.txt -e shared -e services/cpu
	touch $@

$(addsuffix /.done,$(UV_VENVS)): services/%/.venv/.done: services/%/requirements.txt shared/pyproject.toml services/%/pyproject.toml | $(VENV)/.done
	$(UV_ENV) $(UV) venv -q --allow-existing --python "$$(command -v $(PY))" services/$*/.venv
	$(UV_ENV) $(UV) pip install -q --python services/$*/.venv/bin/python -r services/$*/requirements.txt -e shared -e services/$*
	touch $@

install: $(VENV)/.done $(addsuffix /.done,$(SERVICE_VENVS))

# Debian's Chromium for the browser test (tests/browser drives /usr/bin/chromium with playwright).
system-deps:
	scripts/system_deps.sh

protos: $(VENV)/.done
	PYTHON=$(VENV)/bin/python scripts/gen_protos.sh

# CI regenerates the contract code and fails on any difference; buf lints the protos.
check-protos: protos
	@test -z "$$(git status --porcelain -- shared/kpt/v1)" || { git status --porcelain -- shared/kpt/v1; echo "generated contract code is stale: run 'make protos' and commit"; exit 1; }
	cd protos && $(BUF) lint

lint: $(VENV)/.done
	$(VENV)/bin/ruff check .

# The suite in TEST_WORKERS processes (pytest-xdist; a test file's tests stay in one, with its module fixtures), then
# the schemathesis file alone: its operations' tests share one node id, which xdist's scheduler keeps once.
TEST_WORKERS ?= 2
test: install system-deps check-protos lint
	$(VENV)/bin/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --ignore=tests/http/test_schemathesis.py
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/http/test_schemathesis.py

demo: $(VENV)/.done services/cpu/.venv/.done  # the CPU path only: no need for the tpu/intel stacks
	$(VENV)/bin/kpt down >/dev/null 2>&1 || true
	$(VENV)/bin/kpt up --targets cpu
	$(VENV)/bin/python examples/make_example.py examples/cnn.pt2
	$(VENV)/bin/kpt optimize examples/cnn.pt2 --target cpu --level O3 --input x:float32:1x3x64x64 --out examples/out
	@echo "The mesh is still up: try 'kpt targets', 'kpt jobs', 'kpt benchmark bert-base -t cpu'; stop it with 'kpt down'."

down:
	$(VENV)/bin/kpt down

# Re-take docs/web-result.png (the README's picture of the result page) from a real job.
screenshot: install system-deps
	KPT_UPDATE_SCREENSHOT=1 $(VENV)/bin/pytest -q -p no:cacheprovider tests/browser

bench-cpu: install
	$(VENV)/bin/python bench/cpu_models.py

bench-bus: install
	$(VENV)/bin/python bench/bus_blobs.py

clean:
	rm -rf $(VENV) $(SERVICE_VENVS) .kpt
