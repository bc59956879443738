# The two commands of the README: `make demo` and `make test`. Both create .venv on first use and reuse it after
# (the stamp file is newer than pyproject.toml and constraints.txt), so a second run starts in seconds.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test venv venv-test debs proto bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, from the pinned CPU build; deepspeed's sdist imports torch at build time, so it is built
	# against the torch already in the venv instead of an isolated (and much larger) one.
	$(PIP) install -q -c constraints.txt torch
	$(PIP) install -q -c constraints.txt --no-build-isolation deepspeed
	$(PIP) install -q -c constraints.txt -e .
	touch $@

$(TEST_STAMP): $(STAMP)
	$(PIP) install -q -c constraints.txt -e '.[test]'
	touch $@

venv: $(STAMP)
venv-test: $(TEST_STAMP)

# Debian packages the tests start for real (sandbox, monitoring); installed only where missing.
debs:
	bash scripts/ensure-debs.sh

demo: $(STAMP)
	bash scripts/ensure-debs.sh bwrap:bubblewrap  # the sandbox, for a code stage (ring-async demo --code-steps N)
	$(VENV)/bin/ring-async demo

test: $(TEST_STAMP) debs
	$(PY) -m pytest $(PYTEST_ARGS)

proto: $(TEST_STAMP)
	$(PY) -m ring_async.protogen

bench: $(STAMP)
	$(VENV)/bin/ring-async bench broker --json

clean:
	rm -rf $(VENV) .pytest_cache
