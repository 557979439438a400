# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: the smallest definitions the teg_istio_prep role sends, from the objects as read
and what is wanted; {} when nothing is to change, which lets the role skip the API call (kubernetes.core.k8s
sends a PATCH for every existing object it is given). Pure: unit-tested in
tests/unit/plugins/module_utils/test_teg_istio_prep.py. It can change at any time."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.teg.istio.plugins.module_utils import prior
from ansible_collections.teg.istio.plugins.module_utils.enrolment import (
    INJECTION_LABEL,
    REVISION_LABEL,
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
    TegIstioError,
)


def _wanted_mesh_labels(revision, mesh_mode):
    """The namespace labels wanted (None: removed) for `mesh_mode`."""
    # Ambient mode: ztunnel captures the pods of a namespace labelled istio.io/dataplane-mode=ambient; an injection
    # label would give them sidecars, which ztunnel then leaves alone, so both injection labels go.
    if mesh_mode == "ambient":
        return {DATAPLANE_MODE_LABEL: DATAPLANE_MODE_AMBIENT, INJECTION_LABEL: None, REVISION_LABEL: None}
    if revision:
        return {REVISION_LABEL: revision}
    return {INJECTION_LABEL: "enabled"}


def mesh_labels_patch(namespace, revision="", state="present", mesh_mode="sidecar", enrol_opted_out=False):
    """(merge-patch definition, error): the labels that put `namespace` (a Namespace as read) into the mesh the way
    module_utils/enrolment.py says (sidecar mode: istio-injection=enabled unless it is already in the mesh, or
    istio.io/rev=<revision> when one is given; ambient mode: istio.io/dataplane-mode=ambient without either
    injection label), with the record of the owners' values it changes; with state="absent", the patch that gives
    back what the record says. Outside ambient mode an istio.io/dataplane-mode=ambient label is taken back (the
    value ambient only: another value, such as none, is not one this collection sets). {} when nothing changes."""
    if not namespace or not (namespace.get("metadata") or {}).get("name"):
        raise TegIstioError("mesh_labels_patch needs a Namespace object as read from the API server")
    if state != "present":
        return restore_patch(namespace)[0], None
    labels = namespace["metadata"].get("labels") or {}
    taken_back = {} if mesh_mode == "ambient" else {DATAPLANE_MODE_LABEL: DATAPLANE_MODE_AMBIENT}
    changes = label_changes(labels, _wanted_mesh_labels(revision, mesh_mode), taken_back, set_by_collection(namespace))
    error = opted_out_error(namespace["metadata"]["name"], labels, changes, enrol_opted_out,
                            "teg_istio_prep_enrol_opted_out: true")
    return labels_patch(namespace, changes), error


def _check_annotations(annotations):
    if not isinstance(annotations, dict) or not annotations:
        raise TegIstioError("pod annotations must be a non-empty mapping of names to strings")
    for key, value in annotations.items():
        if not isinstance(value, str):
            # null in a merge patch would delete the annotation; "" is the value that disables
            # inbound capture (traffic.sidecar.istio.io/includeInboundPorts).
            raise TegIstioError('pod annotation %s must be a string (write "" for an empty value), got %r'
                                % (key, value))


def _workload_key(kubernetes):
    # EG v1.5+ can run Envoy as a DaemonSet; its pods take annotations from envoyDaemonSet, and the
    # CRD refuses envoyDeployment next to it.
    return "envoyDaemonSet" if (kubernetes or {}).get("envoyDaemonSet") is not None else "envoyDeployment"


def envoyproxy_pod_annotations_patch(envoyproxy, annotations, api_version, name, namespace, remove=()):
    """Definition that gives the Envoy pods of an EnvoyProxy the pod `annotations`.

    `envoyproxy` is the object as read, or None/{} when it does not exist: then the whole new
    EnvoyProxy (labelled managed-by teg.istio) is returned. For an existing one, only the missing or
    different annotations are returned as a merge patch, so every other setting and annotation stays;
    those of `remove` it carries (the other mesh mode's, not in `annotations`) are taken off in the same patch.
    On an EnvoyProxy the collection did not create, the patch carries the record of the annotations' prior
    values (module_utils/prior.py), which teardown gives back (envoyproxy_restoration)."""
    _check_annotations(annotations)
    if not envoyproxy:
        return new_envoyproxy(api_version, name, namespace, annotations)
    provider = (envoyproxy.get("spec") or {}).get("provider") or {}
    if provider and provider.get("type") != "Kubernetes":
        raise TegIstioError("EnvoyProxy %s/%s has provider type %s; pod annotations need type Kubernetes"
                            % (namespace, name, provider.get("type")))
    kubernetes = provider.get("kubernetes") or {}
    workload = _workload_key(kubernetes)
    current = ((kubernetes.get(workload) or {}).get("pod") or {}).get("annotations") or {}
    missing = {key: value for key, value in annotations.items() if current.get(key) != value}
    # The annotations stay a non-empty map (`annotations` is never empty), so nulling keys leaves no empty map.
    missing.update((key, None) for key in remove if key in current and key not in annotations)
    if not missing:
        return {}
    # On an EnvoyProxy the collection did not create, the same patch records each annotation's prior value.
    fields = dict((_annotation_field(workload, key), value) for key, value in missing.items())
    patch = prior.with_record(None if ours(envoyproxy) else envoyproxy, fields)
    # type is required by the schema once provider exists; it is already Kubernetes or absent.
    patch["spec"]["provider"]["type"] = "Kubernetes"
    patch.setdefault("metadata", {}).update(name=name, namespace=namespace)
    return dict({"apiVersion": api_version, "kind": "EnvoyProxy"}, **patch)


def _annotation_field(workload, key):
    return prior.pointer("spec", "provider", "kubernetes", workload, "pod", "annotations", key)


def _recorded_annotation(field):
    path = prior.segments(field)
    return len(path) == 7 and path[:3] == ["spec", "provider", "kubernetes"] and path[4:6] == ["pod", "annotations"]


def envoyproxy_restoration(envoyproxy, api_version):
    """(merge-patch definition, fields left): what teardown writes to give an EnvoyProxy the collection did not create
    (as read) back the pod annotations its record says it had (prior.restoration), leaving no empty map behind
    where the collection's were the only ones; ({}, []) without a record. `left`: the annotations someone
    changed since the collection set them, left as they are."""
    changes, left = prior.restoration(envoyproxy, fields=_recorded_annotation)
    if not changes:
        return {}, left
    patch = prior.merge_patch(changes)
    kubernetes = ((envoyproxy.get("spec") or {}).get("provider") or {}).get("kubernetes") or {}
    workload = _workload_key(kubernetes)
    current = ((kubernetes.get(workload) or {}).get("pod") or {}).get("annotations") or {}
    given_back = dict((prior.segments(field)[-1], value) for field, value in changes.items()
                      if _recorded_annotation(field) and prior.segments(field)[3] == workload)
    kept = [key for key in current if key not in given_back] + [key for key, value in given_back.items() if value is not None]
    if current and not kept:
        patch["spec"]["provider"]["kubernetes"] = _emptied(kubernetes, workload)
    if "spec" in patch:
        patch["spec"]["provider"]["type"] = "Kubernetes"
    patch["metadata"].update(name=envoyproxy["metadata"]["name"], namespace=envoyproxy["metadata"]["namespace"])
    return dict({"apiVersion": api_version, "kind": "EnvoyProxy"}, **patch), left


def _emptied(kubernetes, workload):
    """The merge patch of spec.provider.kubernetes that removes the workload's pod annotations, nulling the highest
    level that would hold nothing else, so the EnvoyProxy reads as it did before the annotations were added."""
    pod = (kubernetes.get(workload) or {}).get("pod") or {}
    if len(pod) > 1:
        return {workload: {"pod": {"annotations": None}}}
    if len(kubernetes.get(workload) or {}) > 1:
        return {workload: {"pod": None}}
    if len(kubernetes) > 1:
        return {workload: None}
    return None


def new_envoyproxy(api_version, name, namespace, annotations):
    """The whole EnvoyProxy this collection creates, labelled managed-by teg.istio: its Envoy pods get the pod
    `annotations`; with none, only the provider type."""
    provider = {"type": "Kubernetes"}
    if annotations:
        provider["kubernetes"] = {"envoyDeployment": {"pod": {"annotations": dict(annotations)}}}
    return {
        "apiVersion": api_version, "kind": "EnvoyProxy",
        "metadata": {"name": name, "namespace": namespace, "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE}},
        "spec": {"provider": provider},
    }
