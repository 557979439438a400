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
  - >-
    Where the run verified (the verify role, C(teg.istio.mesh_verify)), it then prints a VERIFY block, for every
    cluster, even one, C(verify: <cluster>: P/T checks passed), and one line per finding of each failed check,
    C(verify: <cluster>: failed "<check>": <finding>), the finding naming the object and the fix. In check mode,
    where the findings only say what the run would apply, the first line says so.
  - Enabled in the repository's C(ansible.cfg) (C(callbacks_enabled = teg.istio.fleet_summary)).
author:
  - teg.istio maintainers (@teg-istio)
"""

from ansible import constants as C
from ansible.plugins.callback import CallbackBase


_VERIFY_ACTIONS = ("teg.istio.mesh_verify", "mesh_verify")


def verify_lines(verified):
    """[(line, color)] of the verify report: per cluster of `verified` ({host: (checks, summary)}), the count of
    passed checks, then one line per finding of each failed check."""
    lines = []
    for host in sorted(verified):
        checks, summary = verified[host]
        predicted = "" if summary.get("enforced", True) else " (check mode: what fails is what this run would apply)"
        ok = summary["passed"] == summary["total"]
        lines.append(("verify: %s: %d/%d checks passed%s" % (host, summary["passed"], summary["total"], predicted),
                      C.COLOR_OK if ok else C.COLOR_ERROR))
        for check in checks:
            for finding in check["findings"]:
                lines.append(('verify: %s: failed "%s": %s' % (host, check["name"], finding), C.COLOR_ERROR))
    return lines


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
        # host name -> why it stopped: its last failure. A failed host runs no further task but its block's rescue
        # and always sections, and the roles' rescues fail again with the one line that says what the failure
        # they caught (kubernetes.core's "Failed to patch object: <error>") means: that line is the host's.
        self._stopped = {}
        # host name -> the last teg.istio.mesh_verify result's checks and summary.
        self._verified = {}

    def _note_verify(self, result):
        outcome = result._result
        if "checks" in outcome and "summary" in outcome and result._task.action in _VERIFY_ACTIONS:
            self._verified[result._host.get_name()] = (outcome["checks"], outcome["summary"])

    def v2_runner_on_ok(self, result):
        self._note_verify(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._note_verify(result)
        host = result._host.get_name()
        if not ignore_errors and self._stopped.get(host, ("",))[0] != "unreachable":
            self._stopped[host] = ("refused", _one_line(result._result.get("msg")))

    def v2_runner_on_unreachable(self, result):
        self._stopped.setdefault(result._host.get_name(), ("unreachable", _one_line(result._result.get("msg"))))

    def _writes_json(self):
        stdout_callback = str(C.config.get_config_value("DEFAULT_STDOUT_CALLBACK") or "")
        return stdout_callback.rsplit(".", maxsplit=1)[-1] in ("json", "jsonl")

    def v2_playbook_on_stats(self, stats):
        if self._writes_json():
            return
        self._clusters(stats)
        if self._verified:
            self._display.banner("VERIFY")
            for line, color in verify_lines(self._verified):
                self._display.display(line, color=color)
            self._display.display("", screen_only=True)

    def _clusters(self, stats):
        # One host: the PLAY RECAP line and the failed task already say all of it.
        if len(stats.processed) < 2:
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
