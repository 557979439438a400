# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: fleet_summary
type: aggregate
short_description: One line per cluster at the end of a run of site.yml, verify.yml or teardown.yml
description:
  - After the PLAY RECAP, prints one line per play host (a cluster, see README.md, Many clusters),
    C(converged) when nothing changed, C(changed) when a task changed something (would change, in check mode),
    C(refused) with the one-line message of the task that stopped that host, or C(unreachable).
  - Ansible stops a failed host alone and ends with a non-zero exit when any host failed; this callback only
    says which, so that a fleet run does not have to be read task by task.
  - Prints nothing for a run of one host, whose PLAY RECAP already says it, and nothing when the stdout callback
    writes JSON (its output must stay one JSON document).
  - Enabled in the repository's C(ansible.cfg) (C(callbacks_enabled = teg.istio.fleet_summary)).
author:
  - teg.istio maintainers (@teg-istio)
"""

from ansible import constants as C
from ansible.plugins.callback import CallbackBase


def _one_line(text):
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    return lines[0] if lines else "no message"


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "teg.istio.fleet_summary"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        # host name -> why it stopped: the first failure counts (a failed host runs no further task).
        self._stopped = {}

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if not ignore_errors:
            self._stopped.setdefault(result._host.get_name(), ("refused", _one_line(result._result.get("msg"))))

    def v2_runner_on_unreachable(self, result):
        self._stopped.setdefault(result._host.get_name(), ("unreachable", _one_line(result._result.get("msg"))))

    def _writes_json(self):
        stdout_callback = str(C.config.get_config_value("DEFAULT_STDOUT_CALLBACK") or "")
        return stdout_callback.rsplit(".", maxsplit=1)[-1] in ("json", "jsonl")

    def v2_playbook_on_stats(self, stats):
        # One host: the PLAY RECAP line and the failed task already say all of it.
        if self._writes_json() or len(stats.processed) < 2:
            return
        self._display.banner("CLUSTERS")
        for host in sorted(stats.processed):
            summary = stats.summarize(host)
            if host in self._stopped:
                outcome, reason = self._stopped[host]
                line = "%s: %s: %s" % (host, outcome, reason)
                color = C.COLOR_ERROR if outcome == "refused" else C.COLOR_UNREACHABLE
            elif summary["failures"] or summary["unreachable"]:
                line, color = "%s: refused" % host, C.COLOR_ERROR
            elif summary["changed"]:
                line, color = "%s: changed" % host, C.COLOR_CHANGED
            else:
                line, color = "%s: converged" % host, C.COLOR_OK
            self._display.display(line, color=color)
        self._display.display("", screen_only=True)
