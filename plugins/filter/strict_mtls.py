# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure logic for the strict_mtls role: the PeerAuthentication objects, which namespaces STRICT
reaches, which pods it would cut off, and what to write or prune.

Nothing here talks to the API server: the role feeds in what cluster_facts and kubernetes.core
read, so each decision is unit-tested in tests/unit/test_strict_mtls.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError
from ansible_collections.teg.istio.plugins.module_utils.merge_patch import pending_definitions
from ansible_collections.teg.istio.plugins.module_utils.names import MANAGED_BY_LABEL, MANAGED_BY_VALUE

MODES = ("STRICT", "PERMISSIVE", "DISABLE", "UNSET")
SIDECAR = "istio-proxy"


def _key(policy):
    return policy["namespace"], policy.get("name") or "default"


def strict_mtls_errors(policies, root_namespace):
    """Declarations the API server or Istio would refuse, or that contradict the mesh-wide policy, as
    one-line messages (empty when all is well)."""
    errors, seen = [], set()
    for policy in policies or []:
        namespace, name = _key(policy)
        where = "strict_mtls_namespace_policies entry %s/%s" % (namespace, name)
        if (namespace, name) in seen:
            errors.append("%s is declared twice: keep one" % where)
        seen.add((namespace, name))
        match_labels = (policy.get("selector") or {})
        if namespace == root_namespace and not match_labels:
            # A selector-less policy in the root namespace is mesh-wide: it would compete with `default`.
            errors.append("%s has no selector in the root namespace, so it would be a second mesh-wide policy: "
                          "set strict_mtls_mode instead, or give it a selector" % where)
        ports = policy.get("port_level_mtls") or {}
        if ports and not match_labels:
            # Istio's CRD (1.2x CEL rule "portLevelMtls requires selector") and istiod's webhook refuse it.
            errors.append("%s sets port_level_mtls without a selector: Istio accepts port-level modes only "
                          "for selected workloads, add a selector" % where)
        for port, mode in ports.items():
            try:
                number = int(port)
            except (TypeError, ValueError):
                number = 0
            if not 0 < number <= 65535:
                errors.append("%s: port_level_mtls key %r is not a port number (1-65535)" % (where, port))
            if mode not in MODES:
                errors.append("%s: port_level_mtls mode %r for port %s is not one of %s"
                              % (where, mode, port, ", ".join(MODES)))
    return errors


def _definition(name, namespace, mode, api_version, selector=None, ports=None):
    spec = {
        "mtls": {"mode": mode},
        # Explicit nulls: a JSON merge patch then removes a selector or port modes that an earlier run
        # declared and this one does not (on create the API server drops them).
        "selector": {"matchLabels": dict(selector)} if selector else None,
        "portLevelMtls": dict((str(int(p)), {"mode": m}) for p, m in sorted(ports.items(), key=lambda i: int(i[0])))
        if ports else None,
    }
    return {
        "apiVersion": api_version,
        "kind": "PeerAuthentication",
        "metadata": {"name": name, "namespace": namespace, "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE}},
        "spec": spec,
    }


def strict_mtls_policies(policies, root_namespace, mode, api_version):
    """The PeerAuthentications: the mesh-wide `default` in the root namespace, then each namespace policy."""
    if not api_version:
        raise AnsibleFilterError("strict_mtls_policies needs the PeerAuthentication API version")
    out = [_definition("default", root_namespace, mode, api_version)]
    for policy in policies or []:
        namespace, name = _key(policy)
        out.append(_definition(name, namespace, policy.get("mode") or "STRICT", api_version,
                               policy.get("selector"), policy.get("port_level_mtls")))
    return out


def strict_mtls_check_namespaces(mesh_namespaces, policies, mode):
    """The namespaces whose pods STRICT would reach, to be checked for sidecars.

    A namespace counts when its effective namespace-wide mode is STRICT (its own selector-less policy,
    or the mesh-wide mode when it has none or UNSET), or when a selector policy there is STRICT."""
    policies = policies or []
    namespace_wide = dict((p["namespace"], p.get("mode") or "STRICT") for p in policies if not p.get("selector"))
    out = set()
    for namespace in set(mesh_namespaces or []) | set(p["namespace"] for p in policies):
        own = namespace_wide.get(namespace, "UNSET")
        if (mode if own == "UNSET" else own) == "STRICT":
            out.add(namespace)
    out |= set(p["namespace"] for p in policies if p.get("selector") and (p.get("mode") or "STRICT") == "STRICT")
    return sorted(out)


def strict_mtls_unmeshed(pods):
    """'namespace/name' of each running pod without an istio-proxy container, sidecar or native sidecar
    (an init container of that name). Finished pods take no traffic and are left out."""
    out = []
    for pod in pods or []:
        status = pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            continue
        spec = pod.get("spec") or {}
        names = set(c.get("name") for c in (spec.get("containers") or []) + (spec.get("initContainers") or []))
        if SIDECAR not in names:
            meta = pod.get("metadata") or {}
            out.append("%s/%s" % (meta.get("namespace"), meta.get("name")))
    return sorted(out)


def strict_mtls_pending(definitions, found):
    """The definitions that are not in place: absent from `found` (the PeerAuthentications this
    collection made, as read) or changed by their merge patch. Only these go to the server-side dry
    run, so a run with nothing to do sends no request for them at all."""
    return pending_definitions(definitions, found)


def strict_mtls_changed(definitions, dry_run):
    """The definitions a server-side dry run of kubernetes.core.k8s found different from the cluster.

    k8s returns one result per definition, each with its own `changed`; with a single definition it
    returns that result bare, whose `changed` the task's `changed_when: false` has overwritten, so there
    a create or a non-empty diff (the task runs with diff on) is what tells. Writing only these keeps a
    run with nothing to do free of write requests."""
    if not definitions or not dry_run or dry_run.get("skipped"):
        return []
    results = (dry_run.get("result") or {}).get("results")
    if results is None:
        if len(definitions) != 1:
            raise AnsibleFilterError("dry run returned 1 result for %d definitions" % len(definitions))
        diff = dry_run.get("diff") or {}
        changed = dry_run.get("method") == "create" or bool(diff.get("before") or diff.get("after"))
        return list(definitions) if changed else []
    if len(results) != len(definitions):
        raise AnsibleFilterError("dry run returned %d results for %d definitions" % (len(results), len(definitions)))
    return [d for d, r in zip(definitions, results) if r.get("changed")]


def strict_mtls_stale(found, definitions):
    """The PeerAuthentications the collection made (labelled) that `definitions` no longer declares."""
    wanted = set((d["metadata"]["namespace"], d["metadata"]["name"]) for d in definitions or [])
    out = []
    for obj in found or []:
        meta = obj.get("metadata") or {}
        if (meta.get("labels") or {}).get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE:
            continue
        if (meta.get("namespace"), meta.get("name")) in wanted:
            continue
        out.append({"apiVersion": obj.get("apiVersion"), "kind": "PeerAuthentication",
                    "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")}})
    return sorted(out, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))


def strict_mtls_reads(check_namespaces, state):
    """What the role reads, as items of teg.istio.cluster_facts `objects`: the PeerAuthentications
    this collection made, then (state present) all namespaces and the pods of each namespace STRICT
    reaches. One read, so that the role costs one module run however many namespaces it checks."""
    reads = [{"kind": "PeerAuthentication", "label_selectors": ["%s=%s" % (MANAGED_BY_LABEL, MANAGED_BY_VALUE)]}]
    if state == "present":
        reads.append({"kind": "Namespace", "api_version": "v1"})
        reads.extend({"kind": "Pod", "api_version": "v1", "namespace": ns} for ns in check_namespaces)
    return reads


class FilterModule(object):
    def filters(self):
        return {
            "strict_mtls_errors": strict_mtls_errors,
            "strict_mtls_policies": strict_mtls_policies,
            "strict_mtls_check_namespaces": strict_mtls_check_namespaces,
            "strict_mtls_unmeshed": strict_mtls_unmeshed,
            "strict_mtls_pending": strict_mtls_pending,
            "strict_mtls_changed": strict_mtls_changed,
            "strict_mtls_stale": strict_mtls_stale,
            "strict_mtls_reads": strict_mtls_reads,
        }
