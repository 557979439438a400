# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whether the teg_restart role has to run teg.istio.rollout_restart, decided from the role's one read
with the module's own rules (module_utils/rollout.py), so that a run with nothing to restart and
nothing to wait for starts no second process."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.teg.istio.plugins.module_utils.rollout import (
    TRIGGER_ANNOTATION,
    plan_restarts,
    rollout_state,
    select_deployments,
)


def teg_restart_pending(deployments, names, data_plane, trigger, force=False, wait=True,
                        trigger_annotation=TRIGGER_ANNOTATION):
    """False only when rollout_restart would merely read: every Deployment in `names` exists among
    `deployments` (those of the namespace), none of them or of `data_plane` (those the label selector
    matched, None when off) needs a restart for `trigger`, and, with `wait`, each has rolled out its
    current generation. Anything else runs the module: a restart, a rollout still to wait for (so that a
    rerun after a stuck rollout fails again), a missing Deployment to warn about, `force`, or nothing
    selected at all (the module names the missing namespace)."""
    selected, missing = select_deployments(deployments, names, data_plane)
    if force or missing or not selected:
        return True
    restart, _unchanged = plan_restarts(selected, trigger, trigger_annotation, False)
    if restart:
        return True
    return bool(wait) and any(rollout_state(d, d["metadata"].get("generation", 0))[0] != "done" for d in selected)


class FilterModule(object):
    def filters(self):
        return {"teg_restart_pending": teg_restart_pending}
