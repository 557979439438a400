# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: the pure decisions of the strict_mtls role: the PeerAuthentication objects,
which namespaces STRICT reaches, which pods it would cut off, and what to prune. Unit-tested in
tests/unit/plugins/module_utils/test_strict_mtls.py. It can change at any time."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.teg.istio.plugins.module_utils.names import (
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    DATAPLANE_MODE_AMBIENT,
    DATAPLANE_MODE_LABEL,
    TegIstioError,
    ambient_enrolled,
    sidecar_container,
)

MODES = ("STRICT", "PERMISSIVE", "DISABLE", "UNSET")


def _key(policy):
    return policy["namespace"], policy.get("name") or "default"


def declaration_errors(policies, root_namespace):
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


def definitions(policies, root_namespace, mode, api_version):
    """The PeerAuthentications: the mesh-wide `default` in the root namespace, then each namespace policy."""
    if not api_version:
        raise TegIstioError("definitions needs the PeerAuthentication API version")
    out = [_definition("default", root_namespace, mode, api_version)]
    for policy in policies or []:
        namespace, name = _key(policy)
        out.append(_definition(name, namespace, policy.get("mode") or "STRICT", api_version,
                               policy.get("selector"), policy.get("port_level_mtls")))
    return out


def check_namespaces(mesh_namespaces, policies, mode):
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


def unmeshed_pods(pods, namespace_labels=None):
    """'namespace/name' of each running pod not in the mesh. Sidecar mode (`namespace_labels` None): without an
    istio-proxy container, sidecar or native sidecar (an init container of that name). Ambient
    (`namespace_labels` {namespace: labels}): neither enrolled by istio.io/dataplane-mode (its own label, else
    its namespace's) nor with a sidecar. Finished pods take no traffic and are left out."""
    out = []
    for pod in pods or []:
        status = pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            continue
        enrolled = sidecar_container(pod) is not None
        if namespace_labels is not None and not enrolled:
            namespace = (pod.get("metadata") or {}).get("namespace")
            enrolled = ambient_enrolled(pod, namespace_labels.get(namespace) or {})
        if not enrolled:
            meta = pod.get("metadata") or {}
            out.append("%s/%s" % (meta.get("namespace"), meta.get("name")))
    return sorted(out)


def not_enrolled_error(cut_off):
    """The refusal of ambient mode's check, one line: the pods not enrolled and how to enrol them."""
    return ("STRICT mTLS would cut off %d pod(s) not enrolled in the ambient mesh: %s; enrol them (label their namespace "
            "%s=%s: teg.istio.teg_istio_prep does TEG's, teg.istio.expose_app the apps'; and drop a pod's own "
            "%s=none), or set strict_mtls_force: true"
            % (len(cut_off), ", ".join(cut_off), DATAPLANE_MODE_LABEL, DATAPLANE_MODE_AMBIENT, DATAPLANE_MODE_LABEL))


def stale_policies(found, definitions):
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
