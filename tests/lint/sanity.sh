#!/usr/bin/env bash
# ansible-test sanity, offline: the collection is copied into an ansible_collections/teg/istio tree
# beside the kubernetes.core of the virtualenv (ansible-test only looks in the collection root), and
# ansible-test's pip bootstrap is served by a stand-in.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
venv="$repo/.venv"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
cache="$HOME/.ansible/test/cache"
mkdir -p "$cache"
for v in $(python3 -c 'print("24_2 25_0 25_1 25_2 25_3")'); do
  cp "$repo/tests/lint/get_pip_stand_in.py" "$cache/get_pip_$v.py"
done
mkdir -p "$root/ansible_collections/teg/istio" "$root/ansible_collections/kubernetes"
# What git tracks plus new files it does not ignore: what ansible-test itself would look at. Left out:
# the Helm templates of the test stand-in charts, which are Go templates rather than YAML (helm lints
# them when the tests install them), and which no Ansible content loads.
(cd "$repo" && git ls-files -co --exclude-standard -z -- . ':!tests/charts/*/templates/*' \
  | xargs -0 -I{} cp --parents {} "$root/ansible_collections/teg/istio/")
cp -a "$venv/lib/python3.11/site-packages/ansible_collections/kubernetes/core" "$root/ansible_collections/kubernetes/"
cd "$root/ansible_collections/teg/istio"
git init -q . && git add -A >/dev/null
"$venv/bin/ansible-test" sanity --local --python 3.11 --color no "$@"
