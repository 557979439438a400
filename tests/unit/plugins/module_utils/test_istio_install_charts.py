"""The test stand-ins for Istio's charts (tests/charts) and their staging (tests/charts/prepare.py):
versions set, the real CRDs carried byte for byte, archives and index.yaml as helm makes them, and an
injector webhook that can never touch a pod, named as the role expects."""

import gzip
import hashlib
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(REPO / "tests" / "charts"))
import prepare  # noqa: E402

from ansible_collections.teg.istio.plugins.module_utils._istio_install import decisions as f  # noqa: E402

CRDS = "# the real file's stand-in\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n"


def test_set_chart_version_keeps_comments_and_other_keys():
    text = "---\n# why\nname: base\nversion: 0.0.0\nappVersion: 0.0.0\nkubeVersion: '>=1.26.0-0'\n"
    assert prepare.set_chart_version(text, "1.19.10") == (
        "---\n# why\nname: base\nversion: 1.19.10\nappVersion: 1.19.10\nkubeVersion: '>=1.26.0-0'\n")
    with pytest.raises(prepare.PrepareError, match="exactly one top-level `appVersion:`"):
        prepare.set_chart_version("name: base\nversion: 1\n", "2")


def test_istio_version_for_each_flavour():
    assert prepare.istio_version_for("current") == "1.31.4"
    assert prepare.istio_version_for("legacy") == "1.19.10"
    with pytest.raises(prepare.PrepareError, match="unknown flavour 'other'"):
        prepare.istio_version_for("other")


def test_crd_file_names_the_missing_folder(tmp_path):
    with pytest.raises(prepare.PrepareError, match="istio-9.9.9/crd-all.gen.yaml"):
        prepare.crd_file("9.9.9", tmp_path)
    (tmp_path / "istio-9.9.9").mkdir()
    (tmp_path / "istio-9.9.9" / "crd-all.gen.yaml").write_text(CRDS)
    assert prepare.crd_file("9.9.9", tmp_path) == tmp_path / "istio-9.9.9" / "crd-all.gen.yaml"


@pytest.fixture
def staged(tmp_path):
    crds = tmp_path / "crd-all.gen.yaml"
    crds.write_text(CRDS)
    return prepare.stage(tmp_path / "out", "1.29.6", crds)


def test_stage_writes_versioned_archives_with_the_crds(staged):
    archives = staged["archives"]
    assert sorted(p.name for p in archives.iterdir()) == ["base-1.29.6.tgz", "cni-1.29.6.tgz", "index.yaml",
                                                          "istiod-1.29.6.tgz", "ztunnel-1.29.6.tgz"]
    with tarfile.open(archives / "base-1.29.6.tgz") as tar:
        names = tar.getnames()
        assert all(n.startswith("base/") for n in names)
        assert tar.extractfile("base/crds/crd-all.gen.yaml").read().decode() == CRDS
        meta = yaml.safe_load(tar.extractfile("base/Chart.yaml"))
    assert (meta["name"], meta["version"], meta["appVersion"]) == ("base", "1.29.6", "1.29.6")
    with tarfile.open(archives / "istiod-1.29.6.tgz") as tar:
        assert "istiod/templates/mutatingwebhook.yaml" in tar.getnames()
        assert not any("crds/" in n for n in tar.getnames())
    assert yaml.safe_load((staged["dirs"] / "istiod" / "Chart.yaml").read_text())["version"] == "1.29.6"
    # The committed charts stay unversioned and without CRDs.
    assert not (REPO / "tests" / "charts" / "istio-base-test" / "crds").exists()


def test_stage_index_is_a_chart_repository_index(staged):
    index = yaml.safe_load((staged["archives"] / "index.yaml").read_text())
    assert sorted(index["entries"]) == ["base", "cni", "istiod", "ztunnel"]
    entry = index["entries"]["istiod"][0]
    assert entry["urls"] == ["istiod-1.29.6.tgz"] and entry["version"] == "1.29.6"
    assert entry["digest"] == hashlib.sha256((staged["archives"] / "istiod-1.29.6.tgz").read_bytes()).hexdigest()


def test_stage_is_reproducible(tmp_path, staged):
    again = prepare.stage(tmp_path / "again", "1.29.6", tmp_path / "crd-all.gen.yaml")
    for name in ("base-1.29.6.tgz", "istiod-1.29.6.tgz", "index.yaml"):
        assert (again["archives"] / name).read_bytes() == (staged["archives"] / name).read_bytes()
    assert gzip.decompress((staged["archives"] / "base-1.29.6.tgz").read_bytes())


def test_stage_also_archives_the_same_charts_at_another_version(tmp_path):
    """The stand-in of an Istio release to upgrade to: the same charts, base with the CRDs of the staged version."""
    crds = tmp_path / "crd-all.gen.yaml"
    crds.write_text(CRDS)
    staged = prepare.stage(tmp_path / "out", "1.29.6", crds, also=["1.30.0"])
    archives = staged["archives"]
    assert sorted(p.name for p in archives.iterdir()) == [
        "base-1.29.6.tgz", "base-1.30.0.tgz", "cni-1.29.6.tgz", "cni-1.30.0.tgz", "index.yaml", "istiod-1.29.6.tgz",
        "istiod-1.30.0.tgz", "ztunnel-1.29.6.tgz", "ztunnel-1.30.0.tgz"]
    with tarfile.open(archives / "base-1.30.0.tgz") as tar:
        assert tar.extractfile("base/crds/crd-all.gen.yaml").read().decode() == CRDS
        meta = yaml.safe_load(tar.extractfile("base/Chart.yaml"))
    assert (meta["version"], meta["appVersion"]) == ("1.30.0", "1.30.0")
    index = yaml.safe_load((archives / "index.yaml").read_text())
    assert sorted(e["version"] for e in index["entries"]["istiod"]) == ["1.29.6", "1.30.0"]
    # The unpacked charts stay at the staged version, and no scratch folder is left behind.
    assert yaml.safe_load((staged["dirs"] / "istiod" / "Chart.yaml").read_text())["version"] == "1.29.6"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["archives", "dirs"]


def _helm():
    found = shutil.which("helm") or next(iter(sorted(Path.home().glob(".cache/teg-istio/bin/helm-*/helm"))), None)
    if not found:
        pytest.skip("no helm binary (built by tests/localcp/build.sh)")
    return str(found)


@pytest.mark.parametrize("namespace, revision", [("istio-system", ""), ("istio-system", "canary"), ("mesh", "1-29")])
def test_injector_stand_in_can_touch_no_pod_and_is_named_as_the_role_expects(staged, namespace, revision):
    rendered = subprocess.run(
        [_helm(), "template", "istiod", str(staged["archives"] / "istiod-1.29.6.tgz"), "-n", namespace,
         "--kube-version", "1.34.4", "--set", f"revision={revision}",
         "--set", "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY"],
        check=True, capture_output=True, text=True).stdout
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(rendered) if d}
    webhook = docs[("MutatingWebhookConfiguration", f.injector_name(namespace, revision))]
    for hook in webhook["webhooks"]:
        assert hook["failurePolicy"] == "Ignore"
        assert hook["clientConfig"]["url"].startswith("https://127.0.0.1:")
        for selector in (hook["namespaceSelector"], hook["objectSelector"]):
            # The same key required to exist and not to exist: no object can match.
            ops = {(e["key"], e["operator"]) for e in selector["matchExpressions"]}
            assert any((key, "DoesNotExist") in ops for key, op in ops if op == "Exists")
    deployment = docs[("Deployment", f.istiod_name(revision))]
    labels = deployment["metadata"]["labels"]
    assert (labels["app"], labels["istio.io/rev"]) == ("istiod", revision or "default")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "docker.io/istio/pilot:1.29.6"
    mesh = yaml.safe_load(docs[("ConfigMap", "istio-" + revision if revision else "istio")]["data"]["mesh"])
    assert mesh["outboundTrafficPolicy"] == {"mode": "REGISTRY_ONLY"}


@pytest.mark.parametrize("namespace, revision", [("istio-system", ""), ("mesh", "canary")])
def test_ambient_stand_ins_render_the_daemonsets_the_role_waits_for(staged, namespace, revision):
    """The cni and ztunnel stand-ins, rendered with the values istio_install passes, name their DaemonSets as the real
    charts do (what the role's verify and its foreign-DaemonSet preflight look for) and run on every node."""
    values = {"cni": f.cni_values({}, namespace, revision), "ztunnel": f.ztunnel_values({}, namespace, revision)}
    for chart, wanted in f.AMBIENT_DAEMONSETS.items():
        args = [_helm(), "template", f.AMBIENT_RELEASES[chart], str(staged["archives"] / f"{chart}-1.29.6.tgz"),
                "-n", namespace, "--kube-version", "1.34.4", "--values", "-"]
        rendered = subprocess.run(args, input=yaml.safe_dump(values[chart]), check=True, capture_output=True,
                                  text=True).stdout
        docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(rendered) if d}
        daemonset = docs[("DaemonSet", wanted)]
        assert daemonset["metadata"]["namespace"] == namespace
        pod = daemonset["spec"]["template"]["spec"]
        assert pod["tolerations"] == [{"operator": "Exists"}]
        assert ("ServiceAccount", pod["serviceAccountName"]) in docs
        env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
        if chart == "cni":
            assert env["AMBIENT_ENABLED"] == "true" and env["POD_NAMESPACE"] == namespace
            assert pod["containers"][0]["image"] == "docker.io/istio/install-cni:1.29.6"
        else:
            assert env["XDS_ADDRESS"] == "%s.%s.svc:15012" % (f.istiod_name(revision), namespace)
            assert pod["containers"][0]["image"] == "docker.io/istio/ztunnel:1.29.6"
