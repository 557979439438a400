# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: run a module of this collection inside the ansible-playbook process.

A module task is a new Python process that spends about a second importing the Kubernetes client
before it sends its first request. An action plugin whose file imports the client when it is loaded
avoids that: the linear and free strategies load a task's action plugin in the ansible-playbook
process before they fork the worker that runs the task, so every worker inherits the imported client
and the task costs a few hundredths of a second (docs/architecture.md, "In-process tasks").

Each module of this collection has an action plugin of the same name built on InProcessAction. When
the task runs on the controller as the same user (connection local, no delegate_to, no become) and
the controller has the Kubernetes client, the action runs the module's own code (the run() function
of its private module_utils file) here, doing by hand what Ansible does for a module process:

- argument validation against the module's own argument spec, with its constraints (required_if...),
  and the parameters handed over as plain JSON values, as a module process receives them;
- the task's `environment:` applied to os.environ for the task's duration (K8S_AUTH_*, KUBECONFIG);
- check mode (the client sends every write as a server-side dry run) and diff mode;
- no_log: the values of no_log options (api_key, password, a kubeconfig dict) masked in the result;
- warnings and the `invocation` block, as a module returns them (the block only where the ansible-core of the run
  has a module return it: from 2.21 only with INJECT_INVOCATION).

One thing a module process cannot know: which of the play host's variables (teg_istio_kubeconfig, ...) set the
connection options, so that a connection failure names the inventory variable to fix (cluster.connect and
cluster.ConnectionSettingsError).

Otherwise it runs the module as a module process (the fallback), so the Kubernetes client then runs
where the module runs; and always when the user switched the in-process path off (TEG_ISTIO_INPROCESS=false in
the environment, or `inprocess = false` in the [teg_istio] section of ansible.cfg). It can change at any time; do not use it from other collections."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import json
import os
import traceback

from ansible import constants as C
from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.parameters import remove_values
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash

try:
    # ansible-core 2.22 and later: validating the arguments registers the no_log values as secrets, and the
    # controller masks them wherever a result is shown, as it does a module process's (which returns them as they
    # are); remove_values is deprecated there (removal in 2.25). Earlier versions: masked here, as AnsibleModule did.
    from ansible.module_utils import secrets as _core_secrets  # noqa: F401  pylint: disable=unused-import
    SECRETS_MASKED_BY_CORE = True
except ImportError:
    SECRETS_MASKED_BY_CORE = False

try:
    # Imported when the plugin is loaded, in the ansible-playbook process, on purpose: see above.
    import kubernetes  # noqa: F401  pylint: disable=unused-import
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s import client as _k8s_client  # noqa: F401
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import has_at_least, requires
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException
    HAS_KUBERNETES = True
except ImportError:
    # The module process reports the missing library the kubernetes.core way.
    HAS_KUBERNETES = False

from ansible_collections.teg.istio.plugins.module_utils.cluster import (
    ConnectionSettingsError, TegIstioError, connection_variables)


# The off switch, read by Ansible's own configuration manager so that it has the sources, precedence and boolean
# parsing of any plugin option (an environment variable over ansible.cfg over the default). Action plugins are not
# among the plugin types whose DOCUMENTATION ansible-core reads options from (constants.CONFIGURABLE_PLUGINS), so
# the definition is registered here, under this file's name, in the form a plugin's documented options take.
_SETTINGS_OWNER = ("action", "teg.istio._inprocess")
_SETTINGS = {
    "inprocess": {
        "description": "Run the collection's modules inside ansible-playbook when a task runs on the controller; "
                       "false runs every one as a module process.",
        "type": "boolean",
        "default": True,
        "env": [{"name": "TEG_ISTIO_INPROCESS"}],
        "ini": [{"section": "teg_istio", "key": "inprocess"}],
    },
}


def inprocess_enabled():
    """The switch: TEG_ISTIO_INPROCESS, else [teg_istio] inprocess in ansible.cfg, else on."""
    plugin_type, plugin_name = _SETTINGS_OWNER
    C.config.initialize_plugin_configuration_definitions(plugin_type, plugin_name, _SETTINGS)
    return C.config.get_config_value("inprocess", plugin_type=plugin_type, plugin_name=plugin_name)


def _masked(value, no_log_values):
    """`value` as a module process of this ansible-core returns it: with the no_log values masked before 2.22,
    as it is from 2.22 on (the controller masks it when shown; SECRETS_MASKED_BY_CORE)."""
    if SECRETS_MASKED_BY_CORE or not no_log_values:
        # Nothing to mask: remove_values would only copy the value (a tenth of a second for a hundred objects).
        return value
    return remove_values(value, no_log_values)


def _module_returns_invocation(task_vars):
    """Whether a module process returns its `invocation` block: always before ansible-core 2.21, which made it
    opt-in (the INJECT_INVOCATION setting, off by default; AnsibleModule._return_formatted drops it otherwise)."""
    if "INJECT_INVOCATION" not in C.config.get_configuration_definitions():
        return True
    return C.config.get_config_value("INJECT_INVOCATION", variables=task_vars)


class ModuleExit(Exception):
    """exit_json or fail_json of an in-process module: carries the result."""

    def __init__(self, result):
        super(ModuleExit, self).__init__(result.get("msg", ""))
        self.result = result


class InProcessModule(object):
    """What the modules' run() functions and kubernetes.core's get_api_client and K8sService use of
    AnsibleK8SModule, for a module run inside the ansible-playbook process."""

    def __init__(self, name, params, check_mode, diff):
        self._name = name
        self.params = params
        self.check_mode = check_mode
        self._diff = diff
        self.warnings = []
        # {option: the play host's variable that set it}; cluster.connect names them in its messages.
        self.connection_variables = {}

    @property
    def server_side_dry_run(self):
        return self.check_mode and self.has_at_least("kubernetes", "18.20.0")

    def has_at_least(self, dependency, minimum=None, warn=False):
        supported = has_at_least(dependency, minimum)
        if not supported and warn:
            self.warn("%s<%s is not supported or tested. Some features may not work." % (dependency, minimum))
        return supported

    def requires(self, dependency, minimum=None, reason=None):
        try:
            requires(dependency, minimum, reason=reason)
        except Exception as exc:  # kubernetes.core raises a bare Exception with the message
            self.fail_json(msg=to_text(exc))

    def warn(self, warning):
        self.warnings.append(warning)

    def deprecate(self, msg, version=None, date=None, collection_name=None):
        self.warn(msg)

    def debug(self, msg):
        pass

    def exit_json(self, **kwargs):
        raise ModuleExit(dict(kwargs, failed=False))

    def fail_json(self, msg, **kwargs):
        raise ModuleExit(dict(kwargs, msg=msg, failed=True))

    def fail_from_exception(self, exception):
        tb = "".join(traceback.format_exception(None, exception, exception.__traceback__))
        self.fail_json(msg=to_text(exception), exception=tb)


@contextlib.contextmanager
def task_environment(values):
    """The task's `environment:` in os.environ for the block, as a module process would have it.

    The worker process runs one task, but the previous values are put back all the same."""
    saved = dict((key, os.environ.get(key)) for key in values)
    os.environ.update(dict((key, to_text(value)) for key, value in values.items()))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class InProcessAction(ActionBase):
    """Run the module MODULE in-process with ARGUMENT_SPEC, ARGUMENT_CONSTRAINTS and RUN(module)."""

    MODULE = None
    ARGUMENT_SPEC = None
    ARGUMENT_CONSTRAINTS = {}
    RUN = None

    _supports_check_mode = True
    _supports_async = True

    def _reason_to_run_as_module(self):
        """Why the module must run as a module process, or None when it can run here."""
        if not inprocess_enabled():
            return "switched off by TEG_ISTIO_INPROCESS or [teg_istio] inprocess in ansible.cfg"
        if not HAS_KUBERNETES:
            return "the controller's Python has no Kubernetes client"
        if self._task.delegate_to:
            return "delegate_to"
        if getattr(self._connection, "transport", None) != "local":
            return "connection %s" % getattr(self._connection, "transport", None)
        if self._play_context.become:
            return "become"
        if self._task.async_val:
            return "async"
        return None

    def run(self, tmp=None, task_vars=None):
        result = super(InProcessAction, self).run(tmp, task_vars)
        del tmp
        reason = self._reason_to_run_as_module()
        if reason:
            self._display.vvv("%s runs as a module process (%s)" % (self.MODULE, reason))
            wrap_async = self._task.async_val and not self._connection.has_native_async
            result = merge_hash(result, self._execute_module(module_name=self.MODULE, module_args=self._task.args,
                                                             task_vars=task_vars, wrap_async=wrap_async))
            if not wrap_async:
                self._remove_tmp_path(self._connection._shell.tmpdir)
            return result
        environment = {}
        self._compute_environment_string(environment)
        with task_environment(environment):
            validation, params = self._validate()
            # What a module process receives: plain JSON values, not Ansible's tagged str and dict types
            # (which YAML dumpers, for one, refuse).
            params = json.loads(json.dumps(params))
            module = InProcessModule(self.MODULE, params, bool(self._task.check_mode), bool(self._task.diff))
            module.connection_variables = connection_variables(params, task_vars or {})
            outcome = self._run_module(module)
        no_log_values = validation._no_log_values
        outcome = _masked(outcome, no_log_values)
        if _module_returns_invocation(task_vars or {}):
            outcome["invocation"] = {"module_args": _masked(params, no_log_values)}
        else:
            outcome.pop("invocation", None)
        # As ModuleArgumentSpecValidator words them for a module process.
        warnings = ["Both option %s and its alias %s are set." % (w["option"], w["alias"]) for w in validation._warnings]
        warnings.extend(d["msg"] for d in validation._deprecations)
        warnings.extend(_masked(module.warnings, no_log_values))
        if warnings:
            outcome["warnings"] = warnings
        outcome.setdefault("changed", False)
        return merge_hash(result, outcome)

    def _validate(self):
        """The task's arguments validated against the module's spec; fails as a module would."""
        try:
            return self.validate_argument_spec(self.ARGUMENT_SPEC, **self.ARGUMENT_CONSTRAINTS)
        except AnsibleActionFail as exc:
            # validate_argument_spec names the action plugin; the message is the module's own.
            raise AnsibleActionFail(to_text(exc.message).replace("Unsupported parameters for (%s) module"
                                                                 % self._load_name,
                                                                 "Unsupported parameters for (%s) module"
                                                                 % self.MODULE)) from None

    def _run_module(self, module):
        try:
            return type(self).RUN(module)
        except ModuleExit as done:
            return done.result
        except CoreException as exc:
            try:
                module.fail_from_exception(exc)
            except ModuleExit as done:
                return done.result
        except ConnectionSettingsError as exc:
            return dict(exc.result, msg=exc.message_for(module.params, module.connection_variables), failed=True)
        except TegIstioError as exc:
            return dict(exc.result, msg=str(exc), failed=True)
