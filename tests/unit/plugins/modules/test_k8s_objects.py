"""teg.istio.k8s_objects hands kubernetes.core's runner the parameters kubernetes.core.k8s would hand it for the same
task: its options validated by its own spec, then what the runner reads beyond them. Compared with kubernetes.core.k8s's
own argument spec, validated the same way, for each way the roles call it."""

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.kubernetes.core.plugins.modules.k8s import argspec as k8s_argspec
from ansible_collections.teg.istio.plugins.module_utils import _k8s_objects

NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "httpbin", "labels": {"istio-injection": "enabled"}}}

# kubernetes.core.k8s options whose value the runner puts into a definition that lacks the field (merge_params) or
# that it reads only without a definition (src, template, delete_all's listing): k8s_objects documents that every
# definition is complete and takes no other source.
NOT_FOR_COMPLETE_DEFINITIONS = {"kind", "name", "namespace", "api_version", "generate_name", "src", "template",
                                "resource_definition"}

# How the roles call it: tasks/apply.yml and absent.yml of teg_istio_prep, expose_app and istio_install, strict_mtls.
ROLE_CALLS = [
    {"state": "present", "merge_type": ["merge"], "hidden_fields": ["metadata.managedFields"]},
    {"merge_type": "merge"},
    {"state": "absent"},
    {"state": "absent", "wait": True, "wait_timeout": 300},
    {"state": "patched", "merge_type": ["merge"]},
]


def validated(spec, args):
    result = ArgumentSpecValidator(spec).validate(args)
    assert not result.error_messages, result.error_messages
    return result.validated_parameters


@pytest.mark.parametrize("args", ROLE_CALLS)
def test_the_runner_gets_what_kubernetes_core_k8s_would_give_it(args):
    ours = validated(_k8s_objects.ARGUMENT_SPEC, dict(args, definition=[NAMESPACE]))
    ours.update(_k8s_objects.runner_params(ours))
    theirs = validated(k8s_argspec(), dict(args, definition=[NAMESPACE]))
    assert ours["resource_definition"] == theirs["resource_definition"] == [NAMESPACE]
    differing = {key: (ours.get(key), value) for key, value in theirs.items()
                 if key not in NOT_FOR_COMPLETE_DEFINITIONS and ours.get(key) != value}
    assert differing == {}
