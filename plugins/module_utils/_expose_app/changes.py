# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: what the expose_app role writes and removes, from the
render and what was read: the namespace labels, the objects a server-side dry run found different,
those it cannot dry-run yet, the routes and VirtualServices no longer declared, and the teardown's
label removal.

Pure: no I/O, unit-tested in tests/unit/plugins/module_utils/test_expose_app*.py. It can change at any time."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

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


def namespace_objects(plan, found, labels, sample_namespace=None, unwanted=None):
    """Namespace objects: the mode's labels on the app namespaces, and the other mode's labels (`unwanted`,
    where they carry that value) removed; the sample's namespace is created (and marked as ours) only when
    it does not exist, never claimed when someone else made it.

    `found` is check_backends' `namespaces` result: {name: {exists, labels}}."""
    out = []
    for name in plan.get("namespaces", []):
        info = found.get(name) or {}
        wanted = dict(labels)
        if name == sample_namespace and not info.get("exists"):
            wanted[MANAGED_BY_LABEL] = MANAGED_BY_VALUE
        current = info.get("labels") or {}
        # A merge patch null removes a label; only on a namespace that exists (a create takes no nulls).
        removed = dict((key, None) for key, value in (unwanted or {}).items()
                       if key not in wanted and info.get("exists") and current.get(key) == value)
        if info.get("exists") and not removed and all(current.get(k) == v for k, v in wanted.items()):
            continue
        wanted.update(removed)
        out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": wanted}})
    return out


def unlabel_patches(namespaces, names, labels):
    """Teardown: merge patches that take the injection `labels` (their keys) off the namespaces `names`
    among `namespaces` (as read), skipping those without them and those the collection created, which
    are deleted whole."""
    out = []
    for ns in namespaces or []:
        meta = ns.get("metadata") or {}
        current = meta.get("labels") or {}
        if meta.get("name") not in (names or []) or current.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE:
            continue
        present = {key: None for key in labels or {} if key in current}
        if present:
            out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": meta["name"], "labels": present}})
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
