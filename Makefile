# Entry points for people and CI. Every target runs inside the locked uv environment.

.PHONY: up down status test bench lint uv

# uv itself: the one on PATH, or the one `make uv` installs with pip (run as a module, since
# pip may put its script in a directory that is not on PATH).
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv

up: uv
	$(UV) sync --frozen
	$(UV) run selfserve up

down: uv
	$(UV) run selfserve down

status: uv
	$(UV) run selfserve status

# Three workers: one runs the real stacks, the browser and the end-to-end runs one at a time (the
# `serial` scope, see tests/conftest.py; much of it waits on servers), the other two take the rest a
# module at a time.
test: uv
	$(UV) sync --frozen
	$(UV) run pytest -n 3 --dist loadscope --no-loadscope-reorder

bench: uv
	$(UV) sync --frozen
	@for f in bench/bench_*.py; do echo "## $$f"; $(UV) run python $$f || exit 1; done

lint: uv
	$(UV) run ruff check
	$(UV) run ruff format --check
