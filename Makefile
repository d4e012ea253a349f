# bvae-kernels: the README's two quick-start commands are `make demo` and `make test`.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
OUT ?= demo-out

.PHONY: install deps demo test test-triton-interp bench bench-quick bench-chain perf-readme gpu-check lint aot nvcc-check

# torch first (the CPU build from the local file on the project's machines), then the package, built in place.
deps:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install "torch==2.13.0"
	$(PIP) install -q numpy packaging tqdm ninja pytest pytest-benchmark pytest-timeout ruff matplotlib scikit-learn torchmetrics
	$(PYTHON) -c "import triton" 2>/dev/null || $(PIP) install -q "triton==3.9.0" \
	  || echo "triton not installed: the triton backend and its tests are skipped"

install: deps
	$(PIP) install --no-build-isolation --no-deps -e .

demo: install
	$(PYTHON) -m bvae demo --out $(OUT)

# Two runs. The first: everything, every backend this machine has (cpu here). The second: the op tests once
# more for the triton backend alone, in Triton's interpreter on CPU tensors (TRITON_INTERPRET=1 must be set
# before triton defines the kernels, so it is its own process).
OP_TESTS = tests/test_gnova.py tests/test_bi_conv2d.py tests/test_bi_conv2d_reverse.py tests/test_bi_linear.py \
	tests/test_bi_linear_reverse.py tests/test_op_contract.py tests/test_triton_kernels.py tests/test_triton_limits.py tests/test_chaining.py \
	tests/test_func_transforms.py tests/test_op_edges.py tests/test_conv_geometry.py
test: install
	$(PYTHON) -m pytest -q -ra
	$(MAKE) --no-print-directory test-triton-interp PYTHON="$(PYTHON)"

test-triton-interp:
	TRITON_INTERPRET=1 BVAE_TEST_BACKENDS=triton $(PYTHON) -m pytest -q -ra -p no:cacheprovider $(OP_TESTS)

lint:
	ruff check .
	ruff format --check .

# Benchmarks are not part of `make test`.
bench: install
	$(PYTHON) -m pytest benchmarks --benchmark-only --benchmark-group-by=group --benchmark-sort=name \
	  --benchmark-columns=median,iqr,min,rounds -p no:cacheprovider

bench-quick:
	BVAE_BENCH_QUICK=1 $(MAKE) bench

# The Foundation issue's key measurement: cpu backend vs the eager reference, conv then reverse conv.
bench-chain: install
	$(PYTHON) -m bvae bench --device cpu --cases bi_conv2d_chain --rounds 3 --reps 30 --threads 2 \
	  --out benchmarks/results/cpu-chain-2threads

perf-readme:
	$(PYTHON) scripts/render_perf.py --write

nvcc-check:
	bash .ci/nvcc_check.sh

aot:
	$(PYTHON) -m bvae_kernels.triton.aot --arch 80 90

# On a GPU machine (no network needed): ONE command inside a time budget (default 450 s); results under $$OUT.
# GPU_CHECK_ARGS: e.g. --budget 300, --only smoke, --dry-run (the plan and compile estimate, on any machine).
gpu-check:
	$(PYTHON) scripts/gpu_check.py $(GPU_CHECK_ARGS)
