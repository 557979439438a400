"""The version pins agree: the local control plane's versions (tests/localcp/versions.env), the Go modules the
traffic suite is built from (tests/simulate/go.mod), the current lane's flavour (localcp.MATRIX) and the role's
default Istio (istio_install_version). A bump of one without the others fails here, not in a simulation that
quietly judges by another version's rules (docs/traffic-simulation.md)."""

import re
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "localcp"))
import localcp  # noqa: E402  -- tests/localcp is no package

GO_MOD = REPO / "tests" / "simulate" / "go.mod"


def _go_requirements(text):
    """{module: version} of go.mod's require lines (one-line and block form)."""
    return dict(re.findall(r"^\s*(?:require\s+)?([\w.\-/]+\.[\w.\-/]+)\s+(v\S+)", text, re.M))


def _minor(version):
    return ".".join(version.removeprefix("istio-").removeprefix("v").split(".")[:2])


@pytest.fixture(scope="module")
def pins():
    return {
        "versions": localcp.versions(),
        "go": _go_requirements(GO_MOD.read_text()),
        "lane": localcp.MATRIX["current"],
        "role_istio": yaml.safe_load((REPO / "roles/istio_install/defaults/main.yml").read_text())["istio_install_version"],
    }


def test_go_requirements_are_read():
    requirements = _go_requirements("module x\n\nrequire (\n\tgithub.com/a/b v1.2.3\n\tk8s.io/c v0.1.0 // indirect\n)\n"
                                    "require istio.io/istio v0.0.0-1-abc\n")
    assert requirements == {"github.com/a/b": "v1.2.3", "k8s.io/c": "v0.1.0", "istio.io/istio": "v0.0.0-1-abc"}


def test_istiod_module_is_the_one_the_suite_is_built_from(pins):
    assert pins["go"]["istio.io/istio"] == pins["versions"]["ISTIOD_MODULE_VERSION"]


def test_envoy_gateway_module_is_the_pinned_and_the_lane_version(pins):
    assert pins["go"]["github.com/envoyproxy/gateway"] == pins["versions"]["ENVOY_GATEWAY_VERSION"]
    assert pins["lane"]["envoy_gateway"] == "envoy-gateway-" + pins["versions"]["ENVOY_GATEWAY_VERSION"]


def test_istio_minor_agrees_across_role_lane_and_compatibility_profile(pins):
    # istio.io/istio has no semver tags (versions.env): the module is a snapshot, and the compatibility profile
    # of the deployed minor is what makes it behave as that minor, so that profile must be the lane's minor.
    assert pins["role_istio"] == pins["lane"]["istio"].removeprefix("istio-")
    assert _minor(pins["role_istio"]) == pins["versions"]["ISTIOD_COMPATIBILITY_VERSION"]
