"""What a platform team's own Istio looks like to the tests of a mesh the collection did not install
(test_existing_mesh.py, test_istio_existing.py, tests/integration_real/test_existing_revision.py): helm as they run
it, and their releases of the local control plane's stand-in charts (tests/charts) with their own values."""

import json
import subprocess


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
