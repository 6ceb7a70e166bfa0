# modhub: `make run` serves on http://127.0.0.1:4000, `make test` runs every check.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install run lint typecheck test bench schema clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "uv>=0.5"
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

run: install
	$(BIN)/modhub serve --examples examples/modules

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -n 2 --dist loadfile -q

bench: install
	$(BIN)/python bench/validate.py

schema: install
	$(BIN)/python -c "from modhub.manifest.schema import render_schema; print(render_schema(), end='')" \
		> src/modhub/manifest/module.schema.json

clean:
	rm -rf $(VENV) .modhub .pytest_cache .mypy_cache .ruff_cache
