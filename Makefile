# `make demo`: set up .venv and run the main job on the embedded cohort.
# `make test`: set up .venv and run the test suite (what CI runs).
# `make ui` / `make dashboard`: the MLflow UI / optuna-dashboard on this project's stores (mlruns/).
# `make repro`: `dvc repro` with the venv on PATH (DVC runs each stage's `epiflow ...` from PATH).
# Every target works in a plain shell: nothing needs an activated venv.
.PHONY: setup demo test test-all ui dashboard repro
PORT ?= 5000
DASHBOARD_PORT ?= 8080
setup:
	@bash scripts/setup.sh
demo: setup
	.venv/bin/epiflow demo
test: setup
	.venv/bin/python -m pytest -q
test-all: setup
	.venv/bin/python -m pytest -q --runslow
ui: setup
	@.venv/bin/python scripts/serve.py mlflow --port $(PORT)
dashboard: setup
	@.venv/bin/python scripts/serve.py optuna --port $(DASHBOARD_PORT)
repro: setup
	PATH="$(CURDIR)/.venv/bin:$$PATH" .venv/bin/dvc repro
