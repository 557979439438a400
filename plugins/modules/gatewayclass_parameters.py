#!/usr/bin/python
# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: gatewayclass_parameters
short_description: Point a GatewayClass at an EnvoyProxy, or take back a reference it set
version_added: 0.1.0
description:
  - Sets C(spec.parametersRef) of an existing GatewayClass to an existing EnvoyProxy, always with
    C(group), C(kind) and C(namespace). Envoy Gateway up to v1.6 requires the namespace, and up to
    v1.0 also requires the EnvoyProxy to be in Envoy Gateway's own namespace.
  - Finds which API group serves C(envoyproxies) (C(config.gateway.envoyproxy.io) up to Envoy Gateway
    v0.5, C(gateway.envoyproxy.io) from v0.6) and which version serves GatewayClass
    (C(gateway.networking.k8s.io/v1) where served, else C(v1beta1)). Nobody has to name an API
    version.
  - Fails with one line when the GatewayClass or the EnvoyProxy does not exist. Unlike
    C(kubernetes.core.k8s) with C(state=patched), it never skips a missing object silently.
  - Records what it set in the GatewayClass annotation C(teg.istio/parameters-ref), and a reference
    it replaced in C(teg.istio/previous-parameters-ref). With O(state=absent) it removes only a
    reference it set, and puts the replaced one back (for example TEG's own C(teg-envoy-proxy)).
author:
  - teg.istio maintainers (@teg-istio)
options:
  name:
    description: Name of the GatewayClass.
    type: str
    required: true
  envoyproxy_name:
    description: Name of the EnvoyProxy to reference. Required with O(state=present).
    type: str
  envoyproxy_namespace:
    description:
      - Namespace of the EnvoyProxy. Required with O(state=present).
      - On Envoy Gateway up to v1.0 it must be the namespace Envoy Gateway runs in.
    type: str
  envoyproxy_must_exist:
    description:
      - Fail when the EnvoyProxy does not exist.
      - Set it to V(false) only in check mode, when an earlier task of the same run would have created
        the EnvoyProxy. Its creation was then only a dry run, so the object cannot be read back.
    type: bool
    default: true
  state:
    description:
      - V(present) makes the GatewayClass reference the EnvoyProxy.
      - V(absent) removes the reference if this module set it and it is still in place, and restores
        the reference it replaced. Any other reference is left alone.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - teg.istio._attributes
attributes:
  check_mode:
    support: full
    details: The patch is sent as a server-side dry run (C(dryRun=All)), so the API server validates it and nothing is stored.
  diff_mode:
    support: full
    details: Shows the GatewayClass before and after the change.
  idempotent:
    support: full
    details: Reads first and sends no request when the reference is already as wanted.
requirements:
  - python >= 3.9
  - kubernetes >= 24.2.0
"""

EXAMPLES = r"""
- name: Point GatewayClass teg at the EnvoyProxy that adds the sidecar annotation
  teg.istio.gatewayclass_parameters:
    name: teg
    envoyproxy_name: data-plane-sidecars
    envoyproxy_namespace: envoy-gateway-system

- name: Take the reference back (restores the one it replaced, if any)
  teg.istio.gatewayclass_parameters:
    name: teg
    state: absent
"""

RETURN = r"""
msg:
  description: What was done, or why nothing was done.
  returned: always
  type: str
parameters_ref:
  description: C(spec.parametersRef) of the GatewayClass after the change, or C(null) when it has none.
  returned: success
  type: dict
  sample: {group: gateway.envoyproxy.io, kind: EnvoyProxy, name: data-plane-sidecars, namespace: envoy-gateway-system}
api_version:
  description: The GatewayClass API version used.
  returned: success
  type: str
  sample: gateway.networking.k8s.io/v1
result:
  description: The GatewayClass before and after the change, without C(metadata.managedFields).
  returned: success
  type: dict
  contains:
    before:
      description: The GatewayClass as read.
      type: dict
    after:
      description:
        - The GatewayClass as the API server returned it after the patch (the dry-run result in check mode).
        - The same as C(before) when nothing was changed.
      type: dict
diff:
  description: Before and after of what changed.
  returned: when diff mode is on and something changed
  type: dict
"""

import copy
import json

from ansible_collections.kubernetes.core.plugins.module_utils.ansiblemodule import AnsibleModule
from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.service import diff_objects
from ansible_collections.teg.istio.plugins.module_utils.cluster import (
    TegIstioError,
    api_errors,
    envoyproxy_group_version,
    get_or_none,
    pick_version,
    without_managed_fields,
)
from ansible_collections.teg.istio.plugins.module_utils.names import describe

FIELD_MANAGER = "teg.istio"
GATEWAY_API_GROUP = "gateway.networking.k8s.io"
SET_ANNOTATION = "teg.istio/parameters-ref"
PREVIOUS_ANNOTATION = "teg.istio/previous-parameters-ref"
REF_KEYS = ("group", "kind", "name", "namespace")


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


def _present_patch(gatewayclass, wanted):
    """The JSON merge patch that makes `gatewayclass` reference `wanted`; None when it already does."""
    current = _current_ref(gatewayclass)
    if _ref_string(current) == _ref_string(wanted):
        return None
    annotations = {SET_ANNOTATION: _ref_string(wanted)}
    # Remember the reference being replaced (TEG's chart sets one), unless it is one this module set
    # itself: then the original is already recorded.
    if current and _ref_string(current) != _annotations(gatewayclass).get(SET_ANNOTATION):
        annotations[PREVIOUS_ANNOTATION] = json.dumps(current, sort_keys=True)
    return {
        # The resourceVersion makes the write conditional on the object read: no lost update.
        "metadata": {"resourceVersion": gatewayclass["metadata"]["resourceVersion"], "annotations": annotations},
        "spec": {"parametersRef": dict(wanted)},
    }


def _absent_patch(gatewayclass):
    """(patch, reason): the JSON merge patch that takes back the reference this module set and
    restores the one it replaced; patch is None when there is nothing of ours to take back."""
    annotations = _annotations(gatewayclass)
    ours = annotations.get(SET_ANNOTATION)
    current = _current_ref(gatewayclass)
    if not ours:
        return None, "has no reference set by teg.istio; left alone"
    if _ref_string(current) != ours:
        return None, ("references %s, not %s that teg.istio set; left alone"
                      % (_ref_string(current) or "nothing", ours))
    previous = None
    if annotations.get(PREVIOUS_ANNOTATION):
        try:
            previous = json.loads(annotations[PREVIOUS_ANNOTATION])
        except ValueError:
            raise TegIstioError("annotation %s=%r is not JSON: remove it or fix it by hand"
                                % (PREVIOUS_ANNOTATION, annotations[PREVIOUS_ANNOTATION]))
    # A merge patch merges objects key by key, so each key is set explicitly; null removes it.
    ref = {key: previous.get(key) for key in REF_KEYS} if previous else None
    patch = {
        "metadata": {"resourceVersion": gatewayclass["metadata"]["resourceVersion"],
                     "annotations": {SET_ANNOTATION: None, PREVIOUS_ANNOTATION: None}},
        "spec": {"parametersRef": ref},
    }
    return patch, ("restored %s" % _ref_string(previous)) if previous else "removed parametersRef"


def _envoyproxy_api(client):
    with api_errors("discover", "the EnvoyProxy API"):
        group, version = envoyproxy_group_version(client)
    if not group:
        raise TegIstioError("no API group serves envoyproxies (neither gateway.envoyproxy.io nor "
                            "config.gateway.envoyproxy.io): install Envoy Gateway / TEG and its CRDs first")
    return group, version


def run(module, client):
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
    if state == "present" and PREVIOUS_ANNOTATION in patch["metadata"]["annotations"]:
        module.warn("%s referenced %s, whose settings no longer apply to its Gateways; the reference is "
                    "recorded in annotation %s and restored by state=absent"
                    % (what, _ref_string(_current_ref(gatewayclass)), PREVIOUS_ANNOTATION))
    if module._diff:
        result["diff"] = diff
    return result


def main():
    argument_spec = copy.deepcopy(AUTH_ARG_SPEC)
    argument_spec.update(
        name=dict(type="str", required=True),
        envoyproxy_name=dict(type="str"),
        envoyproxy_namespace=dict(type="str"),
        envoyproxy_must_exist=dict(type="bool", default=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
    )
    module = AnsibleK8SModule(module_class=AnsibleModule, argument_spec=argument_spec, supports_check_mode=True,
                              required_if=[("state", "present", ("envoyproxy_name", "envoyproxy_namespace"))])
    try:
        with api_errors("read", "its version and API groups"):
            client = get_api_client(module)
        result = run(module, client)
    except CoreException as e:
        module.fail_from_exception(e)
    except TegIstioError as e:
        module.fail_json(msg=str(e))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
