# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: what the expose_app role writes and removes, from the
render and what was read: the namespace labels, the objects a server-side dry run found different,
those it cannot dry-run yet, the routes and VirtualServices no longer declared, and the teardown's
label removal.

Pure: no I/O, unit-tested in tests/unit/plugins/module_utils/test_expose_app*.py. It can change at any time."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.teg.istio.plugins.module_utils.enrolment import (
    label_changes,
    labels_patch,
    opted_out_error,
    ours,
    restore_patch,
    set_by_collection,
)
from ansible_collections.teg.istio.plugins.module_utils.names import (
    DATAPLANE_MODE_AMBIENT,
    DATAPLANE_MODE_LABEL,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
)


def mode_labels(mesh_mode, injection_labels):
    """(the labels the app namespaces get, the labels taken off them) in `mesh_mode`.

    `injection_labels` (expose_app_namespace_labels) are sidecar mode's. Ambient enrols the namespace with
    istio.io/dataplane-mode=ambient instead and takes the injection labels back where they still have the
    value sidecar mode set: istiod injects a sidecar wherever injection is on, and a pod with a sidecar is not
    captured by ztunnel. Sidecar mode takes back the ambient label the same way."""
    ambient = {DATAPLANE_MODE_LABEL: DATAPLANE_MODE_AMBIENT}
    if mesh_mode == "ambient":
        return ambient, dict(injection_labels or {})
    return dict(injection_labels or {}), ambient


def namespace_objects(plan, found, labels, sample_namespace=None, unwanted=None, enrol_opted_out=()):
    """(Namespace objects, errors): the mode's labels on the app namespaces the way module_utils/enrolment.py
    says (a namespace already in the mesh, on any revision, is left as it is; an opted-out one is refused unless
    `enrol_opted_out` names it), and the other mode's labels (`unwanted`, where they carry that value) removed,
    each change recorded on a namespace the collection did not create; the sample's namespace is created (and
    marked as ours) only when it does not exist, never claimed when someone else made it.

    `found` is check_backends' `namespaces` result: {name: {exists, labels, object}}."""
    out, errors = [], []
    for name in plan.get("namespaces", []):
        info = found.get(name) or {}
        if not info.get("exists"):
            # A create takes no nulls.
            wanted = dict((k, v) for k, v in labels.items() if v is not None)
            if name == sample_namespace:
                wanted[MANAGED_BY_LABEL] = MANAGED_BY_VALUE
            out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": wanted}})
            continue
        current = info.get("labels") or {}
        changes = label_changes(current, labels, unwanted, set_by_collection(info.get("object")))
        error = opted_out_error(name, current, changes, name in (enrol_opted_out or ()),
                                "expose_app_enrol_opted_out: [%s]" % name)
        if error:
            errors.append(error)
        elif changes:
            out.append(labels_patch(info.get("object") or {"metadata": {"name": name, "labels": current}}, changes))
    return out, errors


def unlabel_patches(namespaces, names):
    """Teardown: merge patches that give the namespaces `names` among `namespaces` (as read) back the mesh labels
    the collection's record on each says it changed (module_utils/prior.py), skipping those without a record and
    those the collection created, which are deleted whole."""
    out = []
    for ns in namespaces or []:
        if ns["metadata"].get("name") not in (names or []) or ours(ns):
            continue
        patch = restore_patch(ns)[0]
        if patch:
            out.append(patch)
    return out


def stale_objects(found, plan):
    """Objects the collection made for this Gateway that the plan no longer declares."""
    wanted = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in plan.get("objects", [])}
    out = []
    for obj in found or []:
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        if labels.get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE:
            continue
        if (obj.get("kind"), meta.get("namespace"), meta.get("name")) in wanted:
            continue
        out.append({"apiVersion": obj["apiVersion"], "kind": obj["kind"],
                    "metadata": {"name": meta["name"], "namespace": meta.get("namespace")}})
    return sorted(out, key=lambda o: (o["kind"], o["metadata"].get("namespace") or "", o["metadata"]["name"]))


def split_pending(definitions, new_namespaces, pending_kinds=None):
    """Split definitions into those a dry run can check and those it cannot yet.

    The namespaces this run creates do not exist yet, and the kinds of an Istio install that was only
    predicted are not served yet (plan.with_predictions), so the API server cannot dry-run those
    objects: they are written as they are, or in check mode reported as to be created."""
    new = set(new_namespaces or [])
    kinds = set(pending_kinds or [])

    def _pending(d):
        return d["metadata"].get("namespace") in new or d["kind"] in kinds

    return {"ready": [d for d in definitions if not _pending(d)], "pending": [d for d in definitions if _pending(d)]}


def known_absent(definitions, listed):
    """The definitions of kinds and namespaces the read listed in full (`listed`, from check_backends) that
    are not among them: they will be created, which needs no dry run to tell."""
    out = []
    for d in definitions:
        found = listed.get((d["kind"], d["metadata"].get("namespace")))
        if found is not None and d["metadata"]["name"] not in found:
            out.append(d)
    return out


def describe_all(definitions):
    """'Kind ns/name' for each definition, for messages."""
    out = []
    for d in definitions or []:
        meta = d["metadata"]
        out.append("%s %s" % (d["kind"], "%s/%s" % (meta["namespace"], meta["name"]) if meta.get("namespace")
                              else meta["name"]))
    return out
