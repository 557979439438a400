# teg.istio: every entry point. `make demo` and `make test` do all set-up on a fresh machine that has
# Python 3.11, Go and git (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help

MATRIX ?= current
# The controller's Python: the newest python3.12+ on PATH (ansible-core 2.20+ needs 3.12), else Debian 12's
# python3.11. requirements-dev.txt picks the ansible bundle for it. `make python` builds a Python 3.13 into the
# cache on a machine without one: `make venv PYTHON=$$(tools/python.sh --print)` (after removing .venv) uses it.
# A candidate counts only if it runs (a pyenv shim of a version not selected is on PATH but fails).
PYTHON ?= $(or $(shell for p in python3.14 python3.13 python3.12; do \
  $$p -c '' 2>/dev/null && { command -v $$p; break; }; done),python3.11)
VENV := .venv
BIN := $(VENV)/bin
LOCALCP := $(BIN)/python tests/localcp/localcp.py
COLLECTION_LINK := .ansible/collections/ansible_collections/teg/istio
SITE_VARS := tests/localcp/site-vars.yml
# The local cluster's kubeconfig, and the built kubectl/helm first on PATH.
CLUSTER_ENV = eval "$$($(LOCALCP) env)"

.PHONY: help venv python cluster-up cluster-down cluster-env site teardown demo test unit units integration lint bench molecule molecule-kind molecule-kind-ambient clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(BIN)/ansible-playbook: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(COLLECTION_LINK):
	mkdir -p $(dir $@)
	ln -sfn ../../../.. $@

venv: $(BIN)/ansible-playbook $(COLLECTION_LINK)  ## the project virtualenv (.venv) and the collection link

python:  ## build CPython 3.13 once into the cache (tools/python.sh) from Debian 13's source package; prints its path
	tools/python.sh

cluster-up: venv  ## start the local control plane (MATRIX=current|legacy), idempotent
	$(LOCALCP) up --matrix $(MATRIX)

cluster-down: venv  ## stop every process of the local control plane and remove its state
	$(LOCALCP) down

cluster-env: venv  ## print export lines for the local cluster (eval "$(make -s cluster-env)")
	@$(LOCALCP) env

site: venv  ## run playbooks/site.yml against the local cluster
	@$(CLUSTER_ENV) && $(BIN)/ansible-playbook playbooks/site.yml -e @$(SITE_VARS) $(ARGS)

teardown: venv  ## run playbooks/teardown.yml against the local cluster
	@$(CLUSTER_ENV) && $(BIN)/ansible-playbook playbooks/teardown.yml -e @$(SITE_VARS) $(ARGS)

demo: venv  ## cluster-up, site.yml, a summary of what changed; KEEP=1 leaves the cluster running
	$(BIN)/python tests/localcp/demo.py --matrix $(MATRIX) $(if $(KEEP),--keep)

unit: venv  ## unit tests (pure logic), plain pytest in the repository: the quick loop
	$(BIN)/python -m pytest -q tests/unit

units: venv  ## the same unit tests under ansible-test units, in an ansible_collections tree (offline)
	tests/lint/collection-tree.sh units

integration: venv  ## integration tests against a fresh local control plane, one flavour (MATRIX)
	MATRIX=$(MATRIX) $(BIN)/python -m pytest -q tests/integration

lint: venv  ## static checks: yamllint, ansible-lint (production), changelog, argument specs, docs (ansible-doc, antsibull-docs), ansible-test sanity
	tests/lint/lint.sh

test: venv lint units  ## everything CI runs: lint, unit tests, then in parallel per flavour integration tests and molecule, the ansible-core matrix and the traffic simulation
	rm -f $(MATRIX_RESULTS)
	$(MAKE) --no-print-directory -j3 --output-sync=target ci-current ci-legacy-then-matrix simulate
	$(BIN)/python tests/matrix/matrix.py report --results $(MATRIX_RESULTS) --junit $(CURDIR)/tests/output/junit-current.xml

# The ansible-core matrix in make test: the current lane runs the matrix's selection on .venv's ansible-core among
# its tests (its JUnit XML says how it went), so the matrix runs only the other combinations, on a cluster of its
# own once the legacy lane (the shorter one) is done, and `report` prints every line and the count at the end.
# The release candidate's report-only line runs in `make matrix` only (about 4 minutes that make test's budget has not).
MATRIX_RESULTS := tests/output/matrix/results.json
MATRIX_IN_TEST ?= 2.19 2.20 2.21
.PHONY: ci-legacy-then-matrix
ci-legacy-then-matrix: ci-legacy
	$(BIN)/python tests/matrix/matrix.py run --skip-own --only $(MATRIX_IN_TEST) --results $(MATRIX_RESULTS)

# One lane per flavour: the integration tests, then the molecule localcp scenario, each on its own cluster.
ci-%: venv
	$(MAKE) --no-print-directory integration-$*
	$(MAKE) --no-print-directory molecule-localcp-$*

# One cluster per flavour, each in its own state directory: the two run side by side.
integration-%: venv
	mkdir -p tests/output
	MATRIX=$* $(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 --basetemp=$(CURDIR)/tests/output/pytest-$* \
	  --junitxml=$(CURDIR)/tests/output/junit-$*.xml tests/integration

# The real Envoy Gateway controller and istiod (docs/real-controllers.md): not part of `make test`, since a
# cold build of both takes long; `make demo CONTROLLERS=real` runs them too (localcp.py reads CONTROLLERS).
.PHONY: integration-real controllers-build
integration-real: venv controllers-build  ## site.yml with the real Envoy Gateway controller and istiod (MATRIX=current), then on an owners' mesh of revision stable; builds them once
	mkdir -p tests/output
	CONTROLLERS=real MATRIX=$(MATRIX) $(BIN)/python -m pytest -q -p no:cacheprovider \
	  --basetemp=$(CURDIR)/tests/output/pytest-real-$(MATRIX) tests/integration_real
	CONTROLLERS=real MATRIX=$(MATRIX) TEG_ISTIO_REAL_REVISION=stable $(BIN)/python -m pytest -q -p no:cacheprovider \
	  --basetemp=$(CURDIR)/tests/output/pytest-real-revision-$(MATRIX) tests/integration_real/test_existing_revision.py

controllers-build:  ## build the real Envoy Gateway controller and istiod into the build cache (current flavour)
	tests/localcp/build.sh --controllers

# The traffic proof without Envoy (docs/traffic-simulation.md): site.yml on a fresh local control plane in both routing
# modes, then the Go suite walks the request through the configuration Envoy Gateway and istiod generate. With
# CONTROLLERS=real it also asks the running controllers (one real cluster per machine: the flock). UPDATE=1 rewrites
# docs/traffic-hops.md from the run instead of checking it.
.PHONY: simulate simulate-build
simulate: venv  ## traffic proof: every hop of the request through the generated xDS, both routing modes, with ablations (CONTROLLERS=real, UPDATE=1)
	$(if $(filter real,$(CONTROLLERS)),flock /tmp/teg-istio-real.lock )$(BIN)/python tests/simulate/run.py \
	  --controllers $(or $(CONTROLLERS),stand-in) $(if $(UPDATE),--update-docs)

simulate-build: venv  ## only build the traffic suite into the build cache (a CI step before simulate)
	$(BIN)/python tests/simulate/run.py build

# Alone, every combination on one cluster (make test runs it as ci-legacy-then-matrix above). The first run builds a
# Python 3.13 (tools/python.sh) and a virtualenv per ansible-core version, cached.
.PHONY: matrix
matrix: venv  ## site.yml end to end and the in-process parity per ansible-core 2.19/2.20/2.21 (+2.22rc1, report only) on one cluster
	mkdir -p tests/output
	$(BIN)/python tests/matrix/matrix.py $(if $(ONLY),--only $(ONLY))

bench: venv  ## medians of the manual procedure vs site.yml vs a no-op rerun vs expose_app at 1/10/100 apps vs site.yml on three clusters in one run
	$(BIN)/python tests/bench/bench.py --matrix $(MATRIX)

molecule: molecule-localcp-$(MATRIX)  ## molecule scenario localcp (MATRIX=current|legacy): check, converge, idempotence, verify

# One flavour of the localcp scenario. Its cluster state (LOCALCP_DIR) and molecule's working directory
# are per flavour under $(MOLECULE_STATE)-<flavour>, so both flavours run side by side. MOLECULE_GLOB
# points molecule at molecule/ (it looks in extensions/molecule/ when it finds galaxy.yml); the Istio
# version of the flavour comes from localcp.py's matrix, as `localcp.py env` would print it.
MOLECULE_STATE ?= $(CURDIR)/tests/output/molecule
molecule-localcp-%: venv
	mkdir -p $(MOLECULE_STATE)-$*
	MATRIX=$* LOCALCP_DIR=$(MOLECULE_STATE)-$*/localcp MOLECULE_EPHEMERAL_DIRECTORY=$(MOLECULE_STATE)-$*/ephemeral \
	  TEG_ISTIO_TEST_ISTIO_VERSION=$$($(BIN)/python -c 'import sys; sys.path.insert(0, "tests/localcp"); import localcp; \
	    print(localcp.MATRIX[sys.argv[1]]["istio"].removeprefix("istio-"))' $*) \
	  PATH=$(CURDIR)/$(BIN):$$PATH MOLECULE_GLOB='molecule/*/molecule.yml' $(BIN)/molecule test -s localcp

molecule-kind: venv  ## molecule scenario kind: needs Docker, kind and internet (not runnable on this project's machines)
	PATH=$(CURDIR)/$(BIN):$$PATH MOLECULE_GLOB='molecule/*/molecule.yml' $(BIN)/molecule test -s kind

molecule-kind-ambient: venv  ## molecule scenario kind-ambient: kind in Istio's ambient mode; needs Docker, kind and internet
	PATH=$(CURDIR)/$(BIN):$$PATH MOLECULE_GLOB='molecule/*/molecule.yml' $(BIN)/molecule test -s kind-ambient

clean: cluster-down  ## remove the virtualenv and local state (build cache stays: see docs)
	rm -rf $(VENV) .ansible tests/output
