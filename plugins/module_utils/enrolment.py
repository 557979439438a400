# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How a namespace is put into the mesh the way its owners' mesh does it, and given back on teardown: the one
rule teg_istio_prep (the TEG namespace) and expose_app (the app namespaces) follow for injection labels.

Istio reads a namespace's `istio-injection` before its `istio.io/rev`: with both, `istio-injection` wins and the
default revision injects, whatever revision the owners chose (docs/existing-mesh.md). So:
- a namespace already in the mesh (`istio-injection=enabled`, or `istio.io/rev=<revision or tag>`) is left as it
  is when the declaration asks only for "in the mesh" (`istio-injection=enabled`): its owners' revision stands;
- a declared revision (`istio.io/rev=<rev>`) replaces `istio-injection`, which would otherwise override it;
- `istio-injection=disabled` is the owners' opt-out: refused unless the declaration names the namespace
  explicitly, and then given back by teardown;
- a declaration that gives one namespace both labels is refused.
Every label changed on a namespace the collection did not create is recorded (module_utils/prior.py) in the
same patch, so teardown gives back exactly what was there.

Pure: unit-tested in tests/unit/plugins/module_utils/test_enrolment.py. It can change at any time."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.teg.istio.plugins.module_utils import prior
from ansible_collections.teg.istio.plugins.module_utils.names import (
    DATAPLANE_MODE_LABEL,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
)

INJECTION_LABEL = "istio-injection"
REVISION_LABEL = "istio.io/rev"
INJECTION_LABELS = (INJECTION_LABEL, REVISION_LABEL)
# A revision tag's MutatingWebhookConfiguration carries it beside istio.io/rev (istioctl tag set).
TAG_LABEL = "istio.io/tag"
# The labels this module decides; teardown gives back what it recorded of these and nothing else.
MESH_LABELS = (INJECTION_LABEL, REVISION_LABEL, DATAPLANE_MODE_LABEL)
LABEL_FIELDS = dict((prior.pointer("metadata", "labels", key), key) for key in MESH_LABELS)


def declaration_error(labels, where):
    """One line when the declared `labels` would give a namespace both injection labels; else None."""
    if (labels or {}).get(INJECTION_LABEL) and (labels or {}).get(REVISION_LABEL):
        return ("%s gives a namespace both %s and %s; Istio then injects with the default revision and ignores the "
                "revision: keep one" % (where, INJECTION_LABEL, REVISION_LABEL))
    return None


def _in_mesh(labels):
    return labels.get(INJECTION_LABEL) == "enabled" or bool(labels.get(REVISION_LABEL))


def set_by_collection(namespace):
    """The mesh labels of `namespace` (as read) that still carry the value the collection set, by its record: those
    are the collection's to change again, while the others are the owners'."""
    labels = ((namespace or {}).get("metadata") or {}).get("labels") or {}
    record = prior.recorded(namespace)
    return set(key for field, key in LABEL_FIELDS.items() if field in record and record[field][1] == labels.get(key))


def label_changes(current, wanted, taken_back=None, ours=()):
    """{label: value, None to remove} that puts a namespace with labels `current` into the mesh as `wanted` says
    (the labels of the mode: {istio-injection: enabled}, {istio.io/rev: <rev>}, or ambient's), taking back the
    labels `taken_back` ({label: value}) where they carry that value. `ours`: the labels the collection set
    (set_by_collection), which do not count as the owners' choice. Opt-outs are checked by opted_out_error."""
    current = current or {}
    wanted = dict(wanted or {})
    owners = dict((key, value) for key, value in current.items() if key not in ours)
    if wanted.get(INJECTION_LABEL) == "enabled" and not wanted.get(REVISION_LABEL):
        if _in_mesh(owners):
            # Already in the mesh, perhaps on a revision its owners chose: "in the mesh" asks for nothing more.
            del wanted[INJECTION_LABEL]
        if REVISION_LABEL in ours:
            # A revision the collection set earlier goes back with it.
            wanted[REVISION_LABEL] = None
    if wanted.get(REVISION_LABEL):
        # istio-injection would override the revision.
        wanted.setdefault(INJECTION_LABEL, None)
    changes = dict((key, value) for key, value in wanted.items()
                   if (value is None and key in current) or (value is not None and current.get(key) != value))
    for key, value in (taken_back or {}).items():
        if key not in wanted and current.get(key) == value:
            changes[key] = None
    return changes


def opted_out_error(namespace, current, changes, explicit, how):
    """One line when `changes` would enrol `namespace` (labels `current`) that its owners opted out with
    istio-injection=disabled, unless `explicit` (the declaration names it); `how` says which variable does."""
    if current.get(INJECTION_LABEL) == "disabled" and INJECTION_LABEL in changes and not explicit:
        return ("namespace %s is opted out of the mesh by its owners (%s=disabled): leave it out, or enrol it "
                "explicitly with %s (teardown gives %s=disabled back)" % (namespace, INJECTION_LABEL, how,
                                                                          INJECTION_LABEL))
    return None


def ours(namespace):
    """Whether the collection created `namespace` (as read): then teardown deletes it whole, and nothing is recorded."""
    return ((namespace or {}).get("metadata") or {}).get("labels", {}).get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE


def labels_patch(namespace, changes, name=None):
    """The merge-patch definition of Namespace `namespace` (as read; None: `name` is created) with the label
    `changes` and, on a namespace the collection did not create, the record of their prior values; {} for none."""
    if not changes:
        return {}
    name = ((namespace or {}).get("metadata") or {}).get("name") or name
    fields = dict((prior.pointer("metadata", "labels", key), value) for key, value in changes.items())
    patch = prior.with_record(None if namespace is None or ours(namespace) else namespace, fields)
    patch["metadata"]["name"] = name
    return dict({"apiVersion": "v1", "kind": "Namespace"}, **patch)


def restore_patch(namespace):
    """(the merge-patch definition giving `namespace` (as read) back the mesh labels recorded, or {}, and the
    labels left alone because someone changed them since the collection set them)."""
    changes, left = prior.restoration(namespace, fields=lambda field: field in LABEL_FIELDS)
    if not changes:
        return {}, []
    patch = prior.merge_patch(changes)
    patch["metadata"]["name"] = namespace["metadata"]["name"]
    return dict({"apiVersion": "v1", "kind": "Namespace"}, **patch), [LABEL_FIELDS[f] for f in left]


def revision_injectors(webhooks):
    """{revision: {"injector": name, "tags": [tag, ...]}} from the cluster's MutatingWebhookConfigurations: each
    istiod's sidecar injector (istio-sidecar-injector[-<rev>][-<namespace>], labelled istio.io/rev) and the
    revision tags pointing at it (istio-revision-tag-<tag>, labelled istio.io/tag and istio.io/rev). What
    istio_install reports of an Istio it uses, and how teg_istio_prep and expose_app enrol on it."""
    found = {}
    for webhook in sorted(webhooks or [], key=lambda w: (w.get("metadata") or {}).get("name") or ""):
        name = (webhook.get("metadata") or {}).get("name") or ""
        labels = (webhook.get("metadata") or {}).get("labels") or {}
        revision = labels.get(REVISION_LABEL)
        if not revision:
            continue
        entry = found.setdefault(revision, {"injector": None, "tags": []})
        if labels.get(TAG_LABEL):
            entry["tags"].append(labels[TAG_LABEL])
        elif name.startswith("istio-sidecar-injector") and entry["injector"] is None:
            entry["injector"] = name
    return found


def default_revision_labels(injectors, where, how):
    """(labels, error) for "in the mesh" with no revision asked for, on a mesh whose sidecar injectors are
    `injectors` ({revision: {"injector", "tags"}}, as revision_injectors reads them):
    `istio-injection=enabled` where it resolves to a revision (the default revision, or the revision tag `default`),
    or where no injector runs yet (istio_install installs one); on a mesh with revisions only, `istio.io/rev=<it>`
    when there is one, and a one-line error naming them when there are several (istio-injection=enabled would
    inject nothing there)."""
    default = {INJECTION_LABEL: "enabled"}
    if not injectors or "default" in injectors or any("default" in e.get("tags", []) for e in injectors.values()):
        return default, None
    if len(injectors) == 1:
        return {REVISION_LABEL: next(iter(injectors))}, None
    return None, ("%s: the mesh has revisions %s and no default one (no default revision, no revision tag default), so "
                  "%s=enabled would inject nothing: set %s to the revision (or tag) TEG is to join"
                  % (where, ", ".join(sorted(injectors)), INJECTION_LABEL, how))
