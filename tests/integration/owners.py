"""What a platform team's own Istio looks like to the tests of a mesh the collection did not install
(test_existing_mesh.py, test_istio_existing.py, tests/integration_real/test_existing_revision.py): helm as they run
it, and their releases of the local control plane's stand-in charts (tests/charts) with their own values."""

import json
import subprocess

import yaml

# What istioctl (and the IstioOperator before it) labels every object it installs with, by component; Istio reads
# them as "installed by istioctl" (istio/istio operator/pkg/manifest, and this collection's istio_install:
# plugins/module_utils/_istio_install/decisions.py).
ISTIOCTL_COMPONENTS = {"istio-base": "Base", "istiod": "Pilot"}


def helm(cluster, *args):
    """helm against the test cluster; its stdout, and the test fails with helm's stderr when helm does."""
    proc = subprocess.run(["helm", *args], env=cluster.env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def install_owners_istio(cluster, release, values):
    """istio-base and the istiod release `release` with the owners' `values`, in istio-system, waited for, as the
    owners install them with helm (not with this collection: no release label)."""
    charts = cluster.env["TEG_ISTIO_TEST_CHARTS"]
    version = cluster.env["TEG_ISTIO_TEST_ISTIO_VERSION"]
    helm(cluster, "install", "istio-base", f"{charts}/base-{version}.tgz", "-n", "istio-system", "--create-namespace",
         "--wait")
    path = cluster.state_dir / f"owners-{release}-values.json"
    path.write_text(json.dumps(values))
    helm(cluster, "install", release, f"{charts}/istiod-{version}.tgz", "-n", "istio-system", "-f", str(path), "--wait")


def install_owners_istio_as_istioctl(cluster, values):
    """istio-base and istiod as `istioctl install` leaves them, with the owners' `values`: the same charts rendered
    (here the stand-ins, CRDs included) and applied with istioctl's labels and its field manager, no Helm release.
    The objects applied, for the caller to remove."""
    charts = cluster.env["TEG_ISTIO_TEST_CHARTS"]
    version = cluster.env["TEG_ISTIO_TEST_ISTIO_VERSION"]
    path = cluster.state_dir / "owners-istioctl-values.json"
    path.write_text(json.dumps(values))
    objects = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}]
    for release, component in ISTIOCTL_COMPONENTS.items():
        chart = f"{charts}/{release.removeprefix('istio-')}-{version}.tgz"
        rendered = helm(cluster, "template", release, chart, "-n", "istio-system", "--include-crds", "--validate",
                        "-f", str(path))
        for obj in (o for o in yaml.safe_load_all(rendered) if o):
            labels = obj["metadata"].setdefault("labels", {})
            labels.update({"operator.istio.io/component": component,
                           "install.operator.istio.io/owning-resource": "installed-state"})
            # Not Helm's: no release label or annotation, whatever the renderer adds.
            labels.pop("app.kubernetes.io/managed-by", None)
            for key in ("meta.helm.sh/release-name", "meta.helm.sh/release-namespace"):
                (obj["metadata"].get("annotations") or {}).pop(key, None)
            objects.append(obj)
    cluster.kubectl("apply", "--server-side", "--field-manager=istio-operator", "-f", "-",
                    stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    cluster.kubectl("-n", "istio-system", "rollout", "status", "deployment/istiod", "--timeout=180s")
    return objects
