"""Pure decisions of istio_install's ambient mode (module_utils/_istio_install/decisions.py): which charts, the
values that enable ambient, the Istio and Kubernetes versions it needs, and the CNI / ztunnel DaemonSets that
are not this role's. The helm and API side is covered by tests/integration/test_istio_install.py."""

import pytest

from ansible_collections.teg.istio.plugins.module_utils._istio_install import decisions as f


def daemonset(name, namespace, release=None, release_namespace=None):
    annotations = {}
    if release:
        annotations = {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": release_namespace}
    return {"metadata": {"name": name, "namespace": namespace, "annotations": annotations}}


def test_charts_in_install_order():
    assert f.charts_for("sidecar") == ("base", "istiod")
    assert f.charts_for("ambient") == ("base", "istiod", "cni", "ztunnel")


def test_istiod_gets_the_charts_ambient_profile_only_in_ambient():
    assert f.istiod_values({"profile": "demo"}, "istio-system", "", "ALLOW_ANY", "ambient")["profile"] == "ambient"
    assert "profile" not in f.istiod_values({}, "istio-system", "", "ALLOW_ANY", "sidecar")


def test_cni_and_ztunnel_values_follow_namespace_and_revision():
    assert f.cni_values({}, "mesh", "") == {"profile": "ambient"}
    assert f.cni_values({}, "mesh", "canary")["revision"] == "canary"
    assert f.ztunnel_values({}, "mesh", "") == {"istioNamespace": "mesh"}
    assert f.ztunnel_values({}, "mesh", "canary") == {"istioNamespace": "mesh", "revision": "canary"}


@pytest.mark.parametrize("mode, version, refused", [
    ("ambient", "1.19.10", True),
    ("ambient", "1.23.6", True),
    ("ambient", "1.24.0", False),
    ("ambient", "1.29.6", False),
    ("ambient", "2.0.0", False),
    ("sidecar", "1.19.10", False),
])
def test_ambient_needs_istio_1_24(mode, version, refused):
    error = f.ambient_version_error(mode, version)
    assert (error is not None) == refused
    if refused:
        assert error.startswith("istio_install_version %s has no ambient mode" % version)
        assert "set istio_install_version to 1.24 or later, or istio_install_mesh_mode" in error
        assert "\n" not in error


@pytest.mark.parametrize("istio, kubernetes, refused, warned", [
    ("1.29.6", "v1.34.4", False, False),
    ("1.29.6", "v1.31.0", False, False),
    ("1.29.6", "v1.30.9", True, False),
    ("1.29.6", "v1.36.0", False, True),
    ("1.24.3", "v1.27.1+k3s1", True, False),
    # Istio 1.31 (the role's default) on the current lane's Kubernetes: inside its range (1.32 to 1.37).
    ("1.31.4", "v1.37.2", False, False),
    ("1.31.4", "v1.31.0", True, False),
    ("1.31.4", "v1.38.0", False, True),
    # Newer than the table: its newest row.
    ("1.32.0", "v1.31.0", True, False),
    # Unreadable: let through.
    ("1.29.6", "", False, False),
])
def test_kubernetes_version_istio_supports(istio, kubernetes, refused, warned):
    error, warning = f.kubernetes_support(istio, kubernetes)
    assert (error is not None) == refused
    assert (warning is not None) == warned
    if refused:
        assert error.startswith("Kubernetes %s is older than Istio %s supports" % (kubernetes, istio))
        assert "upgrade the cluster" in error


@pytest.mark.parametrize("istio, kubernetes, warned", [
    ("1.29.6", "v1.34.4", None),
    # The current lane's local control plane: newer than Istio 1.29 supports (1.31 to 1.35).
    ("1.29.6", "v1.37.2", "Kubernetes v1.37.2 is newer than the versions Istio 1.29.6 was tested with (1.31 to 1.35"),
    ("1.29.6", "v1.30.9", "Kubernetes v1.30.9 is older than Istio 1.29.6 supports (1.31 to 1.35"),
    ("1.29.6", "", None),
    # The current lane's local control plane under the role's default: inside Istio 1.31's range, nothing is said.
    ("1.31.4", "v1.37.2", None),
])
def test_sidecar_mode_warns_about_a_kubernetes_the_pinned_istio_does_not_support_and_refuses_none(
        istio, kubernetes, warned):
    warning = f.sidecar_kubernetes_warning(istio, kubernetes)
    if warned is None:
        assert warning is None
    else:
        assert warning.startswith(warned) and "\n" not in warning
        assert "istio.io/latest/docs/releases/supported-releases" in warning


def test_foreign_daemonsets_are_refused_and_own_ones_are_not():
    own = [daemonset("istio-cni-node", "istio-system", "istio-cni", "istio-system"),
           daemonset("ztunnel", "istio-system", "ztunnel", "istio-system"),
           daemonset("kube-proxy", "kube-system")]
    assert f.foreign_daemonsets(own, "istio-system") == []
    foreign = [daemonset("ztunnel", "other", "my-ztunnel", "other"), daemonset("istio-cni-node", "kube-system")]
    errors = f.foreign_daemonsets(foreign, "istio-system")
    assert errors == ["DaemonSet kube-system/istio-cni-node (not installed by Helm), other/ztunnel (Helm release "
                      "my-ztunnel in other) already runs and is not part of release istio-cni / ztunnel in istio-system: "
                      "remove it (or the Istio ambient install it belongs to) first, or set istio_install_manage: false "
                      "to use that Istio as it is"]


def test_chart_errors_cover_the_ambient_charts():
    checked = {"cni": ("/c/cni", {"name": "cni", "version": "1.0.0"}), "ztunnel": ("/c/z", {"name": "x", "version": "1.29.6"})}
    errors = f.chart_errors(checked, "1.29.6", "local chart directory /c")
    assert len(errors) == 2
    assert errors[0].startswith("chart cni in the local chart directory /c (/c/cni) is version 1.0.0")
    assert errors[1].startswith("/c/z in the local chart directory /c is chart 'x', not 'ztunnel'")
