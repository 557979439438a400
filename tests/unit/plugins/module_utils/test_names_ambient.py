"""Who Istio's ambient mode captures (names.ambient_enrolled): the pod's own istio.io/dataplane-mode label
first, else its namespace's, never a pod with a sidecar."""

import pytest

from ansible_collections.teg.istio.plugins.module_utils.names import ambient_enrolled


def _pod(labels=None, sidecar=False, native=False):
    spec = {"containers": [{"name": "app"}]}
    if sidecar:
        spec["containers"].append({"name": "istio-proxy"})
    if native:
        spec["initContainers"] = [{"name": "istio-proxy", "restartPolicy": "Always"}]
    return {"metadata": {"name": "p", "labels": labels or {}}, "spec": spec}


AMBIENT = {"istio.io/dataplane-mode": "ambient"}


@pytest.mark.parametrize("pod,namespace_labels,enrolled", [
    (_pod(), AMBIENT, True),
    (_pod(), {}, False),
    (_pod(), {"istio-injection": "enabled"}, False),
    (_pod(labels=AMBIENT), {}, True),
    (_pod(labels={"istio.io/dataplane-mode": "none"}), AMBIENT, False),
    (_pod(sidecar=True), AMBIENT, False),
    (_pod(native=True), AMBIENT, False),
], ids=["namespace", "no-label", "injection-label", "pod-label", "pod-opts-out", "sidecar", "native-sidecar"])
def test_ambient_enrolled(pod, namespace_labels, enrolled):
    assert ambient_enrolled(pod, namespace_labels) is enrolled
