#!/usr/bin/env bash
# Build the local control plane's binaries from their Go modules, once per version, into a cache
# outside the repository:  $TEG_ISTIO_CACHE/bin/<component>-<version>/
#
#   build.sh            build what is missing, print the bin directories
#   build.sh --print    only print the bin directories (no build)
#
# Pins live in versions.env. kube-apiserver & co. and etcd cannot be `go install`ed (their go.mod
# files carry replace directives), so they are built from the wrapper modules under gomod/;
# kwok and helm have no replaces and are installed directly.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
cache=${TEG_ISTIO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/teg-istio}
k8s_dir="$cache/bin/kubernetes-$KUBERNETES_VERSION"
etcd_dir="$cache/bin/etcd-$ETCD_VERSION"
kwok_dir="$cache/bin/kwok-$KWOK_VERSION"
helm_dir="$cache/bin/helm-$HELM_VERSION"
actionlint_dir="$cache/bin/actionlint-$ACTIONLINT_VERSION"

# The opt-in real controllers of the current flavour (docs/real-controllers.md): only
# `build.sh --controllers` builds them, and `build.sh --print-controllers` names their directories.
eg_dir="$cache/bin/envoy-gateway-$ENVOY_GATEWAY_VERSION"
istiod_dir="$cache/bin/pilot-discovery-$ISTIOD_MODULE_VERSION"
if [ "${1:-}" = "--print-controllers" ]; then
  printf '%s\n' "$eg_dir" "$istiod_dir"
  exit 0
fi

if [ "${1:-}" = "--print" ]; then
  printf '%s\n' "$k8s_dir" "$etcd_dir" "$kwok_dir" "$helm_dir" "$actionlint_dir"
  exit 0
fi

need_go_minor=24
if ! command -v go >/dev/null 2>&1; then
  echo "build.sh: Go is not installed; install Go 1.$need_go_minor or newer (https://go.dev/dl/) and retry" >&2
  exit 2
fi
go_minor=$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
if [ -z "$go_minor" ] || [ "$go_minor" -lt "$need_go_minor" ]; then
  echo "build.sh: found $(go env GOVERSION), need Go 1.$need_go_minor or newer to build Kubernetes $KUBERNETES_VERSION" >&2
  exit 2
fi

export CGO_ENABLED=0 GOFLAGS=-mod=mod
log() { printf '[localcp build] %s\n' "$*" >&2; }

timed() {  # timed <label> <command…>: run, and log how long it took
  local label=$1 start=$SECONDS
  shift
  "$@"
  log "$label built in $((SECONDS - start)) s"
}

check_wrapper() {  # the committed wrapper module must pin the version versions.env names
  local dir=$1 module=$2 want=$3 got
  got=$(cd "$dir" && go list -m -f '{{.Version}}' "$module")
  if [ "$got" != "$want" ]; then
    echo "build.sh: $dir/go.mod pins $module $got but versions.env says $want; run tests/localcp/gomod/regen.sh" >&2
    exit 2
  fi
}

build_kubernetes() {
  local mod="$here/gomod/kubernetes" v=${KUBERNETES_VERSION#v} tmp
  check_wrapper "$mod" k8s.io/kubernetes "$KUBERNETES_VERSION"
  local major=${v%%.*} rest=${v#*.}
  local minor=${rest%%.*}
  local flags="-s -w" pkg key val
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    for key in gitVersion=$KUBERNETES_VERSION gitMajor=$major gitMinor=$minor gitTreeState=clean \
      gitCommit=0000000000000000000000000000000000000000 buildDate=1970-01-01T00:00:00Z; do
      val=${key#*=}
      flags="$flags -X $pkg.${key%%=*}=$val"
    done
  done
  tmp="$k8s_dir.tmp"
  rm -rf "$tmp" && mkdir -p "$tmp"
  (cd "$mod" && go build -trimpath -tags selinux,notest -ldflags "$flags" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  rm -rf "$k8s_dir" && mv "$tmp" "$k8s_dir"
}

build_etcd() {
  local mod="$here/gomod/etcd" tmp="$etcd_dir.tmp"
  check_wrapper "$mod" go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
  rm -rf "$tmp" && mkdir -p "$tmp"
  (cd "$mod" && go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
  rm -rf "$etcd_dir" && mv "$tmp" "$etcd_dir"
}

go_install() {  # go_install <dir> <package@version>
  local dir=$1 tmp="$1.tmp"
  rm -rf "$tmp" && mkdir -p "$tmp"
  GOBIN="$tmp" GOFLAGS='' go install -trimpath -ldflags "-s -w" "$2"
  rm -rf "$dir" && mv "$tmp" "$dir"
}

build_actionlint() { go_install "$actionlint_dir" "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"; }

build_kwok() { go_install "$kwok_dir" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"; }

build_helm() {
  # helm prints its version from ldflags; without them `helm version` says v3.x-dev.
  local tmp="$helm_dir.tmp"
  rm -rf "$tmp" && mkdir -p "$tmp"
  GOBIN="$tmp" GOFLAGS='' go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  rm -rf "$helm_dir" && mv "$tmp" "$helm_dir"
}

# Neither module has replace directives, so both are plain `go install`s.
build_envoy_gateway() { go_install "$eg_dir" "github.com/envoyproxy/gateway/cmd/envoy-gateway@$ENVOY_GATEWAY_VERSION"; }
build_istiod() { go_install "$istiod_dir" "istio.io/istio/pilot/cmd/pilot-discovery@$ISTIOD_MODULE_VERSION"; }

if [ "${1:-}" = "--controllers" ]; then
  [ -x "$eg_dir/envoy-gateway" ] || timed "envoy-gateway $ENVOY_GATEWAY_VERSION" build_envoy_gateway
  [ -x "$istiod_dir/pilot-discovery" ] || timed "pilot-discovery $ISTIOD_MODULE_VERSION" build_istiod
  printf '%s\n' "$eg_dir" "$istiod_dir"
  exit 0
fi

[ -x "$etcd_dir/etcd" ] || timed "etcd $ETCD_VERSION" build_etcd
[ -x "$kwok_dir/kwok" ] || timed "kwok $KWOK_VERSION" build_kwok
[ -x "$helm_dir/helm" ] || timed "helm $HELM_VERSION" build_helm
[ -x "$k8s_dir/kube-apiserver" ] || timed "kubernetes $KUBERNETES_VERSION" build_kubernetes
[ -x "$actionlint_dir/actionlint" ] || timed "actionlint $ACTIONLINT_VERSION" build_actionlint
printf '%s\n' "$k8s_dir" "$etcd_dir" "$kwok_dir" "$helm_dir" "$actionlint_dir"
