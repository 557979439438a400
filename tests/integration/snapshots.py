"""What the cluster holds of every kind the collection or Istio's charts can create, normalized so that two
states can be compared object by object (teardown against a fresh cluster, a recovered run against an
uninterrupted one).

Kinds: what the roles write (namespaces, Services, ServiceAccounts, Deployments, EnvoyProxy, GatewayClass,
Gateway, HTTPRoute, VirtualService, PeerAuthentication) and what Istio's charts create, the test stand-ins
(tests/charts) and the real ones (the kinds of Istio's base and istiod charts): CRDs, cluster and namespace
RBAC, admission webhooks and policies, ConfigMaps, Secrets (Helm's release records),
HorizontalPodAutoscalers, PodDisruptionBudgets, NetworkPolicies. Not compared: Pods, ReplicaSets, Events,
Leases and EndpointSlices, which the cluster's controllers write (pod IPs, timestamps).

A kind the API server does not serve in a state is recorded as such (so "Istio's CRDs are gone" is part of
the comparison); any other failure to list fails the snapshot.
"""

import base64
import gzip
import json

ENVOYPROXY_GROUP = {"current": "gateway.envoyproxy.io", "legacy": "config.gateway.envoyproxy.io"}
# Resources as `kubectl api-resources -o name` names them (resource.group; core resources without a group).
BUILTIN = ["namespaces", "services", "serviceaccounts", "deployments.apps", "daemonsets.apps", "configmaps", "secrets",
           "customresourcedefinitions.apiextensions.k8s.io",
           "clusterroles.rbac.authorization.k8s.io", "clusterrolebindings.rbac.authorization.k8s.io",
           "roles.rbac.authorization.k8s.io", "rolebindings.rbac.authorization.k8s.io",
           "mutatingwebhookconfigurations.admissionregistration.k8s.io",
           "validatingwebhookconfigurations.admissionregistration.k8s.io",
           "validatingadmissionpolicies.admissionregistration.k8s.io",
           "validatingadmissionpolicybindings.admissionregistration.k8s.io",
           "horizontalpodautoscalers.autoscaling", "poddisruptionbudgets.policy", "networkpolicies.networking.k8s.io"]
CUSTOM = ["gatewayclasses.gateway.networking.k8s.io", "gateways.gateway.networking.k8s.io",
          "httproutes.gateway.networking.k8s.io", "virtualservices.networking.istio.io",
          "peerauthentications.security.istio.io"]
# Kind names (as in `kind:`) of everything listed, for the check that the real charts create nothing else.
KINDS = {"Namespace", "Service", "ServiceAccount", "Deployment", "DaemonSet", "ConfigMap", "Secret", "CustomResourceDefinition",
         "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "MutatingWebhookConfiguration",
         "ValidatingWebhookConfiguration", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
         "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "GatewayClass", "Gateway", "HTTPRoute",
         "VirtualService", "PeerAuthentication", "EnvoyProxy"}
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
VOLATILE_META = {"uid", "resourceVersion", "managedFields", "creationTimestamp", "generation", "deletionTimestamp"}
TRIGGER = "teg.istio/restart-trigger"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
NOT_SERVED = "<not served>"


def resources(matrix):
    return BUILTIN + CUSTOM + ["envoyproxies." + ENVOYPROXY_GROUP[matrix]]


def _served(cluster):
    """resource.group names the API server serves now (kubectl's discovery, not its cache)."""
    proc = cluster.kubectl("api-resources", "--cached=false", "-o", "name")
    return set(proc.stdout.split())


def snapshot(cluster, restarts=False):
    """{(kind, namespace, name): normalized object} plus {(NOT_SERVED, "", resource): True} per resource not
    served. `restarts`: keep each Deployment's restart trigger and whether it was restarted (the recovery
    comparison); without, both are dropped (teardown records a new trigger on purpose)."""
    wanted = resources(cluster.matrix)
    served = _served(cluster)
    listed = [r for r in wanted if r in served]
    objects = {(NOT_SERVED, "", r): True for r in wanted if r not in listed}
    proc = cluster.kubectl("get", ",".join(listed), "-A", "-o", "json", check=False)
    assert proc.returncode == 0, f"kubectl get {','.join(listed)} failed: {proc.stderr}"
    for item in json.loads(proc.stdout)["items"]:
        if item["metadata"].get("namespace") in SYSTEM_NAMESPACES:
            continue
        key = (item["kind"], item["metadata"].get("namespace", ""), item["metadata"]["name"])
        assert key not in objects, f"{key} listed twice"
        objects[key] = normalize(item, restarts)
    return objects


def normalize(item, restarts=False):
    meta = {k: v for k, v in item["metadata"].items() if k not in VOLATILE_META}
    # The Deployment controller adds the revision when it gets to it (late, after an API server restart).
    meta.get("annotations", {}).pop("deployment.kubernetes.io/revision", None)
    if not meta.get("annotations", True):
        del meta["annotations"]
    body = {k: v for k, v in item.items() if k not in ("metadata", "status")}
    kind = item["kind"]
    if kind == "Deployment":
        annotations = body["spec"]["template"]["metadata"].get("annotations") or {}
        # When a restart happened differs from run to run; and teardown restarts TEG so its pods lose their
        # sidecars, which teg_restart records as a new trigger hash on the template.
        restarted = annotations.pop(RESTARTED_AT, None)
        trigger = annotations.pop(TRIGGER, None)
        if restarts:
            annotations[TRIGGER] = trigger
            annotations[RESTARTED_AT] = "<set>" if restarted else None
        if annotations:
            body["spec"]["template"]["metadata"]["annotations"] = annotations
        else:
            body["spec"]["template"]["metadata"].pop("annotations", None)
    elif kind == "Service":
        body["spec"] = {k: v for k, v in body["spec"].items() if k not in ("clusterIP", "clusterIPs")}
        body["spec"]["ports"] = [{k: v for k, v in p.items() if k != "nodePort"} for p in body["spec"].get("ports", [])]
    elif kind == "Secret" and item.get("type") == "helm.sh/release.v1":
        # Helm's release record: what was released, not when.
        meta.get("labels", {}).pop("modifiedAt", None)
        body["data"] = {"release": _helm_release(item["data"]["release"])}
    return {"metadata": meta, **body}


def _helm_release(data):
    release = json.loads(gzip.decompress(base64.b64decode(base64.b64decode(data))))
    return {"name": release["name"], "namespace": release["namespace"], "version": release["version"],
            "status": release["info"]["status"], "chart": release["chart"]["metadata"]["version"],
            "config": release.get("config"), "manifest": release.get("manifest")}


def differences(actual, expected):
    """Keys only in one, and keys whose objects differ with the paths where: [] when the two states are the same."""
    out = [("only now", k) for k in sorted(set(actual) - set(expected))]
    out += [("missing now", k) for k in sorted(set(expected) - set(actual))]
    out += [("differs", k, _paths(actual[k], expected[k])) for k in sorted(set(actual) & set(expected))
            if actual[k] != expected[k]]
    return out


def _paths(actual, expected, path=""):
    """Where two values differ: ["spec.replicas: 2 != 1", ...] (at most 5)."""
    if isinstance(actual, dict) and isinstance(expected, dict):
        out = []
        for key in sorted(set(actual) | set(expected), key=str):
            if actual.get(key) != expected.get(key):
                out += _paths(actual.get(key), expected.get(key), f"{path}.{key}" if path else str(key))
        return out[:5]
    return [f"{path}: {json.dumps(actual)[:200]} != {json.dumps(expected)[:200]}"]
