"""An Istio this collection did not install is used, not taken over (issue #26, item 1), against the local control
plane on the flavour of $MATRIX, with real helm and the stand-in charts of tests/charts.

The owners install Istio with helm themselves (releases istio-base and istiod, with values of their own), as in the
field report where a default run upgraded their istiod with the role's values only. Then, in file order on one
cluster: a default run uses it and writes nothing; check mode with istio_install_existing: upgrade shows the merged
values; the upgrade keeps the owners' values beside the role's; the uninstall (what teardown.yml runs with
teardown_istio) leaves the owners' releases; an istiod made as istioctl makes it (no Helm release) is used and not
touched, and an upgrade of it is refused before any write."""

import json

import pytest
import yaml

from conftest import JSON_CALLBACK, assert_one_line_failure, task_results
# The staged stand-in charts and the flavour's Istio version, as test_istio_install.py stages them (module fixtures).
from test_istio_install import charts, flavour  # noqa: F401  pylint: disable=unused-import
from owners import helm
from test_istio_install import NAMESPACE, PLAYBOOK, istio_crds, kubectl_json, releases

MANAGED_BY = "app.kubernetes.io/managed-by"
# The owners' values, as in the field report: an access log and a pilot environment variable of their own.
OWNERS_VALUES = {"global": {"istioNamespace": NAMESPACE}, "meshConfig": {"accessLogFile": "/dev/stdout"},
                 "pilot": {"env": {"PILOT_TRACE_SAMPLING": "5"}}}
PLAN_TASK = "Read Istio's Deployments, its injector and the Helm releases, check the charts and plan the install"
HELM_TASK = "Create the Istio namespace and install or upgrade the base and istiod charts (and cni, ztunnel in ambient)"
USED_TASK = "Say which Istio is used as it is"
KEPT_TASK = "Say which Istio releases are left because this collection did not install them"


@pytest.fixture(scope="module")
def run(play, flavour, charts):
    def _run(check=False, diff=False, **variables):
        extra = dict({"istio_install_version": flavour["istio"], "istio_install_chart_path": str(charts / "archives")},
                     **variables)
        return play(str(PLAYBOOK), extra_vars=extra, check=check, diff=diff, use_site_vars=False, env=JSON_CALLBACK)
    return _run


@pytest.fixture(scope="module")
def owners_istio(cluster, charts, flavour, tmp_path_factory):
    """istio-base and istiod installed by the owners with helm, not by this collection, on the TEG fixture."""
    cluster.localcp("reset")
    values = tmp_path_factory.mktemp("owners") / "istiod.yaml"
    values.write_text(yaml.safe_dump(OWNERS_VALUES))
    version = flavour["istio"]
    helm(cluster, "install", "istio-base", str(charts / "archives" / f"base-{version}.tgz"), "-n", NAMESPACE, "--create-namespace",
         "--set", f"global.istioNamespace={NAMESPACE}")
    helm(cluster, "install", "istiod", str(charts / "archives" / f"istiod-{version}.tgz"), "-n", NAMESPACE, "-f", str(values))
    cluster.kubectl("-n", NAMESPACE, "rollout", "status", "deployment/istiod", "--timeout=180s")
    yield version
    # The owners' Istio goes with this file: the files after it start from a cluster without Istio.
    cluster.localcp("reset")


def _values(cluster, release):
    return json.loads(helm(cluster, "get", "values", release, "-n", NAMESPACE, "-o", "json"))


def _record_labels(cluster, release):
    """The labels of the newest release record (Secret) of a release: where helm keeps --labels."""
    revision = releases(cluster)[release]["revision"]
    return kubectl_json(cluster, "-n", NAMESPACE, "get", "secret", f"sh.helm.release.v1.{release}.v{revision}")[
        "metadata"]["labels"]


def _one(run, task):
    results = task_results(run, task)
    assert len(results) == 1, run.output[-3000:]
    return results[0]


def test_owners_helm_istio_is_used_and_nothing_is_written(cluster, run, owners_istio):
    result = run()
    assert result.rc == 0, result.output[-3000:]
    assert result.recap()["changed"] == 0
    assert result.writes == [], result.describe_writes()
    assert {n: r["revision"] for n, r in releases(cluster).items()} == {"istio-base": "1", "istiod": "1"}
    assert _values(cluster, "istiod") == OWNERS_VALUES
    assert _one(result, USED_TASK)["msg"] == (
        f"Istio {owners_istio}: Deployment istio-system/istiod (revision default, installed by Helm release istiod in "
        "istio-system) available, sidecar injector istio-sidecar-injector registered (namespaces join it with "
        "istio-injection=enabled); used as it is, nothing installed or upgraded: not installed by teg.istio (set "
        "istio_install_existing: upgrade to upgrade its Helm release, keeping its values)")
    # What the roles after this one take from its plan (site.yml's predicts): the Istio in use.
    plan = _one(result, PLAN_TASK)
    assert plan["predicts"]["istio"]["istiod"] == {
        "namespace": NAMESPACE, "name": "istiod", "version": owners_istio, "revision": "default",
        "injector": "istio-sidecar-injector", "tags": [], "injection_labels": {"istio-injection": "enabled"},
        "installer": "helm", "helm_release": "istiod"}
    assert plan["writes"]["releases"] == []


def test_check_mode_of_the_upgrade_shows_the_owners_values_kept(cluster, run, owners_istio):
    result = run(check=True, diff=True, istio_install_existing="upgrade",
                 istio_install_outbound_traffic_policy="REGISTRY_ONLY")
    assert result.rc == 0, result.output[-3000:]
    assert result.writes == [], result.describe_writes()
    merged = dict(OWNERS_VALUES, meshConfig={"accessLogFile": "/dev/stdout",
                                             "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}})
    diffs = {d["before_header"]: (d["before"], d["after"]) for d in _one(result, HELM_TASK)["diff"]}
    assert diffs == {"release istiod values": (OWNERS_VALUES, merged)}
    assert {n: r["revision"] for n, r in releases(cluster).items()} == {"istio-base": "1", "istiod": "1"}


def test_upgrade_keeps_the_owners_values_and_the_release_stays_theirs(cluster, run, owners_istio):
    result = run(istio_install_existing="upgrade", istio_install_outbound_traffic_policy="REGISTRY_ONLY")
    assert result.rc == 0, result.output[-3000:]
    assert _values(cluster, "istiod") == dict(OWNERS_VALUES, meshConfig={
        "accessLogFile": "/dev/stdout", "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}})
    found = releases(cluster)
    assert {n: (r["revision"], r["chart"]) for n, r in found.items()} == {
        "istio-base": ("1", f"base-{owners_istio}"), "istiod": ("2", f"istiod-{owners_istio}")}
    # Not marked as this collection's: its teardown still leaves it (next test).
    assert MANAGED_BY not in _record_labels(cluster, "istiod")
    again = run(istio_install_existing="upgrade", istio_install_outbound_traffic_policy="REGISTRY_ONLY",
                istio_install_helm_binary="/nonexistent/bin/helm")
    assert again.rc == 0, again.output[-3000:]
    assert again.writes == [], again.describe_writes()


def test_uninstall_leaves_the_owners_releases(cluster, run, owners_istio):
    crds = istio_crds(cluster)
    result = run(istio_install_state="absent", istio_install_remove_crds=True)
    assert result.rc == 0, result.output[-3000:]
    assert result.recap()["changed"] == 0
    assert result.writes == [], result.describe_writes()
    assert set(releases(cluster)) == {"istio-base", "istiod"}
    assert istio_crds(cluster) == crds and crds
    assert _one(result, KEPT_TASK)["msg"] == ("Helm release(s) istiod, istio-base in istio-system: not installed by "
                                              "teg.istio, so left untouched")


def _istioctl_istiod(version):
    """istiod and its injector as istioctl makes them: labelled operator.istio.io/component and
    install.operator.istio.io/owning-resource, no Helm release."""
    labels = {"app": "istiod", "istio": "pilot", "istio.io/rev": "default", "operator.istio.io/component": "Pilot",
              "install.operator.istio.io/owning-resource": "unknown"}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "istiod", "namespace": NAMESPACE,
                                                                     "labels": labels},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "istiod", "istio.io/rev": "default"}},
                  "template": {"metadata": {"labels": labels, "annotations": {"sidecar.istio.io/inject": "false"}},
                               "spec": {"containers": [{"name": "discovery",
                                                        "image": f"docker.io/istio/pilot:{version}"}]}}}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
         "metadata": {"name": "istio-sidecar-injector", "labels": dict(labels, app="sidecar-injector")},
         "webhooks": [{"name": "rev.namespace.sidecar-injector.istio.io", "sideEffects": "None",
                       "admissionReviewVersions": ["v1"], "failurePolicy": "Ignore",
                       "clientConfig": {"url": "https://127.0.0.1:15017/inject"},
                       "namespaceSelector": {"matchLabels": {"teg-istio.test/never": "true"}},
                       "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                  "resources": ["pods"]}]}]},
    ]


def test_istiod_made_by_istioctl_is_used_and_not_touched(cluster, run, owners_istio):
    helm(cluster, "uninstall", "istiod", "-n", NAMESPACE, "--wait")
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(_istioctl_istiod(owners_istio)))
    cluster.kubectl("-n", NAMESPACE, "rollout", "status", "deployment/istiod", "--timeout=180s")
    used = run()
    assert used.rc == 0, used.output[-3000:]
    assert used.writes == [], used.describe_writes()
    assert _one(used, USED_TASK)["msg"].startswith(
        f"Istio {owners_istio}: Deployment istio-system/istiod (revision default, installed by istioctl or the Istio "
        "operator) available, sidecar injector istio-sidecar-injector registered")
    refused = run(istio_install_existing="upgrade")
    assert assert_one_line_failure(
        refused, ["Deployment istio-system/istiod", "was installed by istioctl or the Istio operator"],
        ["upgrade it the way it was installed", "istio_install_existing: use"]) == (
        f"istio_install_existing is upgrade, but Deployment istio-system/istiod (Istio {owners_istio}) was installed by "
        "istioctl or the Istio operator, not by a Helm release: upgrade it the way it was installed, or set "
        "istio_install_existing: use to use it as it is")
    assert refused.writes == [], refused.describe_writes()
    removed = run(istio_install_state="absent")
    assert removed.rc == 0, removed.output[-3000:]
    assert removed.writes == [], removed.describe_writes()
    assert _one(removed, KEPT_TASK)["msg"] == ("Helm release(s) istio-base in istio-system and Deployment "
                                               "istio-system/istiod: not installed by teg.istio, so left untouched")
    assert kubectl_json(cluster, "-n", NAMESPACE, "get", "deployment", "istiod")["metadata"]["labels"][
        "operator.istio.io/component"] == "Pilot"


def test_a_release_handed_back_by_its_label_is_the_collections_and_keeps_it_through_a_helm_upgrade(
        cluster, run, charts, owners_istio):
    # Nothing of the owners' istiod stays; istio-base (theirs) is handed back as docs/existing-mesh.md says.
    cluster.kubectl("delete", "-f", "-", "--wait=true", stdin=yaml.safe_dump_all(_istioctl_istiod(owners_istio)))
    revision = releases(cluster)["istio-base"]["revision"]
    cluster.kubectl("-n", NAMESPACE, "label", "secret", f"sh.helm.release.v1.istio-base.v{revision}",
                    f"{MANAGED_BY}=teg.istio")
    installed = run()
    assert installed.rc == 0, installed.output[-3000:]
    assert {n: r["revision"] for n, r in releases(cluster).items()} == {"istio-base": revision, "istiod": "1"}
    assert _record_labels(cluster, "istiod")[MANAGED_BY] == "teg.istio"
    # The owners upgrade it with helm themselves: Helm carries the release label into the new record.
    helm(cluster, "upgrade", "istio-base", str(charts / "archives" / f"base-{owners_istio}.tgz"), "-n", NAMESPACE,
         "--reuse-values")
    assert releases(cluster)["istio-base"]["revision"] == str(int(revision) + 1)
    assert _record_labels(cluster, "istio-base")[MANAGED_BY] == "teg.istio"
    removed = run(istio_install_state="absent", istio_install_remove_crds=True)
    assert removed.rc == 0, removed.output[-3000:]
    assert releases(cluster) == {} and istio_crds(cluster) == []
    assert task_results(removed, KEPT_TASK)[0].get("skipped")
