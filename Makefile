# The course in two commands:
#   make lab    install everything and open the course in JupyterLab (prints the URL)
#   make test   install everything and run every test: pytest over tests/, then nbval over notebooks/
# Both start from nothing: a virtual environment in .venv, the pinned packages from constraints.txt,
# sodlib with its compiled extension, and the embedded dataset under data/.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PORT   ?= 8888

# CUDA kernels are compiled whenever nvcc is present (they only run on a GPU machine).
export CUDA_HOME ?= $(wildcard /usr/local/cuda)
export TORCH_CUDA_ARCH_LIST ?= 8.0;9.0
export MAX_JOBS ?= 2

EXT_SOURCES := $(shell find extensions -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' 2>/dev/null)
STAMP := $(VENV)/.sodlib-installed

.PHONY: install data lab lab-check test test-py test-notebooks bench clean

install: $(STAMP)

$(STAMP): constraints.txt pyproject.toml setup.py $(EXT_SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt --upgrade pip setuptools wheel
	$(PIP) install -q -c constraints.txt torch torchvision ninja
	$(PIP) install -q -c constraints.txt --no-build-isolation -e ".[course,test,slicing]"
	touch $@

data: install
	$(PY) -m sodlib data embedded
	$(PY) -m sodlib data embedded --tiny
	$(PY) -m sodlib data embedded --large

lab: data
	$(PY) scripts/lab.py --port $(PORT) $(if $(COPY),--copy $(COPY))

lab-check: data
	$(PY) scripts/lab.py --port $(PORT) --check

test: data test-py test-notebooks

test-py: install
	SODLIB_REQUIRE_EXT=1 MPLBACKEND=Agg $(PY) -m pytest -n 2 --dist loadscope tests

test-notebooks: data
	SODLIB_REQUIRE_EXT=1 SODLIB_FAST=1 $(PY) -m pytest -n 2 --dist loadscope --nbval-lax \
		--nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider notebooks

bench: install
	$(PY) -m sodlib bench all

clean:
	rm -rf build *.egg-info sodlib/_C*.so $(VENV)
