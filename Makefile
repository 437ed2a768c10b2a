# Every target bootstraps .venv when it is missing, so a fresh clone needs only
# Python 3.11+ and a C/C++ compiler.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BUILD_INPUTS := setup.py pyproject.toml $(wildcard core/*.pyx core/*.pxd core/*.pxi switch/*.pyx proto/fuelswitch/v1/*.proto)

.PHONY: all install protos test demo bench lint clean

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel

# Rebuild (Cython core + generated protos) whenever a build input changes.
$(STAMP): $(BIN)/python $(BUILD_INPUTS)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# After editing a .proto or .pyx: regenerate the protos and rebuild changed extensions in place
# (quicker than a reinstall).
protos: $(STAMP)
	$(BIN)/python setup.py -q build_ext --inplace

test: $(STAMP)
	$(BIN)/python -m pytest -q tests --ignore=tests/bench

demo: $(STAMP)
	$(BIN)/fuelswitch demo

bench: $(STAMP)
	$(BIN)/python -m pytest -q tests/bench --benchmark-columns=min,median,mean,ops,rounds --benchmark-sort=name -p no:randomly

lint: $(STAMP)
	$(BIN)/ruff check core switch ext loadtest tests setup.py
	$(BIN)/mypy core switch ext loadtest

clean:
	rm -rf build *.egg-info core/*.cpp core/*.so proto/fuelswitch/v1/*_pb2*.py proto/fuelswitch/v1/*_pb2*.pyi
