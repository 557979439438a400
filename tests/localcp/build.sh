#!/usr/bin/env bash
# Build the local control plane's binaries from their Go modules, once per version, into a cache
# outside the repository:  $TEG_ISTIO_CACHE/bin/<component>-<version>/
#
#   build.sh                  build what is missing for both lanes, print the current lane's bin directories
#   build.sh --print [LANE]   only print the bin directories of LANE (current, the default, or legacy; no build)
#
# Pins live in versions.env: the current lane's Kubernetes and Helm (KUBERNETES_VERSION, HELM_VERSION), the
# legacy lane's (LEGACY_KUBERNETES_VERSION, LEGACY_HELM_VERSION); etcd, kwok and actionlint are shared.
# kube-apiserver & co. and etcd cannot be `go install`ed (their go.mod files carry replace directives), so they
# are built from the wrapper modules under gomod/ (kubernetes/ for the current lane, kubernetes-legacy/);
# kwok and helm have no replaces and are installed directly.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
cache=${TEG_ISTIO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/teg-istio}
etcd_dir="$cache/bin/etcd-$ETCD_VERSION"
kwok_dir="$cache/bin/kwok-$KWOK_VERSION"
actionlint_dir="$cache/bin/actionlint-$ACTIONLINT_VERSION"
k8s_dir() { printf '%s\n' "$cache/bin/kubernetes-$1"; }  # k8s_dir <version>
helm_dir() { printf '%s\n' "$cache/bin/helm-$1"; }       # helm_dir <version>

# shellcheck disable=SC2153  # HELM_VERSION and the other pins come from versions.env, sourced above
lane_dirs() {  # lane_dirs <lane>: the bin directories localcp.py reads, in its order
  case "$1" in
    current) printf '%s\n' "$(k8s_dir "$KUBERNETES_VERSION")" "$etcd_dir" "$kwok_dir" "$(helm_dir "$HELM_VERSION")" ;;
    legacy) printf '%s\n' "$(k8s_dir "$LEGACY_KUBERNETES_VERSION")" "$etcd_dir" "$kwok_dir" "$(helm_dir "$LEGACY_HELM_VERSION")" ;;
    *) echo "build.sh: unknown lane $1 (current or legacy)" >&2; exit 2 ;;
  esac
  printf '%s\n' "$actionlint_dir"
}

# The opt-in real controllers of the current flavour (docs/real-controllers.md): only
# `build.sh --controllers` builds them, and `build.sh --print-controllers` names their directories.
eg_dir="$cache/bin/envoy-gateway-$ENVOY_GATEWAY_VERSION"
istiod_dir="$cache/bin/pilot-discovery-$ISTIOD_MODULE_VERSION"
if [ "${1:-}" = "--print-controllers" ]; then
  printf '%s\n' "$eg_dir" "$istiod_dir"
  exit 0
fi

if [ "${1:-}" = "--print" ]; then
  lane_dirs "${2:-current}"
  exit 0
fi

need_go_minor=26  # k8s.io/kubernetes v1.37 says go 1.26.0
if ! command -v go >/dev/null 2>&1; then
  echo "build.sh: Go is not installed; install Go 1.$need_go_minor or newer (https://go.dev/dl/) and retry" >&2
  exit 2
fi
go_minor=$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
if [ -z "$go_minor" ] || [ "$go_minor" -lt "$need_go_minor" ]; then
  echo "build.sh: found $(go env GOVERSION), need Go 1.$need_go_minor or newer to build Kubernetes $KUBERNETES_VERSION" >&2
  exit 2
fi

# No build from pins that disagree (versions.env, the wrapper modules, tests/simulate/go.mod, the role's default Istio).
python3 "$here/../lint/pins.py" "$here/../.." >/dev/null

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

build_kubernetes() {  # build_kubernetes <wrapper module dir name> <version>
  local mod="$here/gomod/$1" version=$2 v=${2#v} out tmp
  check_wrapper "$mod" k8s.io/kubernetes "$version"
  local major=${v%%.*} rest=${v#*.}
  local minor=${rest%%.*}
  local flags="-s -w" pkg key val
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    for key in gitVersion=$version gitMajor=$major gitMinor=$minor gitTreeState=clean \
      gitCommit=0000000000000000000000000000000000000000 buildDate=1970-01-01T00:00:00Z; do
      val=${key#*=}
      flags="$flags -X $pkg.${key%%=*}=$val"
    done
  done
  out=$(k8s_dir "$version")
  tmp="$out.tmp"
  rm -rf "$tmp" && mkdir -p "$tmp"
  (cd "$mod" && go build -trimpath -tags selinux,notest -ldflags "$flags" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  rm -rf "$out" && mv "$tmp" "$out"
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

build_helm() {  # build_helm <version>: Helm 3 and Helm 4 are different modules (helm.sh/helm/v3, /v4)
  # helm prints its version from ldflags; without them `helm version` says v3.x-dev (v4.x-dev).
  local version=$1 module="helm.sh/helm/${1%%.*}" out tmp
  out=$(helm_dir "$version")
  tmp="$out.tmp"
  rm -rf "$tmp" && mkdir -p "$tmp"
  GOBIN="$tmp" GOFLAGS='' go install -trimpath \
    -ldflags "-s -w -X $module/internal/version.version=$version" "$module/cmd/helm@$version"
  rm -rf "$out" && mv "$tmp" "$out"
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
for helm_version in "$HELM_VERSION" "$LEGACY_HELM_VERSION"; do
  [ -x "$(helm_dir "$helm_version")/helm" ] || timed "helm $helm_version" build_helm "$helm_version"
done
[ -x "$(k8s_dir "$KUBERNETES_VERSION")/kube-apiserver" ] ||
  timed "kubernetes $KUBERNETES_VERSION" build_kubernetes kubernetes "$KUBERNETES_VERSION"
[ -x "$(k8s_dir "$LEGACY_KUBERNETES_VERSION")/kube-apiserver" ] ||
  timed "kubernetes $LEGACY_KUBERNETES_VERSION" build_kubernetes kubernetes-legacy "$LEGACY_KUBERNETES_VERSION"
[ -x "$actionlint_dir/actionlint" ] || timed "actionlint $ACTIONLINT_VERSION" build_actionlint
lane_dirs current
