"""Pure logic of the istio_install role (module_utils/_istio_install/ and module_utils/_helm.py): input checks, Istio's object
names, which istiod and gateways run, local chart lookup, chart metadata checks, values, and helm or
API failures turned into one line. The helm and API side is covered by
tests/integration/test_istio_install.py."""

import datetime

import pytest

from ansible_collections.teg.istio.plugins.module_utils import _helm
from ansible_collections.teg.istio.plugins.module_utils._istio_install import decisions as f
from ansible_collections.teg.istio.plugins.module_utils.names import image_version

UPSTREAM = "https://istio-release.storage.googleapis.com/charts"


def deployment(name, namespace, labels, image="docker.io/istio/pilot:1.29.6", available=True, release=None):
    annotations = {"meta.helm.sh/release-name": release} if release else {}
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": {"template": {"spec": {"containers": [{"name": "discovery", "image": image}]}}},
        "status": {"conditions": [{"type": "Available", "status": "True" if available else "False"}]},
    }


# --- inputs ----------------------------------------------------------------------------------------

def test_defaults_are_accepted():
    assert f.input_errors("istio-system", "", "1.29.6", "", UPSTREAM) == []


@pytest.mark.parametrize("args, fragment", [
    (("Istio_System", "", "1.29.6", "", UPSTREAM), "istio_install_namespace 'Istio_System' is not a namespace"),
    (("istio-system", "default", "1.29.6", "", UPSTREAM), "leave istio_install_revision empty"),
    (("istio-system", "1-29", "1.29.6", "", UPSTREAM), ""),
    (("istio-system", "Canary", "1.29.6", "", UPSTREAM), "istio_install_revision 'Canary' is not a valid"),
    (("istio-system", "a" * 57, "1.29.6", "", UPSTREAM), "at most 56 characters"),
    (("istio-system", "", "1.29", "", UPSTREAM), "istio_install_version '1.29' is not an Istio chart version"),
    (("istio-system", "", "v1.29.6", "", UPSTREAM), "is not an Istio chart version"),
    (("istio-system", "", "1.30.0-beta.0", "", UPSTREAM), ""),
    (("istio-system", "", "1.29.6", "charts", UPSTREAM), "istio_install_chart_path 'charts' must be an absolute path"),
    (("istio-system", "", "1.29.6", "", "istio-release.storage.googleapis.com"), "must start with https://"),
    (("istio-system", "", "1.29.6", "/srv/charts", "not-a-url"), ""),  # the local directory wins
    (("istio-system", "", "1.29.6", "", "oci://registry.example/istio"), ""),
])
def test_input_errors(args, fragment):
    errors = f.input_errors(*args)
    if fragment:
        assert len(errors) == 1 and fragment in errors[0]
    else:
        assert errors == []


# --- names -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("namespace, revision, injector, istiod", [
    ("istio-system", "", "istio-sidecar-injector", "istiod"),
    ("istio-system", "canary", "istio-sidecar-injector-canary", "istiod-canary"),
    ("mesh", "", "istio-sidecar-injector-mesh", "istiod"),
    ("mesh", "1-29", "istio-sidecar-injector-1-29-mesh", "istiod-1-29"),
])
def test_names_follow_istios_chart(namespace, revision, injector, istiod):
    assert f.injector_name(namespace, revision) == injector
    assert f.istiod_name(revision) == istiod


# --- what runs -------------------------------------------------------------------------------------

def test_inventory_picks_the_istiod_of_the_namespace_and_revision():
    found = f.inventory([
        deployment("istiod-canary", "istio-system", {"app": "istiod", "istio": "pilot", "istio.io/rev": "canary"},
                   image="gcr.io/istio-release/pilot:1.30.0"),
        deployment("istiod", "istio-system", {"app": "istiod", "istio": "pilot"}, release="istiod"),
        deployment("istio-ingressgateway", "istio-ingress", {"app": "istio-ingressgateway", "istio": "ingressgateway"}),
        deployment("istio-egressgateway", "istio-system", {"istio": "egressgateway"}),
        deployment("eastwest", "istio-system", {"istio": "eastwestgateway"}),
    ], "istio-system", "")
    assert found["istiod"] == {"namespace": "istio-system", "name": "istiod", "revision": "default",
                               "version": "1.29.6", "available": True, "helm_release": "istiod",
                               "helm_namespace": "istio-system", "installer": "helm"}
    assert [(d["name"], d["version"], d["revision"]) for d in found["other_istiods"]] == [
        ("istiod-canary", "1.30.0", "canary")]
    # Egress gateways are no ingress; every other istio=<gateway> Deployment is reported.
    assert [(g["namespace"], g["name"]) for g in found["gateways"]] == [
        ("istio-ingress", "istio-ingressgateway"), ("istio-system", "eastwest")]


def test_inventory_with_a_revision_and_nothing_running():
    assert f.inventory([], "istio-system", "canary") == {
        "istiod": None, "other_istiods": [], "gateways": []}
    found = f.inventory(
        [deployment("istiod", "istio-system", {"app": "istiod"}, available=False)], "istio-system", "canary")
    assert found["istiod"] is None
    assert found["other_istiods"][0]["available"] is False


@pytest.mark.parametrize("image, version", [
    ("docker.io/istio/pilot:1.29.6", "1.29.6"),
    ("registry:5000/istio/pilot:1.19.10-distroless", "1.19.10-distroless"),
    ("registry:5000/istio/pilot", None),
    ("istio/pilot:v1.2.3", "1.2.3"),
    ("istio/pilot:1.29.6@sha256:abc", "1.29.6"),
    ("istio/pilot@sha256:abc", None),
    (None, None),
])
def test_image_version(image, version):
    assert image_version(image) == version


# --- local charts ----------------------------------------------------------------------------------

def test_local_charts_prefer_the_versioned_archive():
    found = [{"path": "/srv/charts/base-1.29.6.tgz", "isdir": False},
             {"path": "/srv/charts/base", "isdir": True},
             {"path": "/srv/charts/istiod-1.28.0.tgz", "isdir": False},
             {"path": "/srv/charts/istiod", "isdir": True},
             {"path": "/srv/charts/base-notes.txt", "isdir": False}]
    located = f.local_charts(found, "/srv/charts/", "1.29.6")
    assert located["refs"] == {"base": "/srv/charts/base-1.29.6.tgz", "istiod": "/srv/charts/istiod"}
    assert located["listing"] == ["base-1.29.6.tgz", "base/", "istiod-1.28.0.tgz", "istiod/"]


def test_local_charts_missing_and_nested_entries_ignored():
    found = [{"path": "/srv/charts/old/base-1.29.6.tgz", "isdir": False},
             {"path": "/srv/charts/istiod-1.29.6.tgz", "isdir": False},
             {"path": "/srv/charts/base-1.29.6.tgz", "isdir": True}]  # a folder named like an archive
    located = f.local_charts(found, "/srv/charts", "1.29.6")
    assert located["refs"] == {"base": None, "istiod": "/srv/charts/istiod-1.29.6.tgz"}


def test_chart_errors():
    source = "local chart directory /srv/charts"
    assert f.chart_errors({
        "base": ("/srv/charts/base", {"name": "base", "version": "1.29.6"}),
        "istiod": ("/srv/charts/istiod-1.29.6.tgz", {"name": "istiod", "version": "1.29.6"}),
    }, "1.29.6", source) == []
    errors = f.chart_errors({
        "base": ("/srv/charts/base", {"name": "base", "version": "1.28.0"}),
        "istiod": ("/srv/charts/istiod-1.29.6.tgz", {"name": "gateway", "version": "1.29.6"}),
    }, "1.29.6", source)
    assert errors[0].startswith("chart base in the local chart directory /srv/charts (/srv/charts/base) is version "
                                "1.28.0, not 1.29.6")
    assert "is chart 'gateway', not 'istiod'" in errors[1]
    [unreadable] = f.chart_errors({"istiod": ("/srv/charts/istiod", "no Chart.yaml at the top of the archive")},
                                  "1.29.6", source)
    assert "not a readable Helm chart (no Chart.yaml at the top of the archive)" in unreadable


def test_chart_metadata_is_read_without_helm(tmp_path):
    import tarfile
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "Chart.yaml").write_text("name: base\nversion: 1.29.6\n")
    assert _helm.chart_metadata(str(folder))["version"] == "1.29.6"
    archive = tmp_path / "base-1.29.6.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="base")
    assert _helm.chart_metadata(str(archive)) == {"name": "base", "version": "1.29.6"}
    (tmp_path / "junk.tgz").write_text("not an archive")
    with pytest.raises(Exception):
        _helm.chart_metadata(str(tmp_path / "junk.tgz"))


# --- values ----------------------------------------------------------------------------------------

def test_istiod_values_merge_under_the_roles_own():
    passthrough = {"meshConfig": {"accessLogFile": "/dev/stdout", "outboundTrafficPolicy": {"mode": "ALLOW_ANY"}},
                   "pilot": {"env": {"PILOT_TRACE_SAMPLING": "1"}}, "revision": "other"}
    values = f.istiod_values(passthrough, "istio-system", "canary", "REGISTRY_ONLY")
    assert values == {
        "meshConfig": {"accessLogFile": "/dev/stdout", "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}},
        "pilot": {"env": {"PILOT_TRACE_SAMPLING": "1"}},
        "revision": "canary",
        "global": {"istioNamespace": "istio-system"},
    }
    # The passthrough dict itself is not modified (it is the user's variable).
    assert passthrough["meshConfig"]["outboundTrafficPolicy"]["mode"] == "ALLOW_ANY"


def test_cni_and_ztunnel_values_merge_under_the_roles_own():
    cni = {"podAnnotations": {"example.com/owner": "mesh-team"}, "resources": {"requests": {"cpu": "50m"}},
           "profile": "demo", "revision": "other", "ambient": {"dnsCapture": False}}
    assert f.cni_values(cni, "istio-system", "canary") == {
        "podAnnotations": {"example.com/owner": "mesh-team"}, "resources": {"requests": {"cpu": "50m"}},
        "profile": "ambient", "revision": "canary", "ambient": {"dnsCapture": False}}
    ztunnel = {"podAnnotations": {"example.com/owner": "mesh-team"}, "istioNamespace": "elsewhere",
               "revision": "other", "logLevel": "debug"}
    assert f.ztunnel_values(ztunnel, "mesh", "canary") == {
        "podAnnotations": {"example.com/owner": "mesh-team"}, "istioNamespace": "mesh", "revision": "canary",
        "logLevel": "debug"}
    # The passthrough dicts themselves are not modified (they are the user's variables).
    assert cni["profile"] == "demo" and ztunnel["istioNamespace"] == "elsewhere"


def test_values_without_revision_carry_no_revision_key():
    assert f.istiod_values({}, "mesh", "", "ALLOW_ANY") == {
        "global": {"istioNamespace": "mesh"}, "meshConfig": {"outboundTrafficPolicy": {"mode": "ALLOW_ANY"}}}
    assert f.base_values({"defaultRevision": "canary", "global": {"hub": "x"}}, "mesh") == {
        "defaultRevision": "canary", "global": {"hub": "x", "istioNamespace": "mesh"}}


# --- releases and failures -------------------------------------------------------------------------

@pytest.mark.parametrize("values, version", [
    ({}, "1.29.6"),
    ({"tag": "1.29.6-custom"}, "1.29.6-custom"),
    ({"global": {"tag": "1.29.5"}}, "1.29.5"),
    ({"tag": "1.29.6", "global": {"tag": "1.29.5"}}, "1.29.6"),
    ({"variant": "distroless"}, "1.29.6-distroless"),
    ({"image": "registry.example/mirror/pilot:1.29.6-fips"}, "1.29.6-fips"),
    ({"image": "pilot"}, "1.29.6"),
], ids=["chart-version", "tag", "global-tag", "tag-wins", "variant", "whole-image", "image-name-only"])
def test_the_predicted_istiod_version_is_what_its_image_tag_will_read_as(values, version):
    """A custom tag predicts the istiod the run makes (so teg_restart's check mode plans no restart the run then
    does not make): the same reading as the running istiod's image (names.image_version)."""
    assert f.istiod_image_version(values, "1.29.6") == version
    assert image_version("docker.io/istio/pilot:" + version) == version


def test_release_errors_only_for_stuck_releases():
    releases = {"istio-base": {"status": "deployed"}, "istiod": {"status": "pending-upgrade"}, "istiod-x": None}
    errors = f.release_errors(releases, "istio-system")
    assert errors == ["Helm release istiod in istio-system is pending-upgrade (an interrupted helm run): run "
                      "`helm rollback istiod -n istio-system` (or `helm uninstall istiod -n istio-system` if it never "
                      "deployed), then run again"]
    assert f.release_errors({"istiod": {"status": "failed"}}, "x") == []
    # A first install cut off: no revision to roll back to, only the record to remove.
    assert f.release_errors({"istio-base": {"status": "pending-install"}}, "istio-system") == [
        "Helm release istio-base in istio-system is pending-install (an interrupted helm install): run "
        "`helm uninstall istio-base -n istio-system`, then run again"]
    assert f.release_errors({"istiod": {"status": "uninstalling"}}, "x") == [
        "Helm release istiod in x is being uninstalled: wait for `helm status istiod -n x` to finish, then run again"]


def test_helm_error_is_helms_last_error_line():
    stderr = ("W1126 warning line\nError: INSTALLATION FAILED: rendered manifests contain a resource that "
              "already exists.\n  Unable to continue\n")
    assert _helm.helm_error_line(stderr) == ("INSTALLATION FAILED: rendered manifests contain a resource that "
                                             "already exists.")
    assert _helm.helm_error_line("exec: no such file\nmore") == "exec: no such file"


def test_helm_s_list_of_errors_gives_its_first_error_and_a_lost_api_server_is_told_apart():
    stderr = ('Error: 3 errors occurred:\n\t* Post "https://127.0.0.1:6443/api/v1/namespaces/istio-system/'
              'serviceaccounts": EOF\n\t* Post "https://127.0.0.1:6443/apis": dial tcp 127.0.0.1:6443: connect: '
              'connection refused\n\n')
    line = _helm.helm_error_line(stderr)
    assert line == ('3 errors occurred: Post "https://127.0.0.1:6443/api/v1/namespaces/istio-system/serviceaccounts": '
                    'EOF')
    assert _helm.helm_unreachable(line)
    assert _helm.helm_unreachable("Kubernetes cluster unreachable: Get \"https://x/version\": dial tcp: connect: "
                                  "connection refused")
    assert not _helm.helm_unreachable("INSTALLATION FAILED: x exists and cannot be imported into the current release")
    assert not _helm.helm_unreachable("clusterroles.rbac.authorization.k8s.io is forbidden: User")


@pytest.mark.parametrize("line, fragment", [
    ("INSTALLATION FAILED: x exists and cannot be imported into the current release: invalid ownership metadata",
     "istio_install_manage: false"),
    ("clusterroles.rbac.authorization.k8s.io is forbidden: User", "docs/rbac.md"),
    ("chart requires kubeVersion: >=1.30 which is incompatible", "supports this Kubernetes version"),
    ("UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress", "roll it back"),
    # Helm 4 (server-side apply): pkg/kube/client.go, "conflict occurred while applying object".
    ("UPGRADE FAILED: conflict occurred while applying object istio-system/istiod apps/v1, Kind=Deployment: Apply "
     "failed with 1 conflict", "istio_install_helm_force: true"),
    ("something else", "helm status"),
])
def test_helm_hints(line, fragment):
    assert fragment in _helm.helm_hint(line)


def test_crd_deletions_only_istio_groups():
    crds = [{"metadata": {"name": n}} for n in
            ("virtualservices.networking.istio.io", "gateways.gateway.networking.k8s.io",
             "peerauthentications.security.istio.io", "envoyproxies.gateway.envoyproxy.io", "fake.istio.io.example")]
    assert [d["metadata"]["name"] for d in f.crd_deletions(crds)] == [
        "peerauthentications.security.istio.io", "virtualservices.networking.istio.io"]


def _release(status="deployed", chart="istiod-1.29.6", values=None):
    return {"name": "istiod", "status": status, "chart": chart, "values": values or {"a": 1}}


@pytest.mark.parametrize("release, current", [
    (_release(), True),
    (_release(status="failed"), False),
    (_release(status="pending-upgrade"), False),
    (_release(chart="istiod-1.28.0"), False),
    (_release(values={"a": 2}), False),
    (None, False),  # no such release yet
])
def test_a_release_is_current_only_when_deployed_with_the_same_chart_version_and_values(release, current):
    assert f.release_current(release, "istiod", "1.29.6", {"a": 1}) is current


# --- in-place upgrades ------------------------------------------------------------------------------

INSTALLED = [("istiod", "istiod"), ("base", "istio-base")]


def _at(istiod, base=None):
    return {"istiod": {"status": "deployed", "chart": "istiod-" + istiod},
            "istio-base": {"status": "deployed", "chart": "base-" + (base or istiod)}}


@pytest.mark.parametrize("installed, target", [
    ("1.29.6", "1.29.6"),       # a rerun
    ("1.29.6", "1.29.7"),       # a patch
    ("1.29.6", "1.30.0"),       # one minor version up
    ("1.29.6", "1.30.0-beta.0"),
    ("1.30.1", "1.29.6"),       # one minor version down (Istio's in-place procedure also downgrades)
])
def test_an_in_place_move_of_at_most_one_minor_version_is_accepted(installed, target):
    assert f.upgrade_errors(_at(installed), INSTALLED, target, "istio-system") == []


def test_nothing_installed_or_a_new_revision_is_not_an_in_place_move():
    assert f.upgrade_errors({}, INSTALLED, "1.29.6", "istio-system") == []
    assert f.upgrade_errors({"istiod": None, "istio-base": None}, INSTALLED, "1.29.6", "istio-system") == []
    # A revision side by side: its istiod release does not exist yet; base moves one minor version.
    canary = [("istiod", "istiod-canary"), ("base", "istio-base")]
    assert f.upgrade_errors(_at("1.28.2"), canary, "1.29.6", "istio-system") == []


def test_a_skip_of_more_than_one_minor_version_is_refused_naming_the_release_and_the_step_between():
    assert f.upgrade_errors(_at("1.27.3"), INSTALLED, "1.29.6", "istio-system") == [
        "Helm release istiod in istio-system is Istio 1.27.3, and istio_install_version 1.29.6 would upgrade it in "
        "place by more than one minor version, which Istio does not support (an in-place upgrade moves one minor "
        "version at a time): set istio_install_version to a 1.28 release and run, then 1.29.6"]


def test_a_downgrade_of_more_than_one_minor_version_is_refused():
    (error,) = f.upgrade_errors(_at("1.29.6"), INSTALLED, "1.27.0", "mesh")
    assert error.startswith("Helm release istiod in mesh is Istio 1.29.6, and istio_install_version 1.27.0 would "
                            "downgrade it in place by more than one minor version")
    assert error.endswith("set istio_install_version to a 1.28 release and run, then 1.27.0")


def test_the_base_release_is_checked_when_istiod_is_within_one_minor_version():
    (error,) = f.upgrade_errors(_at("1.29.6", base="1.27.0"), INSTALLED, "1.30.0", "istio-system")
    assert error.startswith("Helm release istio-base in istio-system is Istio 1.27.0")


def test_a_release_of_another_chart_or_an_unreadable_version_is_not_compared():
    releases = {"istiod": {"status": "deployed", "chart": "pilot-1.2.3"},
                "istio-base": {"status": "deployed", "chart": "base-latest"}}
    assert f.upgrade_errors(releases, INSTALLED, "1.29.6", "istio-system") == []


def test_a_downgrade_within_one_minor_version_is_warned_about():
    assert f.downgrade_warning(_at("1.30.1"), INSTALLED, "1.29.6", "istio-system") == (
        "Helm release istiod in istio-system is downgraded in place from Istio 1.30.1 to 1.29.6; the sidecars follow "
        "when TEG restarts")
    assert f.downgrade_warning(_at("1.29.6"), INSTALLED, "1.30.0", "istio-system") is None
    assert f.downgrade_warning(_at("1.30.0"), INSTALLED, "1.30.0-beta.0", "istio-system") is not None


@pytest.mark.parametrize("short, major", [("v4.3.2", 4), ("v3.19.5+g1b2c3d4", 3), ("v4.0.0+gabc", 4), ("garbled", 3)])
def test_helm_major_from_helm_version(short, major):
    assert _helm.helm_major(short) == major


def test_helm_4_waits_with_the_legacy_strategy_named_helm_3_with_its_boolean():
    # Helm 4's --wait is a strategy (helm.sh/helm/v4 pkg/cmd/flags.go AddWaitFlag); Helm 3's a boolean.
    assert _helm.helm_wait_args(4, True, 300) == ["--wait=legacy", "--timeout", "300s"]
    assert _helm.helm_wait_args(3, True, 60) == ["--wait", "--timeout", "60s"]
    assert _helm.helm_wait_args(4, False, 60) == ["--timeout", "60s"]


@pytest.mark.parametrize("major, apply_method, flags", [
    (3, None, ["--force"]),
    # Helm 4 refuses --force-replace with server-side apply (pkg/kube/client.go Update): an "ssa" release is forced
    # with --force-conflicts; one applied client-side (by Helm 4 with --server-side=false, or by Helm 3) is replaced.
    (4, "ssa", ["--force-conflicts"]),
    (4, "csa", ["--force-replace"]),
    (4, None, ["--force-replace"]),
])
def test_a_forced_upgrade_uses_the_flag_of_the_helm_and_the_releases_apply_method(major, apply_method, flags):
    assert _helm.helm_force_args(major, apply_method) == flags


@pytest.mark.parametrize("version, end, exact", [
    # supportStatus.yml gives 1.19 2024-04-24: six weeks after 1.21.0 (2024-03-13).
    ("1.19.10", datetime.date(2024, 4, 24), True),
    ("1.29.6", datetime.date(2026, 10, 12), True),
    ("1.28.0", datetime.date(2026, 6, 29), True),
    # No N+2 release date known: the end of the nearest newer minor that has one, as an upper bound.
    ("1.25.2", datetime.date(2026, 6, 29), False),
    ("1.30.4", None, None),
    # The role's default: no N+2 release date known, so not past its end of life (site.yml says nothing of it).
    ("1.31.4", None, None),
    ("1.32.0", None, None),
    ("", None, None),
])
def test_the_end_of_life_of_an_istio_minor_follows_the_support_policy(version, end, exact):
    assert f.istio_end_of_life(version) == (None if end is None else (end, exact))


@pytest.mark.parametrize("today, warned", [
    (datetime.date(2026, 10, 12), False),
    (datetime.date(2026, 10, 13), True),
])
def test_an_istio_past_its_end_of_life_is_warned_about_from_the_day_after(today, warned):
    warning = f.support_window_warning("1.29.6", today, "istio_install_version:", "set istio_install_version to a "
                                       "supported release")
    assert (warning is not None) == warned
    if warned:
        assert warning.startswith("istio_install_version: Istio 1.29.6 is past its end of life (2026-10-12")
        assert warning.endswith("): set istio_install_version to a supported release") and "\n" not in warning


def test_an_upper_bound_of_the_end_of_life_says_so():
    assert "(by 2026-06-29 at the latest" in f.support_window_warning("1.25.2", datetime.date(2026, 12, 5), "x", "y")
