# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: the module k8s_objects, run in-process by its action plugin or as a module process
(module_utils/_k8s_module.py). It is kubernetes.core.k8s for a list of objects with the options the roles use: the
same runner (kubernetes.core's run_module), so the same requests, results and failures, without the second a module
process spends importing the Kubernetes client. Objects the caller has just read as absent (absent_definitions) are
created without the read kubernetes.core.k8s sends before each write, one request each instead of two, several at once.
It can change at any time; do not use it from other collections."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import threading
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC, WAIT_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.resource import create_definitions
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.runner import get_definitions, perform_action, run_module
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.service import K8sService, decode_response

try:
    from kubernetes.dynamic.exceptions import ConflictError
except ImportError:  # the module reports the missing library (get_api_client) before this is used
    ConflictError = None

ARGUMENT_SPEC = copy.deepcopy(AUTH_ARG_SPEC)
ARGUMENT_SPEC.update(copy.deepcopy(WAIT_ARG_SPEC))
ARGUMENT_SPEC.update(
    # No defaults: required_one_of only counts options that are set.
    definition=dict(type="list", elements="dict"),
    absent_definitions=dict(type="list", elements="dict"),
    state=dict(type="str", choices=["present", "absent", "patched"], default="present"),
    merge_type=dict(type="list", elements="str", choices=["merge", "strategic-merge"]),
    hidden_fields=dict(type="list", elements="str"),
)
ARGUMENT_CONSTRAINTS = dict(required_one_of=[("definition", "absent_definitions")])

# Creates of absent_definitions in flight at once. The API server validates and stores each on threads of its own, so
# that several at once overlap its work with this process's: on a 2-core machine a hundred routes and VirtualServices
# take about half as long as one by one (make bench, row d100). More gain little there.
CREATES_AT_ONCE = 4


def runner_params(params):
    """The parameters kubernetes.core.k8s's runner reads beyond this module's own: the definitions as its
    resource_definition, and the options this module leaves out at kubernetes.core.k8s's defaults."""
    return dict(resource_definition=params["definition"], apply=False, force=False, append_hash=False,
                continue_on_error=False, delete_all=False)


class _Exists(Exception):
    """The API server refused to create an object read as absent: it exists by now."""


class _AbsentService(K8sService):
    """K8sService for objects the caller has just read as absent: no read before the create (perform_action creates
    what retrieve returns nothing for), and a create refused because the object exists by now raises _Exists, so that
    the object takes the usual way (read, then patch). K8sService.create would only warn and return nothing."""

    def retrieve(self, resource, definition):
        return None

    def create(self, resource, definition):
        if self._client_side_dry_run:
            return super(_AbsentService, self).create(resource, definition)
        try:
            return decode_response(self.client.create(resource, definition, namespace=definition["metadata"].get(
                "namespace"), serialize=False))
        except ConflictError as exc:
            raise _Exists() from exc
        except Exception as exc:
            # As K8sService.create words it.
            raise CoreException("Failed to create object: {0}".format(getattr(exc, "body", exc))) from exc


def _failure(exc):
    """What kubernetes.core's run_module fails with for an exception of perform_action."""
    error = dict(getattr(exc, "result", None) or {})
    reason = getattr(exc.__cause__, "reason", None)
    if reason is not None:
        error["reason"] = reason
    error["msg"] = str(exc)
    return error


def _create_each(usual, direct, definitions, params):
    """perform_action for each definition read as absent, CREATES_AT_ONCE at a time: one (result, exception) per
    definition, in order. After a failure no further create is sent; those not sent are (None, None)."""
    # The API discovery first, one kind at a time (its cache is not shared safely between threads); a kind the server
    # does not serve is left to perform_action, which reports it for the object as kubernetes.core does.
    for kind, api_version in sorted(set((d.get("kind"), d.get("apiVersion")) for d in definitions), key=str):
        try:
            direct.find_resource(kind, api_version)
        except Exception:  # pylint: disable=broad-except
            pass
    failed = threading.Event()

    def create(definition):
        if failed.is_set():
            return None, None
        try:
            try:
                return perform_action(direct, definition, params), None
            except _Exists:
                return perform_action(usual, definition, params), None
        # As kubernetes.core's run_module: any failure of an object ends the module with it.
        except Exception as exc:  # pylint: disable=broad-except
            failed.set()
            return None, exc

    with ThreadPoolExecutor(max_workers=CREATES_AT_ONCE) as pool:
        return list(pool.map(create, definitions))


def run(module):
    """kubernetes.core.k8s's runner on the definitions, then the absent definitions created without a read first: it
    ends the module with exit_json or fail_json, with the result kubernetes.core.k8s returns for all of them in order
    (one object: its result; several: result.results). The first failure ends it, as in kubernetes.core.k8s; of the
    absent definitions, those after it in the list may have been created (they are sent several at once)."""
    # In place: AnsibleK8SModule's params is a read-only view of its AnsibleModule's dict.
    module.params.update(runner_params(module.params))
    absent = module.params["absent_definitions"] or []
    if not absent:
        run_module(module)
        return
    if module.params["state"] != "present":
        module.fail_json(msg="absent_definitions needs state present, not %s" % module.params["state"])
    client = get_api_client(module)
    usual = K8sService(client, module)
    results = []
    for definition in get_definitions(usual, module.params) if module.params["definition"] else []:
        try:
            results.append(perform_action(usual, definition, module.params))
        # As kubernetes.core's run_module: any failure of an object ends the module with it.
        except Exception as exc:  # pylint: disable=broad-except
            module.fail_json(**_failure(exc))
    created = _create_each(usual, _AbsentService(client, module),
                           create_definitions(dict(module.params, resource_definition=absent)), module.params)
    for result, exc in created:
        if exc is not None:
            module.fail_json(**_failure(exc))
        results.append(result)
    if len(results) == 1:
        module.exit_json(**results[0])
    module.exit_json(changed=any(r["changed"] for r in results), result={"results": results})
