# Two entry points: `make demo` and `make test`. Each creates or reuses .venv and installs the pinned set.
# --no-cache-dir: the venv is ~6 GB (x86_64 torch is a CUDA build); a wheel cache would add ~3 GB more on a
# CI machine that installs once and never reuses it (a CI run failed once with 'No space left on device').
VENV   ?= .venv
PY     := $(VENV)/bin/python
EDGEFT := $(VENV)/bin/edgeft
STAMP  := $(VENV)/.installed-stamp
DATA   ?= data/elpv
RUNS   ?= runs

.PHONY: setup demo test test-all clean

# The detection demo's images and boxes ship in the deepforest wheel: its files only (--no-deps; its training stack
# is never imported).
$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --no-cache-dir --disable-pip-version-check -c requirements/constraints.txt -e '.[train,onnx,runtime,openvino,prune,lora,detect,station,opcua,history,track,demo,dev]'
	$(PY) -m pip install -q --no-cache-dir --disable-pip-version-check --no-deps -c requirements/constraints.txt deepforest
	touch $(STAMP)

setup: $(STAMP)

# The demo: real ImageNet EfficientNet-Lite0 fine-tuned on real ELPV solar-cell images, pruned, INT8, benchmarked
# and gated, on the CPU (the recipe builds data/elpv from the elpv-dataset package when it is missing). A rerun
# reuses the stages that finished. Exit 1 means the run finished and a gate failed: the report says which.
demo: $(STAMP)
	$(EDGEFT) optimize examples/elpv.yaml --out $(RUNS)/elpv --resume \
	  || { s=$$?; [ $$s -ne 1 ] || echo "a gate failed; see $(RUNS)/elpv/report.md"; exit $$s; }

# The test suite (what CI runs): unit tests on tiny models plus a few end-to-end tests on the real model.
test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(RUNS) $(DATA) .pytest_cache
