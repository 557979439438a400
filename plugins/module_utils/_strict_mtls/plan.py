# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: the plan of the strict_mtls role (step 6: PeerAuthentication default in the mesh
root namespace STRICT, after checking that no pod in the mesh's namespaces would be cut off). One read;
the policies not already in place as read go to a server-side dry run, and only those that differ are
written. It can change at any time."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.teg.istio.plugins.module_utils._diffs import changed_definitions, dry_run_diffs, what
from ansible_collections.teg.istio.plugins.module_utils._strict_mtls.policies import (
    adopt_owners,
    check_namespaces,
    declared_keys,
    declaration_errors,
    definitions,
    exceptions_line,
    not_enrolled_error,
    permissive_exceptions,
    restorations,
    stale_policies,
    unmeshed_pods,
)
from ansible_collections.teg.istio.plugins.module_utils.merge_patch import pending_definitions


def reads(settings, reached):
    # Every PeerAuthentication, not only the collection's: the owners' mesh-wide policy is adopted, not taken
    # over; their records of prior values are given back on teardown; their narrower policies are reported.
    out = {"policies": {"kind": "PeerAuthentication"}}
    if settings["state"] == "present":
        out["namespaces"] = {"kind": "Namespace", "api_version": "v1"}
        out.update(("pods in %s" % ns, {"kind": "Pod", "api_version": "v1", "namespace": ns}) for ns in reached)
    return out


def _deployment_of(pod):
    """The Deployment a pod belongs to (through its ReplicaSet, named <deployment>-<pod-template-hash>)."""
    meta = pod.get("metadata") or {}
    template_hash = (meta.get("labels") or {}).get("pod-template-hash")
    for owner in meta.get("ownerReferences") or []:
        if owner.get("kind") == "ReplicaSet" and template_hash and owner.get("name", "").endswith("-" + template_hash):
            return owner["name"][:-len(template_hash) - 1]
    return None


def _not_restarted(pods, predicted):
    """The pods that no role before this one restarts in the same run: teg_restart's restarted pods come
    back through the sidecar injector of the namespace it just labelled."""
    restarted = (predicted or {}).get("restarted") or {}
    return [p for p in pods
            if _deployment_of(p) not in (restarted.get((p.get("metadata") or {}).get("namespace")) or [])]


def _namespace_labels(namespaces, predicted):
    """{namespace: labels} as read, with the labels the roles before this one set in the same run (predicted:
    in check mode they are not on the namespaces yet; a null in a prediction removes a label)."""
    out = dict((ns["metadata"]["name"], dict(ns["metadata"].get("labels") or {})) for ns in namespaces or [])
    predictions = dict(((predicted or {}).get("namespaces")) or {})
    teg = (predicted or {}).get("teg_namespace") or {}
    if teg.get("name"):
        predictions[teg["name"]] = teg.get("labels") or {}
    for name, labels in predictions.items():
        merged = out.setdefault(name, {})
        merged.update(labels or {})
        for key in [k for k, v in merged.items() if v is None]:
            del merged[key]
    return out


def plan(view, settings, predicted, check_mode):
    errors = declaration_errors(settings["namespace_policies"], settings["root_namespace"])
    reached = check_namespaces(settings["mesh_namespaces"], settings["namespace_policies"], settings["mode"])
    facts = view.facts(parts={"istio_apis"})
    read = view.read(facts, reads(settings, reached))
    api_version = facts["istio"]["peerauthentication_api_version"]
    predicted_api = ((predicted or {}).get("istio") or {}).get("peerauthentication_api_version")
    warnings = []
    if settings["state"] == "present" and api_version is None and predicted_api is None:
        # Alone in check mode, an istio_install before it may only have been predicted; with predictions or
        # when site.yml plans every role, what the roles before it do is known, so it is an error.
        if not check_mode or predicted or settings.get("planning"):
            return {"errors": ["PeerAuthentication (security.istio.io) is not served by this cluster: install Istio "
                               "first (teg.istio.istio_install), then run strict_mtls again"] + errors}
        warnings.append("PeerAuthentication is not served yet; in check mode this is expected when istio_install runs "
                        "before this role, and nothing can be compared. A real run of strict_mtls alone would refuse.")
        return {"errors": errors, "warnings": warnings, "writes": {"apply": [], "prune": [], "would_create": []},
                "changes": False}
    if errors:
        return {"errors": errors}
    found = read["policies"]["resources"]
    kept, patches = [], []
    if settings["state"] == "absent":
        declared = []
        patches, left = restorations(found)
        warnings.extend(left)
    else:
        declared, patches, kept = adopt_owners(definitions(
            settings["namespace_policies"], settings["root_namespace"], settings["mode"], api_version or predicted_api),
            found, settings["root_namespace"])
        if settings["mode"] == "STRICT":
            exceptions = permissive_exceptions(found, settings["mesh_namespaces"], settings["root_namespace"],
                                               declared_keys(settings["namespace_policies"]))
            if exceptions:
                warnings.append(exceptions_line(exceptions))
    new_namespaces = []
    if settings["state"] == "present":
        existing = set(ns["metadata"]["name"] for ns in read["namespaces"]["resources"])
        # A namespace a role before this one creates (istio_install's) exists by the time this one writes.
        new_namespaces = sorted(set(((predicted or {}).get("namespaces") or {}).keys()) - existing)
        existing |= set(new_namespaces)
        wanted = [settings["root_namespace"]] + [p["namespace"] for p in settings["namespace_policies"]]
        missing = sorted(set(ns for ns in wanted if ns not in existing))
        if missing:
            return {"errors": ["namespace(s) %s not found: create them, or correct strict_mtls_root_namespace / "
                               "strict_mtls_namespace_policies" % ", ".join(missing)]}
        pods = [pod for ns in reached for pod in read["pods in %s" % ns]["resources"]]
        ambient = settings.get("mesh_mode") == "ambient"
        labels = _namespace_labels(read["namespaces"]["resources"], predicted if check_mode else {}) if ambient else None
        cut_off = unmeshed_pods(_not_restarted(pods, predicted if check_mode else {}), labels)
        if cut_off and not settings["force"] and ambient:
            return {"errors": [not_enrolled_error(cut_off)]}
        if cut_off and not settings["force"]:
            return {"errors": ["STRICT mTLS would cut off %d pod(s) without an istio-proxy sidecar: %s; restart them into "
                               "the mesh (namespace label istio-injection=enabled, then teg.istio.teg_restart or a "
                               "rollout restart), or set strict_mtls_force: true" % (len(cut_off), ", ".join(cut_off))]}
        if cut_off:
            warnings.append("strict_mtls_force is set; STRICT mTLS cuts off %d pod(s) %s: %s"
                            % (len(cut_off), "not enrolled in the ambient mesh" if ambient
                               else "without an istio-proxy sidecar", ", ".join(cut_off)))
    # What is already in place as read needs no dry run: a merge patch of it would change nothing.
    pending = pending_definitions(declared, found) + patches
    if api_version is None:
        # Istio is only predicted: nothing can be dry-run yet.
        ready, later = [], pending
    else:
        # Nor can what goes into a namespace that does not exist yet.
        ready = [d for d in pending if d["metadata"]["namespace"] not in new_namespaces]
        later = [d for d in pending if d["metadata"]["namespace"] in new_namespaces]
    results = view.dry_run(ready) if ready else []
    changed = changed_definitions(ready, results)
    # In a real run the role's own plan runs after the roles before it wrote, so `later` is empty then.
    would_create = [what(d) for d in later]
    return {
        "errors": [],
        "warnings": warnings,
        "writes": {"apply": changed, "prune": stale_policies(found, declared), "would_create": would_create},
        "kept": kept,
        "changes": bool(changed or would_create or stale_policies(found, declared)),
        "diff": dry_run_diffs(ready, results),
    }
