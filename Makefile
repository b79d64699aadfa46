# EAT Serve: one entry point for newcomers and CI.
#   make demo  - set up, run real (tiny, CPU) diffusion through the whole stack and write a report
#   make live  - set up, start the stack, replay a paper workload through it and print its table
#   make eval  - evaluate the schedulers on the simulator and print the paper's tables
#   make test  - set up, then lint, check the generated contracts and run every test (what CI runs)
#   make test-fast - lint, check the contracts, run the tests marked neither broker nor slow (no RabbitMQ),
#                    spread over the cores
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Two cores are shared by several processes: keep BLAS/torch thread pools small.
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: setup demo live eval test test-fast lint proto-check rabbitmq openssl clean

setup: $(STAMP) rabbitmq openssl

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

rabbitmq:
	@scripts/ensure_rabbitmq.sh

openssl:
	@scripts/ensure_openssl.sh

demo: setup
	$(BIN)/eat demo --out out/demo

live: setup
	$(BIN)/eat up --workload paper --rate 0.05 --json out/live/live.json

eval: setup
	$(BIN)/eat eval --nodes 4 --rates 0.01 0.03 0.05 0.07 0.09 --policies random fifo greedy reuse \
		--seeds 5 --json out/eval/eval.json --csv out/eval/eval.csv --plots out/eval

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

proto-check: $(STAMP)
	$(BIN)/python scripts/gen_proto.py --check

test: setup lint proto-check
	$(BIN)/python -m pytest -q

test-fast: lint proto-check
	$(BIN)/python -m pytest -q -m "not broker and not slow" -n auto

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache .hypothesis
