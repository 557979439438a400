"""Pure decisions of istio_install about an Istio this collection did not install (issue #26, item 1): whose a
release or istiod is, which running istiod is used, its injector and injection label, the one-line report, the
refusals of an upgrade that cannot keep the owners' Istio as it is, the merged values, and the helm version that
can label releases. The cluster side is tests/integration/test_istio_existing.py."""

import pytest

from ansible_collections.teg.istio.plugins.module_utils._istio_install import decisions as f
from ansible_collections.teg.istio.plugins.module_utils._istio_install.plan import version_after

OURS = {"status": "deployed", "labels": {"app.kubernetes.io/managed-by": "teg.istio"}}
THEIRS = {"status": "deployed", "labels": {}}


def istiod(name="istiod", namespace="istio-system", revision=None, release=None, release_namespace=None,
           istioctl=False, available=True, image="docker.io/istio/pilot:1.28.2"):
    labels = {"app": "istiod", "istio": "pilot"}
    if revision:
        labels["istio.io/rev"] = revision
    if istioctl:
        labels.update({"operator.istio.io/component": "Pilot", "install.operator.istio.io/owning-resource": "unknown"})
    annotations = {}
    if release:
        annotations = {"meta.helm.sh/release-name": release,
                       "meta.helm.sh/release-namespace": release_namespace or namespace}
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
            "spec": {"template": {"spec": {"containers": [{"name": "discovery", "image": image}]}}},
            "status": {"conditions": [{"type": "Available", "status": "True" if available else "False"}]}}


def webhook(name, revision, tag=None):
    labels = {"istio.io/rev": revision}
    if tag:
        labels["istio.io/tag"] = tag
    return {"metadata": {"name": name, "labels": labels}}


def found(*deployments, revision=""):
    return f.inventory(list(deployments), "istio-system", revision)


def test_release_ours_only_by_the_collections_label():
    assert f.release_ours(OURS)
    assert not f.release_ours(THEIRS)
    assert not f.release_ours({"labels": {"app.kubernetes.io/managed-by": "Helm"}})
    assert not f.release_ours(None)


def test_installer_is_read_from_helm_annotations_and_istioctl_labels():
    assert found(istiod(release="istiod"))["istiod"]["installer"] == "helm"
    assert found(istiod(istioctl=True))["istiod"]["installer"] == "istioctl"
    assert found(istiod())["istiod"]["installer"] == "unknown"


def test_no_istiod_or_one_of_ours_means_the_role_manages():
    assert f.existing_istiod(found(), {}, "istio-system", "istiod", []) is None
    # Theirs in another revision beside ours: the role keeps managing its own.
    inventory = found(istiod(release="istiod"), istiod("istiod-1-28", revision="1-28", istioctl=True))
    assert f.existing_istiod(inventory, {("istio-system", "istiod"): OURS}, "istio-system", "istiod", []) is None


def test_their_helm_istiod_is_used_with_its_injector():
    inventory = found(istiod(release="istiod"))
    used = f.existing_istiod(inventory, {("istio-system", "istiod"): THEIRS}, "istio-system", "istiod",
                             [webhook("istio-sidecar-injector", "default")])
    assert (used["name"], used["version"], used["revision"], used["injector"], used["tags"], used["ours"]) == (
        "istiod", "1.28.2", "default", "istio-sidecar-injector", [], False)
    assert used["injection_labels"] == {"istio-injection": "enabled"}


def test_any_revision_is_used_and_the_default_tag_decides_the_injection_label():
    # Only a revisioned istioctl install runs; the role's own revision ("") finds no istiod of its name.
    inventory = found(istiod("istiod-1-28", revision="1-28", istioctl=True),
                      istiod("istiod-1-27", revision="1-27", istioctl=True))
    webhooks = [webhook("istio-sidecar-injector-1-27", "1-27"), webhook("istio-sidecar-injector-1-28", "1-28"),
                webhook("istio-revision-tag-default", "1-28", tag="default"),
                webhook("istio-revision-tag-stable", "1-28", tag="stable")]
    used = f.existing_istiod(inventory, {}, "istio-system", "istiod", webhooks)
    assert (used["name"], used["injector"], used["tags"]) == ("istiod-1-28", "istio-sidecar-injector-1-28",
                                                              ["default", "stable"])
    assert used["injection_labels"] == {"istio-injection": "enabled"}
    # Without the default tag the revision's own label is what gets its sidecars; the first by name is used.
    used = f.existing_istiod(inventory, {}, "istio-system", "istiod", webhooks[:2])
    assert (used["name"], used["injection_labels"]) == ("istiod-1-27", {"istio.io/rev": "1-27"})


def test_the_istiod_of_the_roles_namespace_and_revision_is_preferred():
    inventory = found(istiod(release="istiod"), istiod("istiod-canary", revision="canary", release="istiod-canary"),
                      revision="canary")
    used = f.existing_istiod(inventory, {}, "istio-system", "istiod-canary", [])
    assert used["name"] == "istiod-canary"


def test_an_unusable_istiod_is_refused_in_one_line():
    unavailable = f.existing_istiod(found(istiod(available=False, istioctl=True)), {}, "istio-system", "istiod", [])
    assert f.existing_errors(unavailable) == [
        "Deployment istio-system/istiod (Istio 1.28.2, revision default, installed by istioctl or the Istio operator) "
        "is not Available, and this role uses an Istio it did not install as it is: repair it (`kubectl -n "
        "istio-system describe deployment istiod`), then run again"]
    no_injector = f.existing_istiod(found(istiod(istioctl=True)), {}, "istio-system", "istiod", [])
    assert f.existing_errors(no_injector)[0].startswith(
        "Deployment istio-system/istiod (Istio 1.28.2, revision default, installed by istioctl or the Istio operator) "
        "runs but no sidecar injector (MutatingWebhookConfiguration labelled istio.io/rev=default) is registered")
    usable = f.existing_istiod(found(istiod(istioctl=True)), {}, "istio-system", "istiod",
                               [webhook("istio-sidecar-injector", "default")])
    assert f.existing_errors(usable) == []


def test_the_report_is_one_line_naming_what_is_used_and_why():
    used = f.existing_istiod(found(istiod(release="istiod")), {}, "istio-system", "istiod",
                             [webhook("istio-sidecar-injector", "default")])
    assert f.existing_report(used, "not installed by teg.istio") == (
        "Istio 1.28.2: Deployment istio-system/istiod (revision default, installed by Helm release istiod in "
        "istio-system) available, sidecar injector istio-sidecar-injector registered (namespaces join it with "
        "istio-injection=enabled); used as it is, nothing installed or upgraded: not installed by teg.istio")


def test_upgrade_of_their_istio_only_as_a_helm_release_of_the_roles_names():
    by_istioctl = f.existing_istiod(found(istiod(istioctl=True)), {}, "istio-system", "istiod", [])
    assert f.upgrade_existing_error(by_istioctl, "istio-system", "istiod") == (
        "istio_install_existing is upgrade, but Deployment istio-system/istiod (Istio 1.28.2) was installed by istioctl "
        "or the Istio operator, not by a Helm release: upgrade it the way it was installed, or set "
        "istio_install_existing: use to use it as it is")
    other_name = f.existing_istiod(found(istiod("istiod-1-28", revision="1-28", release="istiod-1-28")), {},
                                   "istio-system", "istiod", [])
    assert f.upgrade_existing_error(other_name, "istio-system", "istiod") == (
        "istio_install_existing is upgrade, but the istiod that runs is Helm release istiod-1-28 in istio-system, not "
        "istiod in istio-system: set istio_install_namespace: istio-system and istio_install_revision: '1-28' to "
        "upgrade it, or istio_install_existing: use to use it as it is")
    same = f.existing_istiod(found(istiod(release="istiod")), {}, "istio-system", "istiod", [])
    assert f.upgrade_existing_error(same, "istio-system", "istiod") is None


def test_kept_values_are_the_owners_with_the_roles_settings_over_them():
    owners = {"meshConfig": {"accessLogFile": "/dev/stdout", "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}},
              "pilot": {"env": {"PILOT_TRACE_SAMPLING": "5"}}}
    role = f.istiod_values({}, "istio-system", "", "ALLOW_ANY")
    assert f.kept_values(owners, role) == {
        "global": {"istioNamespace": "istio-system"},
        "meshConfig": {"accessLogFile": "/dev/stdout", "outboundTrafficPolicy": {"mode": "ALLOW_ANY"}},
        "pilot": {"env": {"PILOT_TRACE_SAMPLING": "5"}}}
    assert owners["meshConfig"]["outboundTrafficPolicy"] == {"mode": "REGISTRY_ONLY"}  # not changed in place


@pytest.mark.parametrize("short, refused", [
    ("v3.19.5+g1b2c3d4", False), ("v3.13.0+gabc", False), ("v4.0.0+gabc", False), ("v3.12.3+g3a31588", True),
    ("v3.8.0", True), ("something else", False),
])
def test_helm_too_old_to_label_releases_is_refused(short, refused):
    error = f.helm_version_error(short, "helm binary /usr/local/bin/helm")
    if refused:
        assert error == ("helm binary /usr/local/bin/helm is Helm %s, older than 3.13, which this role needs to label "
                         "the releases it installs (helm --labels, so that it never takes over a release it did not "
                         "install): install Helm 3.13 or later, or Helm 4, or set istio_install_helm_binary to one" % short)
    else:
        assert error is None


class _Cluster:
    """What version_after reads, as ClusterView returns it: the Istio Deployments, the webhooks, the Helm releases."""

    def __init__(self, deployments, webhooks=(), releases=None):
        self.deployments, self.webhooks, self.releases = list(deployments), list(webhooks), releases or {}

    def read(self, facts, specs):
        found = {"Istio Deployments": self.deployments, "webhooks": self.webhooks}
        return dict((key, {"resources": found[key]}) for key in specs)

    def helm_releases(self, namespace, names):
        return dict((name, self.releases.get((namespace, name))) for name in names)


INSTALL = {"namespace": "istio-system", "revision": "", "version": "1.29.0", "manage": True, "existing": "use"}


def test_the_version_teg_istio_prep_drains_for_is_the_running_istio_s_where_istio_install_uses_it():
    theirs = _Cluster([istiod(release="istiod", image="docker.io/istio/pilot:1.23.4")],
                      releases={("istio-system", "istiod"): THEIRS})
    assert version_after(theirs, INSTALL) == "1.23.4"
    # Upgraded on its owners' request, or the collection's own (kept at the pin): the version installed.
    assert version_after(theirs, dict(INSTALL, existing="upgrade")) == "1.29.0"
    ours = _Cluster([istiod(release="istiod", image="docker.io/istio/pilot:1.28.2")],
                    releases={("istio-system", "istiod"): OURS})
    assert version_after(ours, INSTALL) == "1.29.0"
    # istio_install_manage false: whatever runs, as it is; nothing running and nothing to install: unknown.
    assert version_after(ours, dict(INSTALL, manage=False)) == "1.28.2"
    assert version_after(_Cluster([]), INSTALL) == "1.29.0"
    assert version_after(_Cluster([]), dict(INSTALL, manage=False)) is None
    # The role run alone (no istio_install_version): the running istiod's.
    assert version_after(ours, dict(INSTALL, version="")) == "1.28.2"
