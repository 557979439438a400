# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs the module teg.istio.k8s_objects inside ansible-playbook when the task runs on the controller, else as a
module process (plugin_utils/_inprocess.py). The module's documentation is in plugins/modules/k8s_objects.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.teg.istio.plugins.module_utils import _k8s_objects as _implementation
from ansible_collections.teg.istio.plugins.plugin_utils._inprocess import InProcessAction


class ActionModule(InProcessAction):
    MODULE = "teg.istio.k8s_objects"
    ARGUMENT_SPEC = _implementation.ARGUMENT_SPEC
    ARGUMENT_CONSTRAINTS = _implementation.ARGUMENT_CONSTRAINTS
    RUN = staticmethod(_implementation.run)
