"""The least-privilege comparison's own logic (rbac_audit.py), on audit events as the API server writes them: no
cluster needed."""

import rbac_audit


def _event(verb, resource, group=None, code=200, subresource=None, user="system:serviceaccount:ns:sa"):
    ref = {"resource": resource, "namespace": "istio-system", "name": "ztunnel", "apiVersion": "v1"}
    if group:
        ref["apiGroup"] = group
    if subresource:
        ref["subresource"] = subresource
    return {"verb": verb, "objectRef": ref, "responseStatus": {"code": code}, "user": {"username": user},
            "requestURI": f"/apis/{group or ''}/{resource}"}


def test_needed_is_group_resource_verb_and_leaves_discovery_out():
    discovery = {"verb": "get", "requestURI": "/apis", "responseStatus": {"code": 200}, "user": {"username": "u"}}
    events = [_event("get", "daemonsets", "apps"), _event("list", "namespaces"),
              _event("patch", "deployments", "apps", subresource="scale"), discovery]
    assert rbac_audit.needed(events) == {("apps", "daemonsets", "get"), ("", "namespaces", "list"),
                                         ("apps", "deployments/scale", "patch")}


def test_a_refused_request_is_named_and_a_granted_one_is_not():
    events = [_event("get", "daemonsets", "apps", code=403), _event("list", "namespaces")]
    assert rbac_audit.forbidden(events) == ["get apps/daemonsets /apis/apps/daemonsets"]


def test_the_verbs_a_role_grants_and_no_run_used_are_named_per_role():
    roles = {"items": [{"metadata": {"name": "r"}, "rules": [
        {"apiGroups": ["apps"], "resources": ["daemonsets", "deployments"], "verbs": ["get", "list"]}]}]}
    grants = rbac_audit.granted(roles)
    assert grants == {"r": {("apps", "daemonsets", "get"), ("apps", "daemonsets", "list"),
                            ("apps", "deployments", "get"), ("apps", "deployments", "list")}}
    used = {("apps", "daemonsets", "get"), ("apps", "deployments", "get"), ("apps", "deployments", "list")}
    assert rbac_audit.unused(used, grants) == {"r": [("apps", "daemonsets", "list")]}
    assert rbac_audit.unused(grants["r"], grants) == {}
