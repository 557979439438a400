"""What the cluster holds of every kind the collection or Istio's charts can create, normalized so that two
states can be compared object by object (teardown against a fresh cluster, a recovered run against an
uninterrupted one).

Kinds: what the roles write (namespaces, Services, ServiceAccounts, Deployments, EnvoyProxy, GatewayClass,
Gateway, HTTPRoute, VirtualService, PeerAuthentication) and what Istio's charts create, the test stand-ins
(tests/charts) and the real ones (the kinds of Istio's base and istiod charts): CRDs, cluster and namespace
RBAC, admission webhooks and policies, ConfigMaps, Secrets (Helm's release records),
HorizontalPodAutoscalers, PodDisruptionBudgets, NetworkPolicies. Not compared: Pods, ReplicaSets, Events,
Leases and EndpointSlices, which the cluster's controllers write (pod IPs, timestamps), nor each namespace's
ServiceAccount `default` and ConfigMap `kube-root-ca.crt`, which they make late after an API server restart.

A kind the API server does not serve in a state is recorded as such (so "Istio's CRDs are gone" is part of
the comparison); any other failure to list fails the snapshot.

Restarts are part of every state: a Deployment keeps teg_restart's trigger on its pod template, and whether it
was ever restarted (`kubectl.kubernetes.io/restartedAt` as "<set>": when differs from run to run, so two runs
compare equal when they restarted the same). `restarted(before, after)` names the Deployments restarted between
two states of one cluster (their restartedAt changed), also when the trigger stayed the same (a forced restart).
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
# What the controller manager puts in every namespace (the service account controller, the root CA publisher): made
# when it gets to it, which after an API server restart can be after the snapshot; the namespace itself is compared.
CONTROLLER_MADE = {("ServiceAccount", "default"), ("ConfigMap", "kube-root-ca.crt")}
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


class State(dict):
    """snapshot's result: {(kind, namespace, name): normalized object}; `restarted_at`: {"namespace/name":
    restartedAt as read} of each Deployment that has one, for restarted()."""

    restarted_at = {}


def snapshot(cluster):
    """A State: {(kind, namespace, name): normalized object} plus {(NOT_SERVED, "", resource): True} per resource
    not served."""
    wanted = resources(cluster.matrix)
    served = _served(cluster)
    listed = [r for r in wanted if r in served]
    objects = State({(NOT_SERVED, "", r): True for r in wanted if r not in listed})
    objects.restarted_at = {}
    proc = cluster.kubectl("get", ",".join(listed), "-A", "-o", "json", check=False)
    assert proc.returncode == 0, f"kubectl get {','.join(listed)} failed: {proc.stderr}"
    for item in json.loads(proc.stdout)["items"]:
        if item["metadata"].get("namespace") in SYSTEM_NAMESPACES:
            continue
        if (item["kind"], item["metadata"]["name"]) in CONTROLLER_MADE:
            continue
        key = (item["kind"], item["metadata"].get("namespace", ""), item["metadata"]["name"])
        assert key not in objects, f"{key} listed twice"
        if item["kind"] == "Deployment":
            annotations = item["spec"]["template"]["metadata"].get("annotations") or {}
            if RESTARTED_AT in annotations:
                objects.restarted_at[f"{key[1]}/{key[2]}"] = annotations[RESTARTED_AT]
        objects[key] = normalize(item)
    return objects


def restarted(before, after):
    """"namespace/name" of the Deployments restarted between two States of one cluster, sorted: those whose
    restartedAt changed, or appeared (on a Deployment that was there before or not)."""
    return sorted(k for k, v in after.restarted_at.items() if before.restarted_at.get(k) != v)


def without_restart_marks(state, deployments):
    """A copy of `state` with the restart trigger and restartedAt taken off the pod templates of `deployments`
    ("namespace/name"): to compare the rest of Deployments whose restart is asserted on its own."""
    out = dict(state)
    for name in deployments:
        key = ("Deployment",) + tuple(name.split("/", 1))
        if key not in out:
            continue
        obj = json.loads(json.dumps(out[key]))
        template = obj["spec"]["template"]["metadata"]
        for mark in (TRIGGER, RESTARTED_AT):
            (template.get("annotations") or {}).pop(mark, None)
        if not template.get("annotations", True):
            del template["annotations"]
        out[key] = obj
    return out


def trigger_of(state, deployment):
    """The restart trigger recorded on the pod template of `deployment` ("namespace/name"), or None."""
    obj = state[("Deployment",) + tuple(deployment.split("/", 1))]
    return (obj["spec"]["template"]["metadata"].get("annotations") or {}).get(TRIGGER)


def normalize(item):
    """`item` made comparable (`item` itself is changed too)."""
    meta = {k: v for k, v in item["metadata"].items() if k not in VOLATILE_META}
    # The Deployment controller adds the revision when it gets to it (late, after an API server restart).
    meta.get("annotations", {}).pop("deployment.kubernetes.io/revision", None)
    if not meta.get("annotations", True):
        del meta["annotations"]
    body = {k: v for k, v in item.items() if k not in ("metadata", "status")}
    kind = item["kind"]
    if kind == "Deployment":
        annotations = body["spec"]["template"]["metadata"].get("annotations")
        # When a restart happened differs from run to run (restarted() compares the times within one cluster).
        if annotations and RESTARTED_AT in annotations:
            annotations[RESTARTED_AT] = "<set>"
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


def differences_apart_from_restarts(actual, expected, restarted_deployments):
    """differences() with the restart marks of `restarted_deployments` ("namespace/name") left out on both sides:
    for Deployments whose restart the caller asserts on its own (restarted(), trigger_of())."""
    return differences(without_restart_marks(actual, restarted_deployments),
                       without_restart_marks(expected, restarted_deployments))


def sidecars(cluster, namespace):
    """{"namespace/deployment": {whether each of its running pods has an istio-proxy container}} ({True}: all
    injected, {False}: none); pods being deleted are left out. A failed read fails."""
    proc = cluster.kubectl("get", "pods", "-n", namespace, "-o", "json", check=False)
    assert proc.returncode == 0, f"kubectl get pods -n {namespace} failed: {proc.stderr}"
    out = {}
    for pod in json.loads(proc.stdout)["items"]:
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            continue
        template_hash = meta.get("labels", {}).get("pod-template-hash")
        owners = [o["name"] for o in meta.get("ownerReferences", []) if o["kind"] == "ReplicaSet"]
        if not (template_hash and owners):
            continue
        deployment = owners[0].removesuffix("-" + template_hash)
        injected = any(c["name"] == "istio-proxy" for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", []))
        out.setdefault(f"{namespace}/{deployment}", set()).add(injected)
    return out
