# Set-up and everyday commands. Every target installs what it needs into .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# A CPU build of torch by default; override e.g. TORCH="torch" for the CUDA build.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test lint photos bench-speed bench-ablation clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[dev,onnx,serve,train]"
	touch $(STAMP)

# Restore the bundled sample photos with the bundled weights; before|after images in outputs/demo.
demo: $(STAMP)
	$(VENV)/bin/smartassign restore samples/ -o outputs/demo --side-by-side --reference samples/clean --report outputs/demo/report.json --overwrite
	@echo "Restored images and side-by-side comparisons are in outputs/demo/"

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

# Debian wallpaper photographs used as clean training images (needs root for apt-get).
photos:
	bash scripts/install_photos.sh

# Speed and memory against Restormer (docs/PERFORMANCE.md); deepinv only for its Restormer, without its deps.
bench-speed: $(STAMP)
	$(PIP) install -q --no-deps "deepinv==0.5.0" einops
	$(PY) benchmarks/speed.py

# The ablation study (docs/RESULTS.md): about 1.6 h on two idle cores; resumable, rerun to continue.
bench-ablation: $(STAMP)
	$(PY) benchmarks/ablation.py

clean:
	rm -rf $(VENV) outputs runs .pytest_cache
