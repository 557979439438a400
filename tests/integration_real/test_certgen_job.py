"""TEG upgrades after the mesh is on (issue #16, item 2): Envoy Gateway's chart runs a certgen Job as a
pre-install/pre-upgrade Helm hook in TEG's namespace, which step 1 labels for injection. With the real
istiod, a Job pod shaped as the chart v1.9.0 renders it (`charts/gateway-helm/templates/certgen.yaml`) gets
an `istio-proxy` as an ordinary container, which never exits, so the Job never completes and `helm upgrade`
waits on its hook until it times out. The chart's `certgen.job.pod.labels` (or `.annotations`) value keeps it
out of the mesh; the per-pod native-sidecar annotation makes the sidecar a restartable init container, which
Kubernetes stops when the Job's container has exited."""

import json
import time

import pytest

TEG_NAMESPACE = "envoy-gateway-system"


@pytest.fixture(scope="module")
def site(play, cluster):
    run = play("site.yml")
    assert run.rc == 0, run.output[-4000:]
    yield run
    # Its Job pods (one kept out of the mesh on purpose) and the applied site must not reach the next
    # module, whose first run is a check-mode run on a fresh cluster and whose verify counts sidecars.
    cluster.localcp("reset")


def _certgen_job(name, pod_labels=None, pod_annotations=None):
    """The Job as charts/gateway-helm/templates/certgen.yaml (v1.9.0) renders it, with the chart's
    certgen.job.pod.labels / .annotations values; the default ServiceAccount stands in for <release>-certgen."""
    template_meta = {"labels": dict({"app": "certgen"}, **(pod_labels or {}))}
    if pod_annotations:
        template_meta["annotations"] = pod_annotations
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": TEG_NAMESPACE,
                     "annotations": {"helm.sh/hook": "pre-install, pre-upgrade"}},
        "spec": {"backoffLimit": 1, "completions": 1, "parallelism": 1, "template": {
            "metadata": template_meta,
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "envoy-gateway-certgen", "image": "docker.io/envoyproxy/gateway:v1.9.0",
                "command": ["envoy-gateway", "certgen"], "args": ["--disable-topology-injector"]}]}}},
    }


def _job_pod(cluster, job):
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(job))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pods = json.loads(cluster.kubectl("get", "pods", "-n", TEG_NAMESPACE, "-l", "job-name=" + job["metadata"]["name"],
                                          "-o", "json").stdout)["items"]
        if pods:
            return pods[0]
        time.sleep(1)
    raise AssertionError("no pod for Job %s: %s" % (job["metadata"]["name"], cluster.kubectl(
        "describe", "job", job["metadata"]["name"], "-n", TEG_NAMESPACE).stdout[-2000:]))


def _names(containers):
    return [c["name"] for c in containers or []]


def test_the_chart_default_certgen_pod_gets_a_sidecar_that_never_exits(site, cluster):
    pod = _job_pod(cluster, _certgen_job("certgen-default"))
    spec = pod["spec"]
    print("certgen pod, chart defaults: containers", _names(spec["containers"]), "initContainers",
          [(c["name"], c.get("restartPolicy")) for c in spec.get("initContainers") or []])
    assert "sidecar.istio.io/status" in pod["metadata"].get("annotations", {})
    # An ordinary container: the Job completes only when every container has exited, and istio-proxy does not.
    assert _names(spec["containers"]) == ["envoy-gateway-certgen", "istio-proxy"], _names(spec["containers"])
    assert "istio-proxy" not in _names(spec.get("initContainers"))


def test_the_chart_pod_label_value_keeps_certgen_out_of_the_mesh(site, cluster):
    """certgen.job.pod.labels: {sidecar.istio.io/inject: "false"}."""
    pod = _job_pod(cluster, _certgen_job("certgen-no-inject", pod_labels={"sidecar.istio.io/inject": "false"}))
    assert _names(pod["spec"]["containers"]) == ["envoy-gateway-certgen"]
    assert "sidecar.istio.io/status" not in pod["metadata"].get("annotations", {})


def test_a_native_sidecar_lets_the_job_complete(site, cluster):
    """certgen.job.pod.annotations: {sidecar.istio.io/nativeSidecar: "true"}: istio-proxy becomes an init
    container with restartPolicy Always, which Kubernetes (>= 1.29) stops once the Job's container exits."""
    pod = _job_pod(cluster, _certgen_job("certgen-native", pod_annotations={"sidecar.istio.io/nativeSidecar": "true"}))
    spec = pod["spec"]
    assert _names(spec["containers"]) == ["envoy-gateway-certgen"]
    proxy = [c for c in spec.get("initContainers") or [] if c["name"] == "istio-proxy"]
    assert proxy and proxy[0].get("restartPolicy") == "Always", spec.get("initContainers")
