"""Pure logic of teg.istio.service_app_protocol: which port is chosen, and the JSON patch. The patch is
applied here with the jsonpatch library (RFC 6902, the semantics the API server implements) to show
that only appProtocol changes, and that the `test` guard refuses a port list that changed meanwhile
instead of writing to another entry or appending one."""

import copy
import json

import jsonpatch
import pytest

from ansible_collections.teg.istio.plugins.module_utils.cluster import TegIstioError
from ansible_collections.teg.istio.plugins.module_utils import _service_app_protocol as sap

PRIOR = "teg.istio/prior"
WHAT = "Service envoy-gateway-system/envoy-gateway"


def service(*ports):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "envoy-gateway", "resourceVersion": "1"},
            "spec": {"ports": [dict(p) for p in ports]}}


GRPC = {"name": "grpc", "port": 18000, "protocol": "TCP", "targetPort": 18000}
RATELIMIT = {"name": "ratelimit", "port": 18001, "protocol": "TCP", "targetPort": 18001}
WEBHOOK = {"name": "webhook", "port": 9443, "protocol": "TCP", "targetPort": 9443}


def test_a_port_is_chosen_by_number_or_by_name():
    svc = service(WEBHOOK, GRPC, RATELIMIT)
    assert sap._select_port(svc, WHAT, 18000) == (1, GRPC)
    assert sap._select_port(svc, WHAT, 18000, "ratelimit") == (2, RATELIMIT)


def test_a_missing_port_is_refused_naming_the_ports_there_are():
    with pytest.raises(TegIstioError) as err:
        sap._select_port(service(GRPC, RATELIMIT), WHAT, 18999)
    msg = str(err.value)
    assert msg.startswith(WHAT + " has no port 18999 (its ports: grpc 18000/TCP, ratelimit 18001/TCP)")
    assert "never adds a port" in msg and "\n" not in msg
    with pytest.raises(TegIstioError, match="has no port named xds"):
        sap._select_port(service(GRPC), WHAT, 18000, "xds")
    with pytest.raises(TegIstioError, match=r"its ports: none"):
        sap._select_port(service(), WHAT, 18000)


def test_the_same_number_for_tcp_and_udp_needs_a_name():
    udp = dict(GRPC, name="grpc-udp", protocol="UDP")
    with pytest.raises(TegIstioError, match="has 2 ports 18000 .*choose one with port_name"):
        sap._select_port(service(GRPC, udp), WHAT, 18000)
    assert sap._select_port(service(GRPC, udp), WHAT, 18000, "grpc-udp") == (1, udp)


def _prior(svc):
    return json.loads(svc["metadata"]["annotations"][PRIOR])


def test_setting_app_protocol_changes_nothing_else_and_records_the_prior_value():
    svc = service(WEBHOOK, GRPC, RATELIMIT)
    patch = sap._json_patch(svc, 1, GRPC, "tls")
    after = jsonpatch.apply_patch(svc, patch)
    assert after["spec"]["ports"] == [WEBHOOK, dict(GRPC, appProtocol="tls"), RATELIMIT]
    assert _prior(after) == {"/spec/ports/[port=18000]/appProtocol": [None, "tls"]}
    assert [op["op"] for op in patch] == ["test", "test", "test", "test", "add", "add"]


def test_an_other_app_protocol_is_replaced_and_a_rerun_keeps_the_first_prior():
    svc = service(dict(GRPC, appProtocol="grpc"))
    after = jsonpatch.apply_patch(svc, sap._json_patch(svc, 0, svc["spec"]["ports"][0], "tls"))
    assert after["spec"]["ports"] == [dict(GRPC, appProtocol="tls")]
    assert _prior(after) == {"/spec/ports/[port=18000]/appProtocol": ["grpc", "tls"]}
    again = jsonpatch.apply_patch(after, sap._json_patch(after, 0, after["spec"]["ports"][0], "h2c"))
    assert _prior(again) == {"/spec/ports/[port=18000]/appProtocol": ["grpc", "h2c"]}


def test_nothing_is_sent_when_the_port_already_has_the_value():
    assert sap._json_patch(service(), 0, dict(GRPC, appProtocol="tls"), "tls") == []


def test_the_guard_refuses_a_port_list_that_changed_since_it_was_read():
    read = service(WEBHOOK, GRPC)
    patch = [op for op in sap._json_patch(read, 1, GRPC, "tls") if op["path"] != "/metadata/resourceVersion"]
    reordered = service(GRPC, WEBHOOK)
    shrunk = service(WEBHOOK)
    renamed = service(WEBHOOK, dict(GRPC, name="xds"))
    for changed in (reordered, shrunk, renamed):
        untouched = copy.deepcopy(changed)
        with pytest.raises((jsonpatch.JsonPatchTestFailed, jsonpatch.JsonPointerException)):
            jsonpatch.apply_patch(changed, patch)
        assert changed == untouched
    assert jsonpatch.apply_patch(read, patch)["spec"]["ports"][1]["appProtocol"] == "tls"


def test_the_guard_refuses_a_service_written_since_it_was_read():
    read = service(GRPC)
    patch = sap._json_patch(read, 0, GRPC, "tls")
    written = copy.deepcopy(read)
    written["metadata"]["resourceVersion"] = "2"
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(written, patch)


def test_teardown_gives_back_what_the_record_says_even_after_the_ports_were_reordered():
    for owners in (None, "grpc"):
        port = dict(GRPC, appProtocol=owners) if owners else GRPC
        svc = service(WEBHOOK, port)
        svc["metadata"]["annotations"] = {"owner": "kept"}
        applied = jsonpatch.apply_patch(svc, sap._json_patch(svc, 1, port, "tls"))
        reordered = copy.deepcopy(applied)
        reordered["spec"]["ports"].reverse()
        patch, given_back, left = sap.restoring_patch(reordered)
        restored = jsonpatch.apply_patch(reordered, patch)
        assert restored["spec"]["ports"] == [port, WEBHOOK] and left == []
        assert restored["metadata"]["annotations"] == {"owner": "kept"}
        assert given_back == [(dict(GRPC, appProtocol="tls"), owners)]
        assert sap.restoring_patch(restored) == ([], [], [])


def test_teardown_leaves_a_port_changed_since_and_one_without_a_record():
    svc = service(GRPC)
    applied = jsonpatch.apply_patch(svc, sap._json_patch(svc, 0, GRPC, "tls"))
    applied["spec"]["ports"][0]["appProtocol"] = "kubernetes.io/h2c"
    patch, given_back, left = sap.restoring_patch(applied)
    restored = jsonpatch.apply_patch(applied, patch)
    assert restored["spec"]["ports"][0]["appProtocol"] == "kubernetes.io/h2c" and given_back == []
    assert left == ["/spec/ports/[port=18000]/appProtocol"] and PRIOR not in restored["metadata"]["annotations"]
    # Without a record the tls is the owners' (or an earlier version's): nothing is written.
    assert sap.restoring_patch(service(dict(GRPC, appProtocol="tls"))) == ([], [], [])


def test_no_op_messages_say_why():
    assert sap._noop_message(WHAT, dict(GRPC, appProtocol="tls"), "tls") == \
        WHAT + " port 18000 (grpc) already has appProtocol tls"
