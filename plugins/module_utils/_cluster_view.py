# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: what a role's plan reads and asks the API server, in one process with one
client: the served APIs (facts.py), objects keyed by a name the role chooses, Helm releases from
Helm's Secrets, and the server-side dry run through kubernetes.core's own service layer (what
kubernetes.core.k8s would send in check mode, with each object's diff). Reads only: the dry run is
a dryRun=All request, which the API server validates and never stores. It can change at any time; do
not use it from other collections."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy

from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import K8SClient
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.runner import perform_action
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.service import K8sService
from ansible_collections.teg.istio.plugins.module_utils.cluster import (
    TegIstioError,
    api_error_message,
    api_errors,
    get_or_none,
)
from ansible_collections.teg.istio.plugins.module_utils.facts import gather, read_helm_releases, read_objects
from ansible_collections.teg.istio.plugins.module_utils._k8s_objects import runner_params
from ansible_collections.teg.istio.plugins.module_utils.names import describe


class _DryRunModule(object):
    """What K8sService and perform_action use of a module, for kubernetes.core.k8s with state present,
    merge_type merge, in check mode with diff."""

    check_mode = True
    _diff = True

    def __init__(self, merge_type):
        # The apply's own parameters (k8s_objects), so that the dry run sends what the apply will.
        self.params = dict(runner_params({"definition": []}), state="present", merge_type=[merge_type],
                           hidden_fields=None, wait=False, label_selectors=None)
        self.warnings = []

    def warn(self, warning):
        self.warnings.append(warning)

    def requires(self, dependency, minimum=None, reason=None):
        pass


def _what(definition):
    meta = definition.get("metadata") or {}
    return describe(definition.get("kind"), meta.get("name"), meta.get("namespace"))


class ClusterView(object):
    """The cluster as one plan sees it."""

    def __init__(self, client, params):
        self.client = client
        # The task's connection options, for helm (module_utils/_helm.py).
        self.params = params

    def facts(self, gatewayclass=None, namespace=None, parts=()):
        """facts.gather: the served APIs of `parts`, the GatewayClass and whether `namespace` exists."""
        return gather(self.client, gatewayclass, namespace, parts)

    def read(self, facts, specs):
        """{key: {api_version, resources}} for {key: spec} (see facts.read_objects)."""
        return read_objects(self.client, facts, specs)

    def get(self, api_version, kind, name, namespace=None):
        with api_errors("read", describe(kind, name, namespace)):
            return get_or_none(self.client, api_version, kind, name, namespace)

    def helm_releases(self, namespace, names):
        return read_helm_releases(self.client, namespace, names)

    def dry_run(self, definitions, merge_type="merge"):
        """What kubernetes.core.k8s (state present, this merge_type) would do with each definition, as
        a server-side dry run: one result per definition, in order, as the module returns them
        (changed, method, diff, result). A refusal (an invalid object, a missing namespace, RBAC) is a
        TegIstioError naming the object: the plan reports it before anything is written."""
        dry_client = K8SClient(configuration=self.client.configuration, client=self.client.client, dry_run=True)
        module = _DryRunModule(merge_type)
        service = K8sService(dry_client, module)
        results = []
        for definition in definitions:
            try:
                results.append(perform_action(service, copy.deepcopy(definition), module.params))
            except CoreException as exc:
                cause = exc.__cause__
                if cause is not None and hasattr(cause, "status"):
                    raise TegIstioError(api_error_message(cause, "dry-run", _what(definition))) from exc
                raise TegIstioError("cannot dry-run %s: %s" % (_what(definition), exc)) from exc
        return results
