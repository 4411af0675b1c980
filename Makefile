# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   := data/fashion-scenes
FMNIST := /usr/share/datasets/fashion-mnist

# glibc's allocator returns freed tensors to the OS and takes them back each step; these settings made
# training 1.3-2.4x faster on 2-core machines. Nothing here may reach a model hub.
export GLIBC_TUNABLES := glibc.malloc.mmap_threshold=1000000000:glibc.malloc.trim_threshold=100000000000
export HF_HUB_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: demo demo-instance test lint bench bench-instance bench-memory fashion-mnist chromium clean

$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,demo]'
	touch $@

# Fashion-MNIST comes from Debian's package; elsewhere point BUDGETSEG_FASHION_MNIST at the IDX files.
fashion-mnist:
	@if [ -z "$$BUDGETSEG_FASHION_MNIST" ] && [ ! -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	  else echo "Fashion-MNIST not found: set BUDGETSEG_FASHION_MNIST to a folder with its IDX .gz files"; fi; \
	fi

# Debian's Chromium renders the review page (export --to html) in tests/test_export_html.py, headless.
chromium:
	@if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; \
	fi

$(DATA)/fashion_scenes.json: | $(BIN)/.installed fashion-mnist
	$(BIN)/budgetseg data fashion-scenes --out $(DATA)

# The semantic pipeline at N=200 on the built-in data (about 9 minutes on 2 cores); running it again
# resumes or re-reports the finished run.
demo: $(BIN)/.installed fashion-mnist $(DATA)/fashion_scenes.json
	$(BIN)/budgetseg cost --format voc --root $(DATA) --split train
	$(BIN)/budgetseg run configs/fashion_semantic.yaml --out runs/demo --resume

# The instance pipeline (RSIS) at N=200 on the built-in data (about 17 minutes on 2 cores; half that with
# configs/fashion_instance_short.yaml, whose pseudo-labels do not pay).
demo-instance: $(BIN)/.installed fashion-mnist $(DATA)/fashion_scenes.json
	$(BIN)/budgetseg run configs/fashion_instance.yaml --out runs/demo-instance --resume

test: $(BIN)/.installed fashion-mnist chromium
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed fashion-mnist $(DATA)/fashion_scenes.json
	$(BIN)/python benchmarks/throughput.py --root $(DATA)

bench-instance: $(BIN)/.installed fashion-mnist $(DATA)/fashion_scenes.json
	$(BIN)/python benchmarks/throughput.py --root $(DATA) --task instance

# Peak memory of a run on a pool of 2,000 and of 8,000 images (a few minutes on 2 cores).
bench-memory: $(BIN)/.installed fashion-mnist $(DATA)/fashion_scenes.json
	$(BIN)/python benchmarks/memory.py --root $(DATA)

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) data runs
