"""The in-process execution core (plugins/plugin_utils/_inprocess.py, plugins/action/): what makes a task
cheap, and what the action must do by hand that Ansible does for a module process. Against the API
server, tests/integration/test_inprocess.py proves check mode, diff, environment, no_log, argument
validation and the fallback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.teg.istio.plugins.plugin_utils._inprocess import InProcessModule, ModuleExit, task_environment

ACTIONS = sorted(p.stem for p in (Path(__file__).resolve().parents[4] / "plugins" / "action").glob("*.py"))
MODULES = sorted(p.stem for p in (Path(__file__).resolve().parents[4] / "plugins" / "modules").glob("*.py"))

PROBE = """
import sys
from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder
_AnsibleCollectionFinder(paths=[sys.argv[1]])._install()
import importlib
importlib.import_module("ansible_collections.teg.istio.plugins.action." + sys.argv[2])
print(sorted(m for m in ("kubernetes.client", "kubernetes.config", "kubernetes.dynamic") if m in sys.modules))
"""


def test_every_module_has_its_action_plugin():
    assert ACTIONS == MODULES


@pytest.mark.parametrize("action", ACTIONS)
def test_loading_the_action_plugin_imports_the_kubernetes_client(collections_root, action):
    """The strategy loads a task's action plugin in ansible-playbook before it forks the worker: a client
    imported at load time is inherited by every worker, instead of imported by each task."""
    out = subprocess.run([sys.executable, "-c", PROBE, str(collections_root), action],
                         check=True, capture_output=True, text=True).stdout.strip()
    assert out == "['kubernetes.client', 'kubernetes.config', 'kubernetes.dynamic']"


def test_exit_and_fail_end_the_module_with_its_result():
    module = InProcessModule("teg.istio.x", {"a": 1}, check_mode=True, diff=False)
    with pytest.raises(ModuleExit) as done:
        module.exit_json(changed=True, msg="ok")
    assert done.value.result == {"changed": True, "msg": "ok", "failed": False}
    with pytest.raises(ModuleExit) as failed:
        module.fail_json(msg="no", extra=1)
    assert failed.value.result == {"msg": "no", "extra": 1, "failed": True}
    module.warn("careful")
    assert module.warnings == ["careful"]
    assert module.server_side_dry_run is True


def test_the_tasks_environment_holds_for_the_block_only(monkeypatch):
    monkeypatch.setenv("TEG_ISTIO_PROBE_KEPT", "before")
    monkeypatch.delenv("TEG_ISTIO_PROBE_NEW", raising=False)
    with task_environment({"TEG_ISTIO_PROBE_KEPT": "during", "TEG_ISTIO_PROBE_NEW": 7}):
        assert os.environ["TEG_ISTIO_PROBE_KEPT"] == "during" and os.environ["TEG_ISTIO_PROBE_NEW"] == "7"
    assert os.environ["TEG_ISTIO_PROBE_KEPT"] == "before" and "TEG_ISTIO_PROBE_NEW" not in os.environ


SWITCH_PROBE = """
import sys
from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder
_AnsibleCollectionFinder(paths=[sys.argv[1]])._install()
from ansible_collections.teg.istio.plugins.plugin_utils._inprocess import inprocess_enabled
try:
    print(inprocess_enabled())
except Exception as exc:
    print(type(exc).__name__, exc)
"""


@pytest.mark.parametrize("environment, ini, expected", [
    (None, None, "True"),                           # on unless switched off
    ("0", None, "False"),
    ("false", None, "False"),
    (None, "inprocess = false", "False"),           # ansible.cfg, [teg_istio]
    ("1", "inprocess = false", "True"),             # the environment over ansible.cfg, as for any Ansible setting
    ("yes", "inprocess = false", "True"),
    # Ansible's boolean settings read anything not true-like as false: a typo switches the path off, the safe side
    # (a module process gives the same result, only slower).
    ("maybe", None, "False"),
])
def test_the_off_switch_is_an_ansible_setting(collections_root, tmp_path, environment, ini, expected):
    config = tmp_path / "ansible.cfg"
    config.write_text("[defaults]\n" + (f"[teg_istio]\n{ini}\n" if ini else ""))
    env = {k: v for k, v in os.environ.items() if k != "TEG_ISTIO_INPROCESS"}
    env.update({"ANSIBLE_CONFIG": str(config)}, **({"TEG_ISTIO_INPROCESS": environment} if environment else {}))
    out = subprocess.run([sys.executable, "-c", SWITCH_PROBE, str(collections_root)], env=env,
                         check=True, capture_output=True, text=True).stdout.strip()
    assert out.split()[0] == expected, out
