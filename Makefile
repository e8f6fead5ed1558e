# Two entry points: `make demo` and `make test`. Each creates or reuses .venv and installs the pinned set.
VENV   ?= .venv
PY     := $(VENV)/bin/python
EDGEFT := $(VENV)/bin/edgeft
STAMP  := $(VENV)/.installed-stamp
DATA   ?= data/elpv
RUNS   ?= runs

.PHONY: setup demo test test-all clean

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements/constraints.txt -e '.[train,onnx,prune,demo,dev]'
	touch $(STAMP)

setup: $(STAMP)

$(DATA)/split.csv: | $(STAMP)
	$(EDGEFT) data elpv $(DATA) --force

# The demo: real ImageNet EfficientNet-Lite0 fine-tuned on real ELPV solar-cell images, on the CPU.
demo: $(STAMP) $(DATA)/split.csv
	$(EDGEFT) finetune --config examples/elpv-finetune.yaml --data $(DATA) --out $(RUNS)/elpv-finetune --force

# The test suite (what CI runs): unit tests on tiny models plus a few end-to-end tests on the real model.
test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(RUNS) $(DATA) .pytest_cache
