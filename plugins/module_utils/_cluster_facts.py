# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: the module cluster_facts, run in-process by its action plugin or as a module
process (module_utils/_k8s_module.py). It can change at any time; do not use it from other collections."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.teg.istio.plugins.module_utils.cluster import TegIstioError, connect
from ansible_collections.teg.istio.plugins.module_utils.facts import gather, read_helm_releases, read_objects

ARGUMENT_SPEC = copy.deepcopy(AUTH_ARG_SPEC)
ARGUMENT_SPEC.update(
    gatewayclass=dict(type="str"),
    namespace=dict(type="str"),
    helm_releases=dict(type="list", elements="str", default=[]),
    objects=dict(type="list", elements="dict", default=[], options=dict(
        kind=dict(type="str", required=True),
        api_version=dict(type="str"),
        name=dict(type="str"),
        namespace=dict(type="str"),
        label_selectors=dict(type="list", elements="str", default=[]),
    )),
)
ARGUMENT_CONSTRAINTS = {}


def run(module):
    params = module.params
    if params["helm_releases"] and not params["namespace"]:
        raise TegIstioError("helm_releases needs namespace: the namespace the Helm releases are in")
    client = connect(module)
    facts = gather(client, params["gatewayclass"], params["namespace"])
    objects = read_objects(client, facts, params["objects"])
    releases = read_helm_releases(client, params["namespace"], params["helm_releases"])
    return dict(changed=False, cluster=facts, objects=objects, helm_releases=releases)
