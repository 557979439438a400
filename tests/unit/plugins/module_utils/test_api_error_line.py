"""The one line for an API failure (module_utils/names.py api_error_line), shared by teg.istio's modules
(cluster.api_error_message) and the roles' rescue of kubernetes.core writes (filter k8s_failure_line)."""

import pytest
from ansible_collections.teg.istio.plugins.module_utils.cluster import api_error_message
from ansible_collections.teg.istio.plugins.module_utils.names import api_error_line


@pytest.mark.parametrize("status, fragments", [
    (None, ["cannot reach the Kubernetes API server to patch Service a/b: why", "check K8S_AUTH_HOST",
            "that the API server is running"]),
    (401, ["rejected the credentials (401 Unauthorized) while trying to patch Service a/b", "K8S_AUTH_API_KEY"]),
    (403, ["forbidden (403) to patch Service a/b: why", "grant that verb"]),
    (404, ["Service a/b not found (404) while trying to patch it"]),
    (422, ["the API server refused to patch Service a/b (422): why"]),
    (500, ["failed to patch Service a/b (500): why"]),
])
def test_each_status_is_one_line_naming_the_object(status, fragments):
    line = api_error_line(status, "why", "patch", "Service a/b")
    assert "\n" not in line
    for fragment in fragments:
        assert fragment in line


def test_a_connection_error_of_the_client_is_an_unreachable_api_server():
    assert api_error_message(ConnectionRefusedError("[Errno 111] Connection refused\nmore"), "read", "Namespace x") == (
        "cannot reach the Kubernetes API server to read Namespace x: [Errno 111] Connection refused; check "
        "K8S_AUTH_HOST / the kubeconfig server address and that the API server is running")
