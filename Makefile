# modhub: `make run` serves on http://127.0.0.1:4000, `make test` runs every check.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install system-deps run lint typecheck test bench schema screenshots clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "uv>=0.5"
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

# esbuild (pinned in tools/node/package-lock.json) compiles modules' TypeScript at install.
NODE_TOOLS := tools/node/node_modules/.package-lock.json
$(NODE_TOOLS): tools/node/package-lock.json
	@if command -v npm >/dev/null 2>&1; then cd tools/node && npm ci --ignore-scripts --no-audit --no-fund --silent; \
	else echo "note: npm is not installed; TypeScript modules cannot be installed"; fi

# Bytecode: uv (unlike pip) compiles none at install, and where PYTHONDONTWRITEBYTECODE is
# set (CI machines) no Python process writes any, so each one (a server, a worker, a CLI
# call: hundreds in `make test`) compiled every module it imported from source. The
# dependencies are compiled at install (--compile-bytecode), our own code here.
install: $(STAMP) $(NODE_TOOLS)
	@$(BIN)/python -m compileall -q src > /dev/null

# bubblewrap gives module workers their own namespaces (tests cover that, not only the
# rlimits fallback); Debian's chromium runs the console's browser tests; HAProxy balances
# the cluster tests' nodes. Installed with apt-get where we are root and they are missing.
APT_PACKAGES := bwrap:bubblewrap chromium:chromium haproxy:haproxy
system-deps:
	@for pair in $(APT_PACKAGES); do \
		tool=$${pair%%:*}; package=$${pair##*:}; \
		if ! command -v $$tool >/dev/null 2>&1; then \
			if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
				apt-get install -y -qq $$package >/dev/null 2>&1 || \
				(apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $$package >/dev/null); \
			else echo "note: $$package is not installed (needs root); its tests will skip"; fi; \
		fi; \
	done

run: install
	$(BIN)/modhub serve --examples examples/modules

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

test: lint typecheck system-deps
	$(BIN)/pytest -n 2 --dist loadfile -q --durations=15

bench: install system-deps
	@for script in validate api lifecycle routes jobs services events cluster metrics typescript telemetry; do \
		if [ -f bench/$$script.py ]; then echo "== bench/$$script.py"; $(BIN)/python bench/$$script.py || exit 1; fi; \
	done

# Breaks the security- and correctness-critical code on purpose, one break at a time, in a
# copy of the tree, and checks a test catches each (mutation/breaks.py; docs/testing.md).
# Not part of `make test`: a few minutes.
.PHONY: mutation
mutation: install
	$(BIN)/python mutation/run.py

screenshots: install system-deps
	MODHUB_SCREENSHOTS=1 $(BIN)/pytest tests/web -q

schema: install
	$(BIN)/python -c "from modhub.manifest.schema import render_schema; print(render_schema(), end='')" \
		> src/modhub/manifest/module.schema.json

clean:
	rm -rf $(VENV) .modhub .pytest_cache .mypy_cache .ruff_cache
