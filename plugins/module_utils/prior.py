# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The record of what the collection changed on objects it did not create, kept on each object itself.

Before the collection changes a field of an object someone else made (a namespace's injection label, a
PeerAuthentication's mode, ...), the same merge patch that changes the field adds the field's prior value to
the object's annotation `teg.istio/prior`: a JSON object from the field's JSON Pointer (RFC 6901) to
`[prior, set]`, where `prior` is the value before the collection first changed the field (null: it was absent)
and `set` the value the collection last gave it (null: it removed the field). Written in the same patch as the
change, the record can never be missing for a change that happened, nor be there for one that did not; it
stays with the object across reruns, TEG upgrades (a chart upgrade keeps annotations it does not set) and a
move to AWX, and one read of the object gives both its state and its record.

Reruns never overwrite `prior`: only `set` follows what the collection writes. Teardown puts `prior` back where
the field still has the value the collection set, removes the annotation, and leaves a field someone changed
since alone (and says so). A second teardown finds no record and writes nothing.

Pure and dependency-free: unit-tested in tests/unit/plugins/module_utils/test_prior.py. It can change at
any time; do not use it from other collections."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re

from ansible_collections.teg.istio.plugins.module_utils.names import TegIstioError

PRIOR_ANNOTATION = "teg.istio/prior"


def pointer(*segments):
    """The JSON Pointer of the field at `segments`, e.g. pointer("metadata", "labels", "istio.io/rev")
    is "/metadata/labels/istio.io~1rev" (RFC 6901: "~" is written "~0" and "/" "~1")."""
    return "".join("/" + str(s).replace("~", "~0").replace("/", "~1") for s in segments)


def segments(field):
    """The segments of a JSON Pointer (the inverse of pointer())."""
    if not field.startswith("/"):
        raise TegIstioError("%r is not a JSON Pointer" % field)
    return [s.replace("~1", "/").replace("~0", "~") for s in field.split("/")[1:]]


def selector(key, value):
    """The segment that names, in a list of maps, the one map whose `key` is `value`: "[port=18000]". A list
    index would name another entry once the list is reordered; a key names the same one (for a Service's
    ports the key is `port`, Kubernetes' own merge key for them). Not RFC 6901: only value_at() reads it."""
    return "[%s=%s]" % (key, value)


_SELECTOR = re.compile(r"^\[([^=\]]+)=(.*)\]$")


def _select(items, segment):
    """The one map of `items` that the selector `segment` names; None when none or several match."""
    match = _SELECTOR.match(segment)
    if not match:
        return None
    key, value = match.groups()
    found = [item for item in items if isinstance(item, dict) and key in item and str(item[key]) == value]
    return found[0] if len(found) == 1 else None


def value_at(obj, field):
    """The value of `obj` at the JSON Pointer `field` (whose segments may select a list entry by key: selector());
    None when any part of the path is absent."""
    node = obj
    for segment in segments(field):
        if isinstance(node, list):
            node = _select(node, segment)
            if node is None:
                return None
            continue
        if not isinstance(node, dict) or segment not in node:
            return None
        node = node[segment]
    return node


def _describe(obj):
    meta = (obj or {}).get("metadata") or {}
    name = "%s/%s" % (meta["namespace"], meta.get("name")) if meta.get("namespace") else meta.get("name")
    return "%s %s" % ((obj or {}).get("kind") or "object", name)


def recorded(obj):
    """{pointer: [prior, set]} of the record on `obj` (as read); {} without one. A record that is not what the
    collection writes is refused in one line, since restoring from it could lose the owners' values."""
    raw = (((obj or {}).get("metadata") or {}).get("annotations") or {}).get(PRIOR_ANNOTATION)
    if not raw:
        return {}
    try:
        record = json.loads(raw)
    except ValueError:
        record = None
    if not isinstance(record, dict) or not all(
            isinstance(k, str) and k.startswith("/") and isinstance(v, list) and len(v) == 2 for k, v in record.items()):
        raise TegIstioError("%s: annotation %s is not the collection's record of prior values (a JSON object of "
                            "JSON Pointers to [prior, set]): restore the owners' values by hand and remove it"
                            % (_describe(obj), PRIOR_ANNOTATION))
    return record


def _encode(record):
    return json.dumps(record, sort_keys=True, separators=(",", ":")) if record else None


def record_annotation(obj, changes):
    """The value of the annotation `teg.istio/prior` once `changes` ({pointer: value written, None for a field
    removed}) are written to `obj` (as read; None: the collection creates it, so there is nothing to record);
    None when the record stays as it is. A field not recorded yet records its value as read; one recorded
    keeps its first prior and gets the new `set`."""
    if obj is None:
        return None
    record = recorded(obj)
    updated = dict(record)
    for field, value in changes.items():
        prior = record[field][0] if field in record else value_at(obj, field)
        updated[field] = [prior, value]
    # Back to what it was before the collection: nothing is left to give back for that field.
    updated = dict((k, v) for k, v in updated.items() if v[0] != v[1])
    return None if updated == record else (_encode(updated) or "")


def merge_patch(changes):
    """The JSON merge patch (RFC 7386) that writes `changes` ({pointer: value, None to remove}) into maps."""
    patch = {}
    for field, value in sorted(changes.items()):
        node = patch
        path = segments(field)
        for segment in path[:-1]:
            node = node.setdefault(segment, {})
        node[path[-1]] = value
    return patch


def with_record(obj, changes):
    """`changes` ({pointer: value}) as a merge patch of maps, with the record of prior values updated in the
    same patch when `obj` (as read) is not the collection's own; {} when `changes` is empty."""
    if not changes:
        return {}
    patch = merge_patch(changes)
    annotation = record_annotation(obj, changes)
    if annotation is not None:
        patch.setdefault("metadata", {}).setdefault("annotations", {})[PRIOR_ANNOTATION] = annotation or None
    return patch


def restoration(obj, fields=None):
    """(changes, left): what teardown writes to give `obj` (as read) back its prior values, as {pointer: prior}
    (with the record's removal under the annotation's own pointer), and the pointers it leaves alone because
    someone changed them since the collection set them. `fields` limits it to the pointers of one role
    (a predicate on a pointer); the record keeps the others. ({}, []) without a record."""
    record = recorded(obj)
    mine = dict((k, v) for k, v in record.items() if fields is None or fields(k))
    if not mine:
        return {}, []
    changes, left = {}, []
    for field, (prior, value_set) in sorted(mine.items()):
        current = value_at(obj, field)
        if current == value_set:
            if current != prior:
                changes[field] = prior
        else:
            left.append(field)
    rest = dict((k, v) for k, v in record.items() if k not in mine)
    changes[pointer("metadata", "annotations", PRIOR_ANNOTATION)] = _encode(rest)
    return changes, left


def _field_name(field):
    """A field as a person reads it: labels and annotations by key, anything else by its dotted path."""
    path = segments(field)
    if len(path) == 3 and path[0] == "metadata" and path[1] in ("labels", "annotations"):
        return "%s %s" % (path[1][:-1], path[2])
    return ".".join(path)


def _value(value):
    return "absent" if value is None else json.dumps(value)


def _definitions(writes):
    """Every object definition in a plan's writes, however the role groups them."""
    if isinstance(writes, dict):
        if writes.get("kind") and isinstance(writes.get("metadata"), dict):
            yield writes
        else:
            for value in writes.values():
                yield from _definitions(value)
    elif isinstance(writes, list):
        for value in writes:
            yield from _definitions(value)


def owners_settings(writes):
    """One line per field of an object the collection did not create that `writes` (a plan's) change or give back,
    read from the records the writes carry: 'Namespace legacy: label istio-injection "disabled" -> "enabled"
    (teardown gives back "disabled")', or for teardown 'Namespace legacy: given back label istio-injection
    "disabled"'. The check-mode summary of site.yml and teardown.yml."""
    lines = []
    for definition in _definitions(writes):
        annotations = (definition["metadata"].get("annotations") or {})
        if PRIOR_ANNOTATION not in annotations:
            continue
        what = _describe(definition)
        raw = annotations[PRIOR_ANNOTATION]
        if raw:
            for field, (before, value_set) in sorted(recorded(definition).items()):
                lines.append("%s: %s %s -> %s (teardown gives back %s)"
                             % (what, _field_name(field), _value(before), _value(value_set), _value(before)))
            continue
        restored = dict(annotations)
        del restored[PRIOR_ANNOTATION]
        changes = dict((pointer("metadata", "labels", k), v)
                       for k, v in (definition["metadata"].get("labels") or {}).items())
        changes.update((pointer("metadata", "annotations", k), v) for k, v in restored.items())
        for key, value in (definition.get("spec") or {}).items():
            changes[pointer("spec", key)] = value
        for field, value in sorted(changes.items()):
            lines.append("%s: given back %s %s" % (what, _field_name(field), _value(value)))
    return lines
