# Two commands from a fresh machine: `make run` (the main job) and `make test` (the tests).
.PHONY: install run test test-slow lint format bench

install:
	bash scripts/install.sh

run: install
	bash scripts/run.sh

test: install
	bash scripts/test.sh

test-slow: install
	bash scripts/test.sh -m slow

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: install
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

bench: install
	.venv/bin/python -m benchmarks.corpus --quick
