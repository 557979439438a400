# Copyright: teg.istio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One line for a failed kubernetes.core write. teg.istio's own modules fail in one line that names the object
and the fix (module_utils/names.py api_error_line); a kubernetes.core.k8s task says only `Failed to patch
object: <the client's error or the API server's answer>`, naming neither. The roles rescue their
kubernetes.core writes and fail once more with this line, worded as teg.istio's modules word API failures."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ast
import json
import re

from ansible_collections.teg.istio.plugins.module_utils.names import api_error_line, describe

# kubernetes.core's module_utils/k8s/service.py: "Failed to <verb> object: <exception body or exception>".
_K8S_FAILURE = re.compile(r"^Failed to (?P<verb>\w+) object: (?P<reason>.*)$", re.DOTALL)
# What urllib3 and http.client say when the API server refused, dropped or never answered the connection.
_UNREACHABLE = ("Connection aborted", "Connection refused", "RemoteDisconnected", "Max retries exceeded",
                "NewConnectionError", "ProtocolError", "timed out", "Connection reset")
_ACTIONS = {"absent": "delete", "patched": "patch"}


def _what(args):
    """The objects the task was given (its `definition`), described, shortened to three."""
    definition = args.get("definition") or []
    objects = [describe(d.get("kind", "object"), (d.get("metadata") or {}).get("name"),
                        (d.get("metadata") or {}).get("namespace") or args.get("namespace"))
               for d in (definition if isinstance(definition, list) else [definition]) if isinstance(d, dict)]
    if not objects:
        return "the task's objects"
    if len(objects) == 1:
        return objects[0]
    listed = ", ".join(objects[:3])
    return "one of %s%s" % (listed, " and %d more" % (len(objects) - 3) if len(objects) > 3 else "")


def _status(reason):
    """(code, message) of the API server's Status in kubernetes.core's reason (the response body, printed as
    bytes), or None when the reason is not one (the client's own error)."""
    text = reason.strip()
    try:
        body = ast.literal_eval(text) if text[:2] in ("b'", 'b"') else text
        status = json.loads(body)
    except (ValueError, SyntaxError, TypeError):
        return None
    if not isinstance(status, dict) or not isinstance(status.get("code"), int):
        return None
    return status["code"], status.get("message") or status.get("reason") or ""


def k8s_failure_line(result):
    """The line to fail with for `ansible_failed_result` of a kubernetes.core.k8s task: the API server that
    could not be reached, or its answer, for the task's objects, and the fix; any other failure's own message
    (first line)."""
    result = result or {}
    msg = str(result.get("msg") or "")
    match = _K8S_FAILURE.match(msg.strip())
    if not match:
        return msg.strip().splitlines()[0] if msg.strip() else "the task failed without a message"
    args = (result.get("invocation") or {}).get("module_args") or {}
    action = _ACTIONS.get(args.get("state"), "apply" if match.group("verb") != "delete" else "delete")
    reason = match.group("reason")
    status = _status(reason)
    if status is None and not any(marker in reason for marker in _UNREACHABLE):
        return msg.strip().splitlines()[0]
    code, message = status if status else (None, reason.strip().splitlines()[0])
    return api_error_line(code, message, action, _what(args))


class FilterModule(object):
    def filters(self):
        return {"k8s_failure_line": k8s_failure_line}
