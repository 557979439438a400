# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: the module gatewayclass_parameters, run in-process by its action plugin or as a module
process (module_utils/_k8s_module.py). It can change at any time; do not use it from other collections."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import json

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.service import diff_objects
from ansible_collections.teg.istio.plugins.module_utils.cluster import (
    connect,
    TegIstioError,
    api_errors,
    envoyproxy_group_version,
    get_or_none,
    pick_version,
    without_managed_fields,
)
from ansible_collections.teg.istio.plugins.module_utils import prior
from ansible_collections.teg.istio.plugins.module_utils.names import FIELD_MANAGER, describe

GATEWAY_API_GROUP = "gateway.networking.k8s.io"
# The record this module kept before module_utils/prior.py: read (and converted) so that a GatewayClass pointed by
# an earlier version is still given back, removed whenever the module writes.
SET_ANNOTATION = "teg.istio/parameters-ref"
PREVIOUS_ANNOTATION = "teg.istio/previous-parameters-ref"
REF_KEYS = ("group", "kind", "name", "namespace")
REF_FIELD = prior.pointer("spec", "parametersRef")

ARGUMENT_SPEC = copy.deepcopy(AUTH_ARG_SPEC)
ARGUMENT_SPEC.update(
    name=dict(type="str", required=True),
    envoyproxy_name=dict(type="str"),
    envoyproxy_namespace=dict(type="str"),
    envoyproxy_must_exist=dict(type="bool", default=True),
    state=dict(type="str", choices=["present", "absent"], default="present"),
)
ARGUMENT_CONSTRAINTS = dict(required_if=[("state", "present", ("envoyproxy_name", "envoyproxy_namespace"))])


def _ref_string(ref):
    """A parametersRef as one comparable string, e.g. gateway.envoyproxy.io/EnvoyProxy/ns/name."""
    if not ref:
        return ""
    return "/".join(ref.get(key) or "" for key in ("group", "kind", "namespace", "name"))


def _current_ref(gatewayclass):
    ref = (gatewayclass.get("spec") or {}).get("parametersRef")
    return {key: ref.get(key) for key in REF_KEYS} if ref else None


def _annotations(gatewayclass):
    return (gatewayclass.get("metadata") or {}).get("annotations") or {}


def _legacy_entry(gatewayclass):
    """[prior, set] of parametersRef from the annotations of a version before the record; None without them."""
    annotations = _annotations(gatewayclass)
    ours = annotations.get(SET_ANNOTATION)
    if not ours:
        return None
    previous = None
    if annotations.get(PREVIOUS_ANNOTATION):
        try:
            previous = json.loads(annotations[PREVIOUS_ANNOTATION])
        except ValueError:
            raise TegIstioError("annotation %s=%r is not JSON: remove it or fix it by hand"
                                % (PREVIOUS_ANNOTATION, annotations[PREVIOUS_ANNOTATION]))
    current = (gatewayclass.get("spec") or {}).get("parametersRef")
    # The string names the reference that version set (group/kind/namespace/name): the current one when it
    # matches, else one that was changed since, which teardown leaves.
    if current and _ref_string(current) == ours:
        return [previous, current]
    parts = dict(zip(("group", "kind", "namespace", "name"), ours.split("/")))
    return [previous, dict((key, value) for key, value in parts.items() if value)]


def _with_legacy_record(gatewayclass):
    """`gatewayclass` (as read) with the annotations of a version before the record read into the record of prior
    values (module_utils/prior.py), when that record has no parametersRef yet."""
    entry = _legacy_entry(gatewayclass)
    record = prior.recorded(gatewayclass)
    if entry is None or REF_FIELD in record:
        return gatewayclass
    converted = copy.deepcopy(gatewayclass)
    annotations = converted["metadata"].setdefault("annotations", {})
    annotations[prior.PRIOR_ANNOTATION] = json.dumps(dict(record, **{REF_FIELD: entry}), sort_keys=True)
    return converted


def _legacy_removal(gatewayclass, patch):
    """`patch` that also removes the annotations of a version before the record, where `gatewayclass` has them."""
    stale = dict((key, None) for key in (SET_ANNOTATION, PREVIOUS_ANNOTATION) if key in _annotations(gatewayclass))
    if stale:
        patch.setdefault("metadata", {}).setdefault("annotations", {}).update(stale)
    return patch


def _whole(ref):
    """A merge patch merges objects key by key, so each key of a reference is set explicitly; null removes it."""
    return {key: ref.get(key) for key in REF_KEYS} if ref else None


def _present_patch(gatewayclass, wanted):
    """The JSON merge patch that makes `gatewayclass` reference `wanted`, recording the reference it replaces (the
    first one: TEG's chart sets one) in the record of prior values; None when it already references it."""
    if _ref_string(_current_ref(gatewayclass)) == _ref_string(wanted):
        return None
    patch = prior.with_record(_with_legacy_record(gatewayclass), {REF_FIELD: _whole(wanted)})
    # The resourceVersion makes the write conditional on the object read: no lost update.
    patch["metadata"]["resourceVersion"] = gatewayclass["metadata"]["resourceVersion"]
    return _legacy_removal(gatewayclass, patch)


def _absent_patch(gatewayclass):
    """(patch, reason): the JSON merge patch that takes back the reference this module set and restores the one it
    replaced, as the record says (or the annotations of a version before it); patch is None when there is nothing
    of ours to take back."""
    converted = _with_legacy_record(gatewayclass)
    record = prior.recorded(converted)
    if REF_FIELD not in record:
        return None, "has no reference set by teg.istio; left alone"
    changes, left = prior.restoration(converted, fields=lambda field: field == REF_FIELD)
    previous, value_set = record[REF_FIELD]
    if left:
        reason = ("references %s, not %s that teg.istio set; left alone"
                  % (_ref_string(_current_ref(gatewayclass)) or "nothing", _ref_string(value_set)))
    else:
        reason = ("restored %s" % _ref_string(previous)) if previous else "removed parametersRef"
    if REF_FIELD in changes:
        changes[REF_FIELD] = _whole(changes[REF_FIELD])
    patch = _legacy_removal(gatewayclass, prior.merge_patch(changes))
    patch["metadata"]["resourceVersion"] = gatewayclass["metadata"]["resourceVersion"]
    return patch, reason


def ref_after_absent(gatewayclass):
    """(parametersRef, whether state=absent changes it) of `gatewayclass` (as read) after state=absent:
    the reference this module replaced when the one it set is still in place, else the current one."""
    patch, _reason = _absent_patch(gatewayclass)
    if patch is None or "parametersRef" not in (patch.get("spec") or {}):
        return _current_ref(gatewayclass), patch is not None
    return patch["spec"]["parametersRef"], True


def _envoyproxy_api(client):
    with api_errors("discover", "the EnvoyProxy API"):
        group, version = envoyproxy_group_version(client)
    if not group:
        raise TegIstioError("no API group serves envoyproxies (neither gateway.envoyproxy.io nor "
                            "config.gateway.envoyproxy.io): install Envoy Gateway / TEG and its CRDs first")
    return group, version


def run_with_client(module, client):
    params = module.params
    name, state = params["name"], params["state"]
    what = describe("GatewayClass", name)
    with api_errors("discover", "the Gateway API"):
        version = pick_version(client, GATEWAY_API_GROUP, "gatewayclasses", ("v1", "v1beta1"))
    if not version:
        if state == "absent":
            return dict(changed=False, msg="the Gateway API is not served, so %s has nothing to take back" % what)
        raise TegIstioError("the Gateway API (gateway.networking.k8s.io gatewayclasses) is not served: install "
                            "Envoy Gateway / TEG and its CRDs first")
    api_version = "%s/%s" % (GATEWAY_API_GROUP, version)
    with api_errors("read", what):
        gatewayclass = get_or_none(client, api_version, "GatewayClass", name)
    if gatewayclass is None:
        if state == "absent":
            return dict(changed=False, msg="%s does not exist; nothing to take back" % what, api_version=api_version)
        raise TegIstioError("%s not found: check the GatewayClass name (kubectl get gatewayclass)" % what)

    if state == "present":
        group, ep_version = _envoyproxy_api(client)
        wanted = {"group": group, "kind": "EnvoyProxy", "name": params["envoyproxy_name"],
                  "namespace": params["envoyproxy_namespace"]}
        ep_what = describe("EnvoyProxy", wanted["name"], wanted["namespace"])
        if params["envoyproxy_must_exist"]:
            with api_errors("read", ep_what):
                envoyproxy = get_or_none(client, "%s/%s" % (group, ep_version), "EnvoyProxy", wanted["name"],
                                         wanted["namespace"])
            if envoyproxy is None:
                raise TegIstioError("%s not found: create it before pointing %s at it" % (ep_what, what))
        patch = _present_patch(gatewayclass, wanted)
        done = "pointed %s at %s" % (what, ep_what)
        if patch is None:
            noop = "%s already references %s" % (what, ep_what)
    else:
        patch, reason = _absent_patch(gatewayclass)
        done = "%s: %s" % (what, reason)
        noop = "%s %s" % (what, reason)

    before = without_managed_fields(gatewayclass)
    if patch is None:
        return dict(changed=False, msg=noop, api_version=api_version, parameters_ref=_current_ref(gatewayclass),
                    result=dict(before=before, after=before))
    resource = client.resource("GatewayClass", api_version)
    with api_errors("patch", what):
        # K8SClient adds dryRun=All in check mode.
        after = client.patch(resource, patch, name=name, content_type="application/merge-patch+json",
                             field_manager=FIELD_MANAGER).to_dict()
    after = without_managed_fields(after)
    match, diff = diff_objects(before, after)
    result = dict(changed=not match, api_version=api_version, parameters_ref=_current_ref(after),
                  result=dict(before=before, after=after),
                  msg=("would have " + done + " (server-side dry run)") if module.check_mode else done)
    replaced = _current_ref(gatewayclass)
    if state == "present" and replaced and REF_FIELD not in prior.recorded(_with_legacy_record(gatewayclass)):
        module.warn("%s referenced %s, whose settings no longer apply to its Gateways; the reference is "
                    "recorded in annotation %s and restored by state=absent"
                    % (what, _ref_string(replaced), prior.PRIOR_ANNOTATION))
    if module._diff:
        result["diff"] = diff
    return result


def run(module):
    return run_with_client(module, connect(module))
