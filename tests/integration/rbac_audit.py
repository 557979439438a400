"""The identities of rbac/ and what their runs asked the API server, for the least-privilege tests.

The local control plane's audit policy records every request (reads included) of the ServiceAccounts in
rbac/binding-example.yml's namespace (tests/localcp/localcp.py, AUDIT_POLICY). From a run's events this derives
the (API group, resource, verb) triples the run needed, and compares them with the rules of rbac/clusterrole.yml:
a request the API server refused (403) is a verb the ClusterRoles lack, and a verb they grant that no run used is
reported at the end of the session (conftest.py, pytest_terminal_summary), where every module's runs are known.
"""

import json
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTERROLES = REPO / "rbac" / "clusterrole.yml"
BINDING_EXAMPLE = REPO / "rbac" / "binding-example.yml"
NAMESPACE = "teg-istio-automation"
# The ServiceAccount of rbac/binding-example.yml, bound to both ClusterRoles.
FULL = "teg-istio"
# A ServiceAccount bound to teg-istio alone: Istio installed by someone else (istio_install_manage: false).
WITHOUT_INSTALL = "teg-istio-without-install"
# What each session's runs needed, by the module that recorded them: {module: [[group, resource, verb], ...]}.
USED = {}


def user(name):
    return f"system:serviceaccount:{NAMESPACE}:{name}"


def bind(cluster):
    """rbac/clusterrole.yml and rbac/binding-example.yml applied, plus WITHOUT_INSTALL bound to teg-istio alone;
    {ServiceAccount: the process environment of a job with its token (the credential's variables, no kubeconfig)}."""
    cluster.kubectl("apply", "-f", str(CLUSTERROLES), "-f", str(BINDING_EXAMPLE))
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": WITHOUT_INSTALL, "namespace": NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": WITHOUT_INSTALL},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "teg-istio"},
         "subjects": [{"kind": "ServiceAccount", "name": WITHOUT_INSTALL, "namespace": NAMESPACE}]}]}))
    config = json.loads(cluster.kubectl("config", "view", "--raw", "-o", "json").stdout)["clusters"][0]["cluster"]
    envs = {}
    for name in (FULL, WITHOUT_INSTALL):
        token = cluster.kubectl("create", "token", name, "-n", NAMESPACE, "--duration=1h").stdout.strip()
        envs[name] = {"K8S_AUTH_HOST": config["server"], "K8S_AUTH_API_KEY": token, "K8S_AUTH_VERIFY_SSL": "True",
                      "K8S_AUTH_SSL_CA_CERT": config["certificate-authority"], "K8S_AUTH_KUBECONFIG": "",
                      "KUBECONFIG": ""}
    return envs


def unbind(cluster):
    """What bind() applied, removed (the ClusterRoles as rbac/ has them first, undoing a test's edit of them)."""
    cluster.kubectl("apply", "-f", str(CLUSTERROLES))
    cluster.kubectl("delete", "--ignore-not-found", "--wait=false", "clusterrolebinding", WITHOUT_INSTALL)
    cluster.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", str(BINDING_EXAMPLE), "-f", str(CLUSTERROLES))


def events_since(cluster, position, users):
    """Every audit event after byte `position` of the cluster's audit log made by one of `users`."""
    return [event for event in cluster.events_since(position) if event["user"].get("username") in users]


def needed(events):
    """{(API group, resource[/subresource], verb)} of the resource requests among `events`; discovery (/api,
    /apis, /version) is left out, Kubernetes' system:discovery role grants it to every identity."""
    triples = set()
    for event in events:
        ref = event.get("objectRef")
        if not ref:
            continue
        resource = ref["resource"] + ("/" + ref["subresource"] if ref.get("subresource") else "")
        triples.add((ref.get("apiGroup") or "", resource, event["verb"]))
    return triples


def forbidden(events):
    """The requests the API server refused for want of a grant: "<verb> <group>/<resource> <URI>"."""
    refused = [e for e in events if (e.get("responseStatus") or {}).get("code") == 403]
    return sorted("%s %s/%s %s" % (e["verb"], e["objectRef"].get("apiGroup") or "", e["objectRef"]["resource"],
                                   e["requestURI"]) if e.get("objectRef") else "%s %s" % (e["verb"], e["requestURI"])
                  for e in refused)


def granted(roles=None):
    """{ClusterRole name: {(API group, resource, verb)}} of rbac/clusterrole.yml (or the parsed `roles` List)."""
    roles = roles if roles is not None else yaml.safe_load(CLUSTERROLES.read_text())
    return {role["metadata"]["name"]: {(group, resource, verb) for rule in role["rules"]
                                       for group in rule["apiGroups"] for resource in rule["resources"]
                                       for verb in rule["verbs"]}
            for role in roles["items"]}


def unused(used, grants):
    """The verbs `grants` ({role: triples}) hold that no triple of `used` is: {role: sorted triples}."""
    return {role: sorted(triples - used) for role, triples in grants.items() if triples - used}


def record(module, triples):
    USED[module] = sorted(list(t) for t in triples)
