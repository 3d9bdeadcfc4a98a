# Common commands. `make demo` and `make test` each create or reuse .venv and install what they need.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv demo test lint format bench fidelity clean

venv:
	@bash scripts/venv.sh

demo: venv
	$(BIN)/wm-video demo --out demo_out

test: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check .

format: venv
	$(BIN)/ruff format .

fidelity: venv   # the fidelity suite: a world model per suite simulator, scored on held-out episodes (~15 min each)
	MUJOCO_GL=$${MUJOCO_GL:-egl} $(BIN)/python eval/fidelity/run.py --out runs/fidelity

bench: venv
	$(BIN)/python eval/benchmarks/bench_collect.py
	$(BIN)/python eval/benchmarks/bench_loader.py

clean:
	rm -rf demo_out runs .pytest_cache .ruff_cache
