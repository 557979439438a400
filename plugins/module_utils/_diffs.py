# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to teg.istio: the --diff of a plan, one unified diff per object, for the objects a role sends
to kubernetes.core.k8s as one list (whose per-object diffs Ansible's diff display does not show). It
can change at any time."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import difflib

try:
    import yaml
except ImportError:  # reported by AnsibleK8SModule's own dependency check
    yaml = None

from ansible_collections.teg.istio.plugins.module_utils.merge_patch import apply_merge_patch
from ansible_collections.teg.istio.plugins.module_utils.names import describe

# What the API server keeps for itself; a reader of a diff does not care.
_BOOKKEEPING = ("managedFields", "generation", "resourceVersion", "uid", "creationTimestamp")


def without_bookkeeping(obj):
    """`obj` without status and the API server's counters and field owners (a shallow copy)."""
    obj = dict(obj or {})
    obj.pop("status", None)
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta = dict((k, v) for k, v in meta.items() if k not in _BOOKKEEPING)
        if meta:
            obj["metadata"] = meta
        else:
            del obj["metadata"]
    return obj


def what(definition):
    meta = definition.get("metadata") or {}
    return describe(definition.get("kind"), meta.get("name"), meta.get("namespace"))


def unified(name, before, after):
    """One unified diff of two objects as YAML; "<name>: created" when there was nothing before (None)."""
    if before is None:
        return "%s: created" % name
    return "\n".join(difflib.unified_diff(_yaml_lines(without_bookkeeping(before)), _yaml_lines(without_bookkeeping(after)),
                                          "%s (cluster)" % name, "%s (declared)" % name, lineterm=""))


def _yaml_lines(obj):
    return yaml.safe_dump(obj, default_flow_style=False, sort_keys=True).splitlines()


def merge_patch_diff(current, patch):
    """The diff a merge patch makes to `current` (the object as read, or None when it is created)."""
    after = apply_merge_patch(current or {}, patch)
    return unified(what(patch), current or None, after)


def differs(result):
    """Whether one dry-run result is a change of ours.

    kubernetes.core compares the object it read with the dry run's answer, so a status update by a
    controller in between (a Deployment rolling out) looks like a change; with the diff at hand,
    only spec and metadata other than the API server's bookkeeping count."""
    if not result.get("changed"):
        return False
    if result.get("method") != "update" or "diff" not in result:
        return True
    diff = result["diff"] or {}
    return without_bookkeeping(diff.get("before")) != without_bookkeeping(diff.get("after"))


def changed_definitions(definitions, results):
    """The definitions whose server-side dry run (ClusterView.dry_run, one result each) is a change of
    ours: applying only these keeps a run with nothing to do free of write requests."""
    if len(results) != len(definitions):
        raise ValueError("the dry run returned %d results for %d definitions" % (len(results), len(definitions)))
    return [d for d, r in zip(definitions, results) if differs(r)]


def dry_run_diffs(definitions, results):
    """A unified diff per definition the dry run found different, for --diff."""
    out = []
    for definition, result in zip(definitions, results):
        if not differs(result):
            continue
        if result.get("method") == "create":
            out.append("%s: created" % what(definition))
            continue
        diff = result.get("diff") or {}
        out.append(unified(what(definition), diff.get("before") or {}, diff.get("after") or {}))
    return out
