"""The pin-agreement check: every version pinned in more than one place says the same thing everywhere.

    python tests/lint/pins.py [REPO]    one line per disagreement and exit 1, else "pins: N agree" and exit 0

Run by tests/lint/lint.sh and by tests/localcp/build.sh before it builds anything, so that neither lint nor a build
passes with versions.env, a Go module (the wrapper modules under tests/localcp/gomod/, tests/simulate/go.mod) and the
role's default Istio telling different stories. It reads the files only (no Go, no network).
"""

import re
import sys
from pathlib import Path


def _env(repo):
    # localcp.versions() reads the same file, but importing localcp needs PyYAML, which the machine's python3 that
    # build.sh runs this with may lack.
    pins = {}
    for line in (repo / "tests/localcp/versions.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            pins[key.strip()] = value.strip()
    return pins


def _go_require(go_mod, module):
    """The version `go_mod` requires of `module` (its require lines, single or in a block), None when absent (or the
    file is)."""
    if not go_mod.is_file():
        return None
    match = re.search(r"^\s*(?:require\s+)?%s\s+(\S+)" % re.escape(module), go_mod.read_text(), re.M)
    return match.group(1) if match else None


def _role_default(path):
    """istio_install_version's default in defaults/main.yml (`istio_install_version: "1.29.6"`) or in the argument
    specs (the `default:` among the lines indented under `istio_install_version:`). Read line by line, not with a YAML
    parser: build.sh runs this with the machine's python3, which may have no PyYAML."""
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines):
        key = re.match(r"^(\s*)istio_install_version:\s*(.*)$", line)
        if key is None:
            continue
        if key.group(2).strip():
            return key.group(2).split("#")[0].strip().strip("\"'")
        for inner in lines[number + 1:]:
            if inner.strip() and len(inner) - len(inner.lstrip()) <= len(key.group(1)):
                break
            default = re.match(r"^\s*default:\s*(.+)$", inner)
            if default:
                return default.group(1).strip().strip("\"'")
    return None


def _minor(version):
    match = re.match(r"^v?(\d+)\.(\d+)", version or "")
    return "%s.%s" % match.groups() if match else None


def _current_istio(repo):
    """The current flavour's Istio of the local control plane (localcp.MATRIX, its CRD folder "istio-<version>")."""
    text = (repo / "tests/localcp/localcp.py").read_text()
    match = re.search(r'"current":\s*\{[^}]*"istio":\s*"istio-([^"]+)"', text)
    return match.group(1) if match else None


def checks(repo):
    """[(what, value here, value there)] of every pair that must agree."""
    env = _env(repo)
    gomod = repo / "tests/localcp/gomod"
    simulate = repo / "tests/simulate/go.mod"
    role_istio = _role_default(repo / "roles/istio_install/defaults/main.yml")
    spec_istio = _role_default(repo / "roles/istio_install/meta/argument_specs.yml")
    locked = sorted(set(re.findall(r"^istio-(\S+) ", (repo / "tests/localcp/crds.lock").read_text(), re.M)))
    return [
        ("versions.env KUBERNETES_VERSION vs tests/localcp/gomod/kubernetes/go.mod k8s.io/kubernetes",
         env.get("KUBERNETES_VERSION"), _go_require(gomod / "kubernetes/go.mod", "k8s.io/kubernetes")),
        ("versions.env LEGACY_KUBERNETES_VERSION vs tests/localcp/gomod/kubernetes-legacy/go.mod k8s.io/kubernetes",
         env.get("LEGACY_KUBERNETES_VERSION"), _go_require(gomod / "kubernetes-legacy/go.mod", "k8s.io/kubernetes")),
        ("versions.env ETCD_VERSION vs tests/localcp/gomod/etcd/go.mod go.etcd.io/etcd/server/v3",
         env.get("ETCD_VERSION"), _go_require(gomod / "etcd/go.mod", "go.etcd.io/etcd/server/v3")),
        ("versions.env ISTIOD_MODULE_VERSION vs tests/simulate/go.mod istio.io/istio",
         env.get("ISTIOD_MODULE_VERSION"), _go_require(simulate, "istio.io/istio")),
        ("versions.env ENVOY_GATEWAY_VERSION vs tests/simulate/go.mod github.com/envoyproxy/gateway",
         env.get("ENVOY_GATEWAY_VERSION"), _go_require(simulate, "github.com/envoyproxy/gateway")),
        ("versions.env ENVOY_GATEWAY_VERSION vs tests/localcp/gomod/crds/go.mod github.com/envoyproxy/gateway (CRDs)",
         env.get("ENVOY_GATEWAY_VERSION"), _go_require(gomod / "crds/go.mod", "github.com/envoyproxy/gateway")),
        ("localcp.py MATRIX current istio vs tests/localcp/gomod/crds/go.mod istio.io/api (its CRDs)",
         "v%s" % _current_istio(repo), _go_require(gomod / "crds/go.mod", "istio.io/api")),
        ("roles/istio_install defaults istio_install_version vs its argument_specs default", role_istio, spec_istio),
        ("roles/istio_install defaults istio_install_version vs localcp.py MATRIX current istio", role_istio,
         _current_istio(repo)),
        ("roles/istio_install defaults istio_install_version (minor) vs versions.env ISTIOD_COMPATIBILITY_VERSION",
         _minor(role_istio), env.get("ISTIOD_COMPATIBILITY_VERSION")),
        ("roles/istio_install defaults istio_install_version vs an istio-<version> folder of tests/localcp/crds.lock",
         role_istio, role_istio if role_istio in locked else "none of %s" % ", ".join(locked)),
    ]


def main(argv):
    repo = Path(argv[1]).resolve() if len(argv) > 1 else Path(__file__).resolve().parents[2]
    found = checks(repo)
    bad = [(what, here, there) for what, here, there in found if here is None or here != there]
    for what, here, there in bad:
        print("pins: %s disagree (%s, %s): change one so that both say the same, then run "
              "tests/localcp/gomod/regen.sh if a wrapper module moves" % (what, here, there), file=sys.stderr)
    if bad:
        return 1
    print("pins: %d agree" % len(found))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
