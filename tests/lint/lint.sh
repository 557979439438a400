#!/usr/bin/env bash
# `make lint`: every static check, each named as it runs; the first failure stops it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
bin=.venv/bin
export PATH="$repo/.venv/bin:$PATH"
step() { printf '\n== lint: %s\n' "$*"; }

step yamllint
"$bin/yamllint" -s .
step "ansible-lint (production profile)"
ANSIBLE_COLLECTIONS_PATH="$repo/.ansible/collections" "$bin/ansible-lint" --offline --profile production -q
step "antsibull-changelog lint"
"$bin/antsibull-changelog" lint
step "tests get the upstream CRD folder from the launcher only (tests/localcp/localcp.py crds_dir)"
# Any other path to the folder beside the checkout would pass here and skip or fail on a clone without it.
if git ls-files -co --exclude-standard -- tests molecule .github Makefile ':!tests/lint/lint.sh' \
    | xargs -r grep -nE '\.\./shared|shared/crds|["'"'"']shared["'"'"']' /dev/null; then
  echo "lint: the lines above reach the CRD folder beside the checkout; use cluster.crds (integration tests) or" \
    "localcp.crds_dir() instead" >&2
  exit 1
fi
step "pins agree: versions.env, the Go modules, the role's default Istio (tests/lint/pins.py)"
"$bin/python" tests/lint/pins.py
step "role argument specs in sync with defaults"
"$bin/python" -m pytest -q -p no:cacheprovider tests/unit/test_argument_specs.py
step "actionlint (.github/workflows)"
"$("$repo/tests/localcp/build.sh" | tail -n 1)/actionlint" -color=false
step "docs/roles.md generated from the argument specs"
"$bin/python" tools/roles_doc.py --check
step "every module renders in ansible-doc with EXAMPLES and RETURN"
ANSIBLE_COLLECTIONS_PATH="$repo/.ansible/collections" "$bin/python" tests/lint/module_docs.py
step "antsibull-docs lint-collection-docs (plugin docs and role argument specs)"
tests/lint/collection-tree.sh docs
step "ansible-test sanity (offline)"
tests/lint/collection-tree.sh sanity
echo "lint: all checks passed"
