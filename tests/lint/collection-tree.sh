#!/usr/bin/env bash
# Checks that need the collection in an ansible_collections tree, offline:
#   tests/lint/collection-tree.sh sanity|units [ansible-test options]   ansible-test sanity / units
#   tests/lint/collection-tree.sh docs                                  antsibull-docs lint-collection-docs
# Both tools want the collection at <root>/ansible_collections/teg/istio with its dependencies in the same
# root: ansible-test sets ANSIBLE_COLLECTIONS_PATH to that root only, and antsibull-docs copies the
# dependencies with `git ls-files` when they sit in a git checkout (the virtualenv's kubernetes.core sits in
# ours, ignored, so it would copy nothing). So what git tracks plus new files it does not ignore is copied
# into a temporary tree beside a copy of the virtualenv's kubernetes.core. ansible-test's pip bootstrap
# (get-pip.py from a host we cannot reach) is served by a stand-in; it runs with --local: the
# virtualenv's own Python and packages, nothing installed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
venv="$repo/.venv"
command=${1:?usage: $0 sanity|units|docs [options]}
shift
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
cache="$HOME/.ansible/test/cache"
mkdir -p "$cache"
for v in 24_2 25_0 25_1 25_2 25_3; do
  cp "$repo/tests/lint/get_pip_stand_in.py" "$cache/get_pip_$v.py"
done
mkdir -p "$root/ansible_collections/teg/istio" "$root/ansible_collections/kubernetes"
# For sanity, the Helm templates of the test stand-in charts are left out: they are Go templates rather
# than YAML (helm lints them when the tests install them), and no Ansible content loads them. The unit
# tests render them. Files deleted or moved but not yet committed are still listed by git: only
# existing ones are copied.
exclude=()
[ "$command" = sanity ] && exclude=(':!tests/charts/*/templates/*')
(cd "$repo" && git ls-files -co --exclude-standard -z -- . "${exclude[@]}" \
  | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
  | xargs -0 cp --parents -t "$root/ansible_collections/teg/istio/")
cp -a "$venv/lib/python3.11/site-packages/ansible_collections/kubernetes/core" "$root/ansible_collections/kubernetes/"
case $command in
  sanity)
    set -- --local --python 3.11 --color no "$@" ;;
  units)
    # The unit tests that read the upstream CRDs get them from the launcher (localcp.crds_dir()). In the
    # copy, ansible-test passes on HOME but not TEG_ISTIO_CRDS_DIR (nor the other TEG_ISTIO_ variables), so the
    # launcher there uses its default folder ~/.cache/teg-istio/crds-gomod (localcp.crds_download_dir()): fill
    # that here, the files the Go modules do not give from the folder the launcher resolves here, each file
    # verified against crds.lock (fetch_crds reads a file:// mirror like any other).
    crds=$("$venv/bin/python" "$repo/tests/localcp/localcp.py" crds-dir)
    TEG_ISTIO_CRDS_BASE_URL="file://$crds" "$venv/bin/python" "$repo/tests/localcp/fetch_crds.py" \
      "$HOME/.cache/teg-istio/crds-gomod"
    set -- --local --python 3.11 --color no "$@" ;;
  docs) ;;
  *)
    echo "usage: $0 sanity|units|docs [options]" >&2
    exit 2 ;;
esac
cd "$root/ansible_collections/teg/istio"
git init -q . && git add -A >/dev/null
if [ "$command" = docs ]; then
  # Plugin docs (RST generation, schema, markup and references) and role argument specs.
  # Only that root: ansible-galaxy lists the virtualenv's site-packages collections too, in an order
  # that varies from run to run, and antsibull-docs copies kubernetes.core from the first path listed;
  # from site-packages (inside our git checkout, ignored) it would copy nothing.
  PATH="$venv/bin:$PATH" ANSIBLE_COLLECTIONS_PATH="$root" ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false \
    "$venv/bin/antsibull-docs" lint-collection-docs --plugin-docs "$@" .
else
  "$venv/bin/ansible-test" "$command" "$@"
fi
