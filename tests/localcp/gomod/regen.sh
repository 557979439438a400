#!/usr/bin/env bash
# Regenerate the wrapper modules after a version change in ../versions.env:
#   kubernetes/, kubernetes-legacy/: require k8s.io/kubernetes at the lane's pin (KUBERNETES_VERSION,
#                LEGACY_KUBERNETES_VERSION) and replace every staging module (k8s.io/<m> => k8s.io/<m> v0.X.Y),
#                derived from upstream's own go.mod;
#   etcd/:       require go.etcd.io/etcd/server/v3 at the pin;
#   crds/, crds-legacy/: the Go modules the upstream CRDs of each flavour come from (../crds.lock, fetch_crds.py);
#                no code is built from them, so their go.mod is edited by hand (go mod edit -require=<module>@<v>)
#                and this only renews go.sum for the versions it requires. Then put the SHA-256 of the new files
#                in crds.lock (fetch_crds.py names each file whose digest differs).
# Commit the resulting go.mod and go.sum files.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../versions.env"
export GOFLAGS=-mod=mod

regen_kubernetes() {  # regen_kubernetes <wrapper dir name> <k8s.io/kubernetes version>
  local name=$1 version=$2 staging=v0.${2#v1.} upstream m
  upstream=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  cd "$here/$name"
  rm -f go.mod go.sum
  go mod init "teg-istio-localcp/$name"
  # Same go and godebug lines as upstream: godebug lines of dependencies are ignored, like replaces.
  go mod edit -go="$(sed -n 's/^go //p' "$upstream")"
  sed -n 's/^godebug //p' "$upstream" | while read -r line; do go mod edit -godebug="$line"; done
  go mod edit -require="k8s.io/kubernetes@$version"
  sed -n 's|.*k8s.io/\([^ ]*\) => ./staging/src/k8s.io/.*|\1|p' "$upstream" | while read -r m; do
    go mod edit -replace="k8s.io/$m=k8s.io/$m@$staging"
  done
  go mod tidy
}

regen_etcd() {
  local upstream
  cd "$here/etcd"
  rm -f go.mod go.sum
  go mod init teg-istio-localcp/etcd
  upstream=$(go mod download -json "go.etcd.io/etcd/server/v3@$ETCD_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  go mod edit -go="$(sed -n 's/^go //p' "$upstream")"
  go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  go mod tidy
}

regen_crds() {  # regen_crds <wrapper dir name>
  cd "$here/$1"
  rm -f go.sum
  # shellcheck disable=SC2046  # one word per module
  go mod download $(go mod edit -json | python3 -c 'import json, sys; print(*(r["Path"] for r in json.load(sys.stdin)["Require"]))')
}

case "${1:-all}" in
  kubernetes) regen_kubernetes kubernetes "$KUBERNETES_VERSION" ;;
  kubernetes-legacy) regen_kubernetes kubernetes-legacy "$LEGACY_KUBERNETES_VERSION" ;;
  etcd) regen_etcd ;;
  crds|crds-legacy) regen_crds "$1" ;;
  all)
    regen_kubernetes kubernetes "$KUBERNETES_VERSION"
    regen_kubernetes kubernetes-legacy "$LEGACY_KUBERNETES_VERSION"
    regen_etcd
    regen_crds crds
    regen_crds crds-legacy
    ;;
  *) echo "regen.sh: unknown wrapper $1 (kubernetes, kubernetes-legacy, etcd, crds, crds-legacy, all)" >&2; exit 2 ;;
esac
