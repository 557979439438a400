#!/usr/bin/env bash
# Regenerate the wrapper modules after a version change in ../versions.env:
#   kubernetes/, kubernetes-legacy/: require k8s.io/kubernetes at the lane's pin (KUBERNETES_VERSION,
#                LEGACY_KUBERNETES_VERSION) and replace every staging module (k8s.io/<m> => k8s.io/<m> v0.X.Y),
#                derived from upstream's own go.mod;
#   etcd/:       require go.etcd.io/etcd/server/v3 at the pin.
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

case "${1:-all}" in
  kubernetes) regen_kubernetes kubernetes "$KUBERNETES_VERSION" ;;
  kubernetes-legacy) regen_kubernetes kubernetes-legacy "$LEGACY_KUBERNETES_VERSION" ;;
  etcd) regen_etcd ;;
  all)
    regen_kubernetes kubernetes "$KUBERNETES_VERSION"
    regen_kubernetes kubernetes-legacy "$LEGACY_KUBERNETES_VERSION"
    regen_etcd
    ;;
  *) echo "regen.sh: unknown wrapper $1 (kubernetes, kubernetes-legacy, etcd, all)" >&2; exit 2 ;;
esac
