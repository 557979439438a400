# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: the module k8s_objects, run in-process by its action plugin or as a module process
(module_utils/_k8s_module.py). It is kubernetes.core.k8s for a list of objects with the options the roles use: the
same runner (kubernetes.core's run_module), so the same requests, results and failures, without the second a module
process spends importing the Kubernetes client. It can change at any time; do not use it from other collections."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC, WAIT_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.runner import run_module

ARGUMENT_SPEC = copy.deepcopy(AUTH_ARG_SPEC)
ARGUMENT_SPEC.update(copy.deepcopy(WAIT_ARG_SPEC))
ARGUMENT_SPEC.update(
    definition=dict(type="list", elements="dict", required=True),
    state=dict(type="str", choices=["present", "absent", "patched"], default="present"),
    merge_type=dict(type="list", elements="str", choices=["merge", "strategic-merge"]),
    hidden_fields=dict(type="list", elements="str"),
)
ARGUMENT_CONSTRAINTS = {}


def runner_params(params):
    """The parameters kubernetes.core.k8s's runner reads beyond this module's own: the definitions as its
    resource_definition, and the options this module leaves out at kubernetes.core.k8s's defaults."""
    return dict(resource_definition=params["definition"], apply=False, force=False, append_hash=False,
                continue_on_error=False, delete_all=False)


def run(module):
    """kubernetes.core.k8s's runner on the definitions: it ends the module with exit_json or fail_json, with the
    result kubernetes.core.k8s returns (one object: its result; several: result.results)."""
    # In place: AnsibleK8SModule's params is a read-only view of its AnsibleModule's dict.
    module.params.update(runner_params(module.params))
    run_module(module)
