"""The one line a role fails with when a kubernetes.core write fails (plugins/filter/k8s_failure_line.py), from
failed results shaped as kubernetes.core.k8s returns them (module_utils/k8s/service.py: "Failed to <verb> object:
<the response body, or the client's exception>"). The lost API server itself: tests/integration/test_site.py,
test_a_run_cut_off_by_the_api_server_fails_in_one_line_and_a_rerun_converges."""

import json

from ansible_collections.teg.istio.plugins.filter.k8s_failure_line import k8s_failure_line

NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "httpbin"}}
GATEWAY = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
           "metadata": {"name": "apps", "namespace": "envoy-gateway-system"}}
CUT_OFF = "('Connection aborted.', RemoteDisconnected('Remote end closed connection without response'))"


def _failed(msg, definition, state="present"):
    return {"failed": True, "msg": msg, "exception": "Traceback (most recent call last): ...",
            "invocation": {"module_args": {"definition": definition, "state": state}}}


def test_a_lost_api_server_is_named_with_the_objects_and_what_to_check():
    line = k8s_failure_line(_failed("Failed to create object: " + CUT_OFF, [NAMESPACE, GATEWAY]))
    assert line == ("cannot reach the Kubernetes API server to apply one of Namespace httpbin, Gateway "
                    "envoy-gateway-system/apps: " + CUT_OFF + "; check K8S_AUTH_HOST / the kubeconfig server address "
                    "and that the API server is running")


def test_one_object_is_named_alone_and_many_are_shortened():
    refused = "Failed to patch object: HTTPSConnectionPool(host='127.0.0.1', port=6443): Max retries exceeded"
    assert k8s_failure_line(_failed(refused, NAMESPACE)).startswith(
        "cannot reach the Kubernetes API server to apply Namespace httpbin: HTTPSConnectionPool")
    many = [dict(NAMESPACE, metadata={"name": "ns%d" % i}) for i in range(5)]
    assert "to apply one of Namespace ns0, Namespace ns1, Namespace ns2 and 2 more: " in k8s_failure_line(
        _failed(refused, many))


def test_a_deletion_is_said_as_one():
    line = k8s_failure_line(_failed("Failed to delete object: " + CUT_OFF, [GATEWAY], state="absent"))
    assert line.startswith("cannot reach the Kubernetes API server to delete Gateway envoy-gateway-system/apps: ")


def test_an_answer_of_the_api_server_is_worded_by_its_status():
    body = json.dumps({"kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403,
                       "message": 'namespaces "httpbin" is forbidden: User "x" cannot create resource'}).encode()
    line = k8s_failure_line(_failed("Failed to create object: %r" % body, [NAMESPACE]))
    assert line == ('forbidden (403) to apply Namespace httpbin: namespaces "httpbin" is forbidden: User "x" cannot '
                    'create resource; grant that verb on that resource to the identity running the playbook '
                    '(see docs/rbac.md)')


def test_any_other_failure_keeps_its_own_first_line():
    assert k8s_failure_line(_failed("Failed to create object: something odd\nsecond line", [NAMESPACE])) == \
        "Failed to create object: something odd"
    assert k8s_failure_line({"failed": True, "msg": "the field 'definition' has an invalid value\nmore"}) == \
        "the field 'definition' has an invalid value"
    assert k8s_failure_line({"failed": True}) == "the task failed without a message"
