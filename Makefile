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

# Two passes: the tests that share the machine well run on two processes (one per core), then
# the real stacks, the browser and the end-to-end runs one at a time (marked `serial` by conftest).
# Both passes always run; the target fails if either did.
test: uv
	$(UV) sync --frozen
	$(UV) run pytest -n 2 --dist loadfile -m "not serial"; parallel=$$?; \
	$(UV) run pytest -m serial; serial=$$?; \
	test $$parallel -eq 0 && test $$serial -eq 0

bench: uv
	$(UV) sync --frozen
	@for f in bench/bench_*.py; do echo "## $$f"; $(UV) run python $$f || exit 1; done

lint: uv
	$(UV) run ruff check
	$(UV) run ruff format --check
