# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whether a JSON merge patch (RFC 7386, what kubernetes.core.k8s sends with merge_type merge) would
change an object: when it would not, the API server would answer the patch with the object as it is,
so neither the patch nor a dry run of it needs to be sent. Standard library only (see names.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


def merge_patch_changes(target, patch):
    """True when merging `patch` into `target` would give something other than `target`.

    A dict in the patch merges key by key, None deletes a key, and anything else (lists included)
    replaces the value, so a value counts as unchanged only when it is equal, type included (the
    integer 80 is not the string "80")."""
    if not isinstance(patch, dict):
        return not _same(target, patch)
    if not isinstance(target, dict):
        return True
    for key, value in patch.items():
        if value is None:
            if key in target:
                return True
        elif key not in target:
            return True
        elif isinstance(value, dict):
            if merge_patch_changes(target[key], value):
                return True
        elif not _same(target[key], value):
            return True
    return False


def _same(left, right):
    """Equal as JSON values. Compared by kind, not by exact type: values that come from Ansible may be
    its own str, dict and list subclasses (tagged and lazily templated values)."""
    for kind in (bool, str, dict, (list, tuple)):
        if isinstance(left, kind) or isinstance(right, kind):
            if not (isinstance(left, kind) and isinstance(right, kind)):
                return False
            if kind is dict:
                return left.keys() == right.keys() and all(_same(left[k], right[k]) for k in left)
            if kind == (list, tuple):
                return len(left) == len(right) and all(_same(a, b) for a, b in zip(left, right))
            return left == right
    # bool is an int in Python, so it was told apart above: True is not the integer 1 in JSON.
    if _number(left) or _number(right):
        return _number(left) and _number(right) and left == right
    return left == right


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _key(obj):
    meta = obj.get("metadata") or {}
    return obj.get("kind"), meta.get("namespace"), meta.get("name")


def pending_definitions(definitions, live_objects):
    """The definitions a merge patch would change: those with no live object of the same kind,
    namespace and name in `live_objects`, and those the live object differs from. Only these need a
    server-side dry run and a write; the others are in place as they are."""
    live = dict((_key(obj), obj) for obj in live_objects or [])
    return [d for d in definitions or [] if _key(d) not in live or merge_patch_changes(live[_key(d)], d)]


def apply_merge_patch(target, patch):
    """`target` with the JSON merge patch `patch` applied (RFC 7386), as a new value: what the API server
    stores for a merge patch that kubernetes.core.k8s sends, told without asking it."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result
