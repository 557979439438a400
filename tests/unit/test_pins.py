"""tests/lint/pins.py, the pin-agreement check of lint and build.sh: the repository's pins agree, and each pair it
checks fails it, in one line naming both places, when one side moves."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PINS = REPO / "tests/lint/pins.py"
FILES = ("tests/localcp/versions.env", "tests/localcp/gomod/kubernetes/go.mod",
         "tests/localcp/gomod/kubernetes-legacy/go.mod", "tests/localcp/gomod/etcd/go.mod", "tests/simulate/go.mod",
         "tests/localcp/gomod/crds/go.mod",
         "roles/istio_install/defaults/main.yml",
         "roles/istio_install/meta/argument_specs.yml", "tests/localcp/localcp.py", "tests/localcp/crds.lock")


def _pins(repo):
    return subprocess.run([sys.executable, str(PINS), str(repo)], capture_output=True, text=True, check=False)


def test_the_repositorys_pins_agree():
    proc = _pins(REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["pins:", "11", "agree"]


@pytest.fixture
def copy(tmp_path):
    for name in FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def test_a_missing_go_module_fails_the_check_in_one_line(copy):
    (copy / "tests/localcp/gomod/etcd/go.mod").unlink()
    proc = _pins(copy)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert [line for line in lines if "ETCD_VERSION" in line and line.startswith("pins: ")], proc.stderr


@pytest.mark.parametrize("name, old, new, named", [
    ("tests/localcp/versions.env", "\nKUBERNETES_VERSION=", "\nKUBERNETES_VERSION=v9.9.9\n#",
     "versions.env KUBERNETES_VERSION vs tests/localcp/gomod/kubernetes/go.mod"),
    ("tests/localcp/gomod/kubernetes-legacy/go.mod", "require k8s.io/kubernetes v", "require k8s.io/kubernetes v9.",
     "LEGACY_KUBERNETES_VERSION vs tests/localcp/gomod/kubernetes-legacy/go.mod"),
    ("tests/localcp/gomod/etcd/go.mod", "require go.etcd.io/etcd/server/v3 v", "require go.etcd.io/etcd/server/v3 v9.",
     "ETCD_VERSION"),
    ("tests/simulate/go.mod", "istio.io/istio v0.0.0-", "istio.io/istio v0.0.1-", "ISTIOD_MODULE_VERSION"),
    ("tests/simulate/go.mod", "github.com/envoyproxy/gateway v", "github.com/envoyproxy/gateway v9.",
     "ENVOY_GATEWAY_VERSION"),
    ("tests/localcp/gomod/crds/go.mod", "github.com/envoyproxy/gateway v", "github.com/envoyproxy/gateway v9.",
     "ENVOY_GATEWAY_VERSION vs tests/localcp/gomod/crds/go.mod"),
    ("tests/localcp/gomod/crds/go.mod", "istio.io/api v", "istio.io/api v9.",
     "MATRIX current istio vs tests/localcp/gomod/crds"),
    ("roles/istio_install/defaults/main.yml", 'istio_install_version: "', 'istio_install_version: "9.',
     "istio_install_version vs its argument_specs default"),
    ("tests/localcp/localcp.py", '"istio": "istio-1.', '"istio": "istio-9.', "MATRIX current istio"),
    ("tests/localcp/versions.env", "ISTIOD_COMPATIBILITY_VERSION=", "ISTIOD_COMPATIBILITY_VERSION=9",
     "ISTIOD_COMPATIBILITY"),
    # The role's own Istio's line ({role} is its default).
    ("tests/localcp/crds.lock", "\nistio-{role} ", "\nistio-9.9.9 ", "crds.lock"),
])
def test_each_pair_that_moves_alone_fails_the_check_in_one_line(copy, name, old, new, named):
    path = copy / name
    text = path.read_text()
    role = yaml.safe_load((REPO / "roles/istio_install/defaults/main.yml").read_text())["istio_install_version"]
    old, new = old.replace("{role}", role), new.replace("{role}", role)
    assert old in text
    path.write_text(text.replace(old, new, 1))
    proc = _pins(copy)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    fix = "then run tests/localcp/gomod/regen.sh if a wrapper module moves"
    assert any(named in line and line.startswith("pins: ") and line.endswith(fix) for line in lines), proc.stderr
