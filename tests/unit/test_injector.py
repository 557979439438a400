"""The local control plane's stand-in for Istio's sidecar injector (tests/localcp/injector.py): which pods it injects,
by the real istiod chart's selectors, only where an injector of the revision is installed, and what it adds (and
what the traffic suite takes back off). The API server's answers are given as dicts; test_site.py shows the
webhook at work on the local control plane (TEG's pods with sidecars after site.yml, without after teardown)."""

import base64
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "localcp"))
import injector  # noqa: E402

ISTIOD = {"spec": {"template": {"spec": {"containers": [{"name": "discovery", "image": "docker.io/istio/pilot:1.29.6"}]}}}}


def _api(namespace_labels, hooks, istiods_by_revision):
    """A read-only API server: one namespace, the injector webhooks' labels, istiod Deployments by revision."""
    def get(path):
        if path.startswith("/api/v1/namespaces/"):
            return {"metadata": {"labels": namespace_labels}}
        if "mutatingwebhookconfigurations" in path:
            return {"items": [{"metadata": {"labels": labels}} for labels in hooks]}
        revision = path.rsplit("%3D", 1)[-1]
        return {"items": istiods_by_revision.get(revision, [])}
    return get


DEFAULT_HOOK = {"app": "sidecar-injector", "istio.io/rev": "default"}


@pytest.mark.parametrize("labels, hooks, istiods, expected", [
    ({"istio-injection": "enabled"}, [DEFAULT_HOOK], {"default": [ISTIOD]},
     ("docker.io/istio/proxyv2:1.29.6", "default")),
    # No injector installed (Istio not installed, or removed by teardown): the pod is created as it is.
    ({"istio-injection": "enabled"}, [], {}, None),
    ({"istio-injection": "enabled"}, [DEFAULT_HOOK], {}, None),
    ({"istio-injection": "disabled", "istio.io/rev": "default"}, [DEFAULT_HOOK], {"default": [ISTIOD]}, None),
    ({}, [DEFAULT_HOOK], {"default": [ISTIOD]}, None),
    # A revision label counts without istio-injection; a revision tag wins over a revision of its name.
    ({"istio.io/rev": "stable"}, [{"app": "sidecar-injector", "istio.io/rev": "stable"}], {"stable": [ISTIOD]},
     ("docker.io/istio/proxyv2:1.29.6", "stable")),
    ({"istio-injection": "enabled"}, [{"app": "sidecar-injector", "istio.io/rev": "stable"},
                                      {"app": "sidecar-injector", "istio.io/rev": "stable", "istio.io/tag": "default"}],
     {"stable": [ISTIOD]}, ("docker.io/istio/proxyv2:1.29.6", "stable")),
], ids=["default-revision", "no-injector", "no-istiod", "opted-out-namespace", "not-labelled", "revision", "tag"])
def test_a_pod_is_injected_where_the_real_chart_s_selectors_and_an_installed_injector_say(labels, hooks, istiods,
                                                                                          expected):
    assert injector.injection(_api(labels, hooks, istiods), "ns", {"metadata": {}}) == expected


@pytest.mark.parametrize("where", ["labels", "annotations"])
def test_a_pod_that_opts_out_is_not_injected(where):
    pod = {"metadata": {where: {"sidecar.istio.io/inject": "false"}}}
    api = _api({"istio-injection": "enabled"}, [DEFAULT_HOOK], {"default": [ISTIOD]})
    assert injector.injection(api, "ns", pod) is None


def test_the_review_adds_the_sidecar_the_status_and_the_mark_and_undo_takes_them_back():
    pod = {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "app", "image": "a:1"}]}}
    api = _api({"istio-injection": "enabled"}, [DEFAULT_HOOK], {"default": [ISTIOD]})
    review = injector.review(api, {"request": {"uid": "u1", "namespace": "ns", "object": pod}})
    response = review["response"]
    assert (response["uid"], response["allowed"], response["patchType"]) == ("u1", True, "JSONPatch")
    patched = _apply_json_patch(json.loads(json.dumps(pod)), json.loads(base64.b64decode(response["patch"])))
    assert [c["name"] for c in patched["spec"]["containers"]] == ["app", "istio-proxy"]
    assert patched["spec"]["containers"][1]["image"] == "docker.io/istio/proxyv2:1.29.6"
    assert json.loads(patched["metadata"]["annotations"]["sidecar.istio.io/status"])["revision"] == "default"
    assert injector.undo(patched) == pod | {"metadata": {"labels": {"app": "a"}, "annotations": {}}}


def test_a_pod_that_has_an_istio_proxy_container_is_left_as_it_is():
    pod = {"metadata": {}, "spec": {"containers": [{"name": "istio-proxy", "image": "docker.io/istio/proxyv2:0.0.1"}]}}
    api = _api({"istio-injection": "enabled"}, [DEFAULT_HOOK], {"default": [ISTIOD]})
    assert "patch" not in injector.review(api, {"request": {"uid": "u", "namespace": "ns", "object": pod}})["response"]
    assert injector.undo(json.loads(json.dumps(pod))) == pod


def test_the_webhooks_select_namespaces_as_the_real_chart_s_do():
    config = injector.webhook_configuration(1234, b"ca")
    selectors = {hook["name"]: hook["namespaceSelector"]["matchExpressions"] for hook in config["webhooks"]}
    assert list(selectors.values()) == [
        [{"key": "istio-injection", "operator": "In", "values": ["enabled"]}],
        [{"key": "istio-injection", "operator": "DoesNotExist"}, {"key": "istio.io/rev", "operator": "Exists"}]]
    assert all(hook["failurePolicy"] == "Fail" for hook in config["webhooks"])


def _apply_json_patch(doc, ops):
    """The `add` operations the injector sends (RFC 6902), applied."""
    for op in ops:
        assert op["op"] == "add", op
        *parents, last = [p.replace("~1", "/") for p in op["path"].lstrip("/").split("/")]
        target = doc
        for part in parents:
            target = target[part]
        if last == "-":
            target.append(op["value"])
        else:
            target[last] = op["value"]
    return doc
