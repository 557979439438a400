# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs the module teg.istio.run_lock inside ansible-playbook when the task runs on the controller, else as a
module process (plugin_utils/_inprocess.py). The module's documentation is in plugins/modules/run_lock.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.teg.istio.plugins.module_utils import _run_lock as _implementation
from ansible_collections.teg.istio.plugins.plugin_utils._inprocess import InProcessAction


class ActionModule(InProcessAction):
    MODULE = "teg.istio.run_lock"
    ARGUMENT_SPEC = _implementation.ARGUMENT_SPEC
    ARGUMENT_CONSTRAINTS = _implementation.ARGUMENT_CONSTRAINTS
    RUN = staticmethod(_implementation.run)

    def run(self, tmp=None, task_vars=None):
        # The worker that runs this task is a child of ansible-playbook: its parent is the run's process, which the
        # Lease names (and a later run on this machine looks up), whether the module runs here or as a module process.
        self._task.args = dict(self._task.args, controller=_implementation.controller_process(os.getppid()))
        return super(ActionModule, self).run(tmp, task_vars)
