# `make demo`: set up .venv and run the main job on the embedded cohort.
# `make test`: set up .venv and run the test suite (what CI runs).
.PHONY: setup demo test test-all
setup:
	@bash scripts/setup.sh
demo: setup
	.venv/bin/epiflow demo
test: setup
	.venv/bin/python -m pytest -q
test-all: setup
	.venv/bin/python -m pytest -q --runslow
