# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: how a module of this collection runs as a module process, the fallback its
action plugin of the same name uses when the task does not run on the controller (another
connection, delegate_to, become) or the controller lacks the Kubernetes client.

Each module's logic lives in a private module_utils file as ARGUMENT_SPEC, ARGUMENT_CONSTRAINTS and
run(module) -> result, so that the module process and the in-process action run the same code. It
can change at any time; do not use it from other collections."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.kubernetes.core.plugins.module_utils.ansiblemodule import AnsibleModule
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException
from ansible_collections.teg.istio.plugins.module_utils.cluster import TegIstioError


def run_as_module(argument_spec, run, constraints=None):
    """Build the module the kubernetes.core way (AnsibleK8SModule: dependency checks, kubeconfig
    secrets kept out of the output), run `run(module)` and exit with its result."""
    module = AnsibleK8SModule(module_class=AnsibleModule, argument_spec=argument_spec, supports_check_mode=True,
                              **(constraints or {}))
    try:
        result = run(module)
    except CoreException as exc:
        module.fail_from_exception(exc)
    except TegIstioError as exc:
        module.fail_json(msg=str(exc), **exc.result)
    module.exit_json(**result)
