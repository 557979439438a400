# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: the pure decisions of the strict_mtls role: the PeerAuthentication objects,
which namespaces STRICT reaches, which pods it would cut off, what to prune, what to patch (with the record of
prior values) on the owners' policies and what to give back to them on teardown, and which narrower policies keep
traffic out of a mesh-wide STRICT. Unit-tested in
tests/unit/plugins/module_utils/test_strict_mtls.py. It can change at any time."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.teg.istio.plugins.module_utils import prior
from ansible_collections.teg.istio.plugins.module_utils.merge_patch import apply_merge_patch
from ansible_collections.teg.istio.plugins.module_utils.names import (
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    DATAPLANE_MODE_AMBIENT,
    DATAPLANE_MODE_LABEL,
    TegIstioError,
    ambient_enrolled,
    describe,
    pod_serving,
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
    its namespace's) nor with a sidecar. Only serving pods are judged (names.pod_serving: finished pods and pods
    being deleted take no traffic)."""
    out = []
    for pod in pods or []:
        if not pod_serving(pod):
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


# Istio's PeerAuthentication scopes (https://istio.io/latest/docs/reference/config/security/peer_authentication/):
# a policy without selector in the root namespace is mesh-wide, one without selector elsewhere namespace-wide,
# one with a selector applies to those workloads; the narrowest applies, portLevelMtls overrides it per port,
# UNSET inherits from the parent. Of several selector-less policies in one namespace only the oldest is honoured.
NOT_STRICT = ("PERMISSIVE", "DISABLE")
MODE_FIELD = prior.pointer("spec", "mtls", "mode")


def _meta_of(obj):
    return (obj or {}).get("metadata") or {}


def ours(obj):
    """Whether the collection made `obj` (its label): teardown deletes those; the others it never labels."""
    return (_meta_of(obj).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE


def mode_of(obj):
    """The mTLS mode of a PeerAuthentication as read; UNSET when it has none (Istio's default)."""
    return (((obj or {}).get("spec") or {}).get("mtls") or {}).get("mode") or "UNSET"


def _selector(obj):
    return (((obj or {}).get("spec") or {}).get("selector") or {}).get("matchLabels") or {}


def _age(obj):
    meta = _meta_of(obj)
    # RFC 3339 timestamps in UTC sort as strings; the name breaks a tie within the same second.
    return meta.get("creationTimestamp") or "", meta.get("name") or ""


def honoured(policies, namespace):
    """The selector-less PeerAuthentication Istio honours in `namespace` (the oldest; None without one): in the root
    namespace the mesh-wide policy, elsewhere the namespace-wide one."""
    candidates = [p for p in policies or [] if _meta_of(p).get("namespace") == namespace and not _selector(p)]
    return min(candidates, key=_age) if candidates else None


def _key_of(obj):
    return _meta_of(obj).get("namespace"), _meta_of(obj).get("name")


def _leaves(definition):
    """{pointer: value} of the fields a declared policy sets, one per leaf, so that a merge patch of them changes
    exactly those fields of an owners' policy (a map would be merged into theirs, not replace it)."""
    spec = definition["spec"]
    out = {MODE_FIELD: spec["mtls"]["mode"]}
    for key, value in ((spec.get("selector") or {}).get("matchLabels") or {}).items():
        out[prior.pointer("spec", "selector", "matchLabels", key)] = value
    for port, entry in (spec.get("portLevelMtls") or {}).items():
        out[prior.pointer("spec", "portLevelMtls", port, "mode")] = entry["mode"]
    return out


def _owners_changes(obj, definition):
    """{pointer: value} that makes the owners' policy `obj` what `definition` declares: the leaves that differ, and
    the selector labels and port modes it has that the declaration does not (removed)."""
    wanted = _leaves(definition)
    for key in _selector(obj):
        wanted.setdefault(prior.pointer("spec", "selector", "matchLabels", key), None)
    for port in ((obj.get("spec") or {}).get("portLevelMtls") or {}):
        if prior.pointer("spec", "portLevelMtls", port, "mode") not in wanted:
            wanted[prior.pointer("spec", "portLevelMtls", port)] = None
    return _rooted(obj, dict((field, value) for field, value in wanted.items() if prior.value_at(obj, field) != value))


def _rooted(obj, leaves):
    """`leaves` ({pointer: value}) as the changes to write and record: a leaf under a map `obj` does not have is
    written as that whole map at its own pointer (recorded with prior null, so that teardown removes it rather than
    leave an empty map), and a leaf under a field recorded already updates that field's value, so that the record
    keeps one entry per field it gives back."""
    record = prior.recorded(obj)
    out = {}
    for field, value in sorted(leaves.items()):
        path = prior.segments(field)
        ancestor = next((r for r in sorted(record) if field.startswith(r + "/")), None)
        if ancestor is not None:
            depth = len(prior.segments(ancestor))
            base = out.get(ancestor, prior.value_at(obj, ancestor))
        else:
            depth = next((i for i in range(1, len(path)) if prior.value_at(obj, prior.pointer(*path[:i])) is None),
                         len(path))
            base = out.get(prior.pointer(*path[:depth]))
        if depth == len(path):
            out[field] = value
            continue
        if value is None and base is None:
            continue  # nothing there to remove
        out[prior.pointer(*path[:depth])] = apply_merge_patch(base, prior.merge_patch(
            {prior.pointer(*path[depth:]): value}))
    return out


def _patch_of(obj, patch, api_version):
    """`patch` (of spec and annotations) as a definition kubernetes.core.k8s sends as a merge patch of `obj`."""
    meta = _meta_of(obj)
    patch["metadata"] = dict(patch.get("metadata") or {}, name=meta.get("name"), namespace=meta.get("namespace"))
    return dict(patch, apiVersion=api_version, kind="PeerAuthentication")


def adopt_owners(declared, found, root_namespace):
    """(definitions, patches, kept): what to write given the PeerAuthentications `found` (all of them, as read).

    The owners' policies (not labelled as the collection's) are never taken over: where the mesh-wide policy Istio
    honours is theirs (whatever its name), or a declared namespace policy has the name of one of theirs, their
    policy gets a merge patch of only the fields that differ, with the record of prior values (prior.py) in the same
    patch, and never the label; one already as declared is left as it is (`kept`, one line each). The other
    declarations stay the collection's own (`definitions`)."""
    mesh_wide = honoured(found, root_namespace)
    by_key = dict((_key_of(obj), obj) for obj in found or [])
    definitions_out, patches, kept = [], [], []
    for definition in declared or []:
        key = (definition["metadata"]["namespace"], definition["metadata"]["name"])
        if key == (root_namespace, "default") and not _selector_of_definition(definition):
            theirs = mesh_wide if mesh_wide is not None and not ours(mesh_wide) else None
        else:
            theirs = by_key.get(key) if key in by_key and not ours(by_key[key]) else None
        if theirs is None:
            definitions_out.append(definition)
            continue
        changes = _owners_changes(theirs, definition)
        if changes:
            patches.append(_patch_of(theirs, prior.with_record(theirs, changes), definition["apiVersion"]))
        else:
            kept.append("%s, the owners' %s, is already %s: left as it is" % (
                describe("PeerAuthentication", _meta_of(theirs).get("name"), _meta_of(theirs).get("namespace")),
                "mesh-wide policy" if theirs is mesh_wide else "policy", mode_of(theirs)))
    return definitions_out, patches, kept


def _selector_of_definition(definition):
    return (definition["spec"].get("selector") or {}).get("matchLabels")


def restorations(found):
    """(patches, left) for teardown: the merge patch giving each owners' policy with a record of prior values back
    what it had (prior.restoration), and one line per field left alone because someone changed it since."""
    patches, left = [], []
    for obj in sorted(found or [], key=_key_of):
        if ours(obj):
            continue
        changes, changed_since = prior.restoration(obj)
        if changes:
            patches.append(_patch_of(obj, prior.merge_patch(changes), obj.get("apiVersion")))
        for field in changed_since:
            left.append("%s: %s was changed since teg.istio set it, so it is left as it is"
                        % (describe("PeerAuthentication", _meta_of(obj).get("name"), _meta_of(obj).get("namespace")),
                           field))
    return patches, left


def permissive_exceptions(found, namespaces, root_namespace, exempt=()):
    """'namespace/name (what)' of each PeerAuthentication in `namespaces` that keeps some traffic PERMISSIVE or
    DISABLE under a mesh-wide STRICT: the namespace-wide policy Istio honours there, a workload policy, or a port of
    one, with such a mode. `exempt` holds the (namespace, name) the user declared (an intended exception). The root
    namespace is left out: its selector-less policies are the mesh-wide one, and Istio ignores those with a selector
    there."""
    out = []
    exempt = set(tuple(k) for k in exempt or ())
    for namespace in sorted(set(namespaces or []) - set([root_namespace])):
        namespace_wide = honoured(found, namespace)
        for obj in sorted((p for p in found or [] if _meta_of(p).get("namespace") == namespace), key=_key_of):
            if _key_of(obj) in exempt:
                continue
            selector = _selector(obj)
            what = []
            if selector:
                scope = "workload %s" % ",".join("%s=%s" % i for i in sorted(selector.items()))
            elif obj is namespace_wide:
                scope = "namespace-wide"
            else:
                continue  # a second selector-less policy: Istio ignores it
            if mode_of(obj) in NOT_STRICT:
                what.append(mode_of(obj))
            ports = ((obj.get("spec") or {}).get("portLevelMtls") or {})
            what += ["port %s %s" % (port, (entry or {}).get("mode")) for port, entry in
                     sorted(ports.items(), key=lambda i: str(i[0])) if (entry or {}).get("mode") in NOT_STRICT]
            if what:
                out.append("%s/%s (%s %s)" % (namespace, _meta_of(obj).get("name"), scope, ", ".join(what)))
    return out


def exceptions_line(exceptions):
    """The one line naming the policies that keep traffic of the mesh namespaces out of a mesh-wide STRICT."""
    return ("mesh-wide STRICT does not reach all traffic of the mesh namespaces: PeerAuthentication %s keep(s) it "
            "PERMISSIVE or DISABLE; set them STRICT or UNSET, or delete them, or declare the intended ones in "
            "strict_mtls_namespace_policies" % "; ".join(exceptions))


def declared_keys(policies):
    """(namespace, name) of each declared namespace policy (the name defaults to `default`, as in definitions)."""
    return [(p.get("namespace"), p.get("name") or "default") for p in policies or []]
