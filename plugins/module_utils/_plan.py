# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: the module plan, run in-process by its action plugin or as a module process
(module_utils/_k8s_module.py). It dispatches to the plan of one role (module_utils/_<role>/plan.py),
which reads the cluster once, decides in pure Python and, where only the API server can tell what
differs, asks it with a server-side dry run. It can change at any time; do not use it from other
collections."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.teg.istio.plugins.module_utils._cluster_view import ClusterView
from ansible_collections.teg.istio.plugins.module_utils._expose_app import plan as _expose_app
from ansible_collections.teg.istio.plugins.module_utils._istio_install import plan as _istio_install
from ansible_collections.teg.istio.plugins.module_utils._strict_mtls import plan as _strict_mtls
from ansible_collections.teg.istio.plugins.module_utils._teg_istio_prep import plan as _teg_istio_prep
from ansible_collections.teg.istio.plugins.module_utils._teg_restart import plan as _teg_restart
from ansible_collections.teg.istio.plugins.module_utils.cluster import connect
from ansible_collections.teg.istio.plugins.module_utils.prior import owners_settings

# role -> {phase: function(view, settings, predicted, check_mode) -> result}
ROLES = {
    "expose_app": {"plan": _expose_app.plan},
    "istio_install": {"plan": _istio_install.plan, "verify": _istio_install.verify},
    "strict_mtls": {"plan": _strict_mtls.plan},
    "teg_istio_prep": {"plan": _teg_istio_prep.plan},
    "teg_restart": {"plan": _teg_restart.plan},
}

ARGUMENT_SPEC = copy.deepcopy(AUTH_ARG_SPEC)
ARGUMENT_SPEC.update(
    role=dict(type="str", required=True,
              choices=["expose_app", "istio_install", "strict_mtls", "teg_istio_prep", "teg_restart"]),
    phase=dict(type="str", choices=["plan", "verify"], default="plan"),
    settings=dict(type="dict", required=True),
    predicted=dict(type="dict", default={}),
    secrets=dict(type="dict", default={}, no_log=True),
    planning=dict(type="bool", default=False),
)
ARGUMENT_CONSTRAINTS = {}


def run(module):
    params = module.params
    phases = ROLES.get(params["role"], {})
    if params["phase"] not in phases:
        return dict(changed=False, errors=["role %s has no %s phase" % (params["role"], params["phase"])])
    view = ClusterView(connect(module), params)
    settings = dict(params["settings"], planning=params["planning"], **(params["secrets"] or {}))
    result = phases[params["phase"]](view, settings, params["predicted"] or {}, module.check_mode)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    diff = result.pop("diff", None)
    if diff and module._diff:
        result["diff"] = diff
    result.setdefault("errors", [])
    # Whether the role has anything to apply or wait for (site.yml runs no role when none has).
    result["changes"] = bool(result.get("changes", bool(result["errors"])))
    # The owners' settings the writes change or give back, read from the records they carry (module_utils/prior.py).
    result["owners_settings"] = owners_settings(result.get("writes"))
    result["changed"] = False
    return result
