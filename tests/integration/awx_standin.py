"""A stand-in for the part of AWX's REST API (/api/v2/) that awx.awx's modules use to create and update objects,
for tests/integration/test_awx_configure.py: objects kept in memory per endpoint, looked up by the query's
fields, created by POST, changed by PATCH, associations (a job template's credentials, a group's hosts) by POST
of {"id": ...} or {"id": ..., "disassociate": true} to the object's related URL, and every write recorded.
Workflows as AWX's API has them (awx.awx's workflow_job_template_node and schedule modules use these): a node's
success/failure/always nodes are related lists of other nodes; an approval node is a node whose
POST .../workflow_job_template_nodes/<id>/create_approval_template/ creates a workflow approval template (201) and
makes it the node's unified job template (AWX's API reference for that endpoint, e.g. Oracle Linux Automation
Manager 2.1's "POST /api/v2/workflow_job_template_nodes/{id}/create_approval_template/"); job templates, workflow
job templates and approval templates are found by name under /unified_job_templates/ too.

It checks nothing about AWX's validation or behaviour (no AWX server can run on this project's machines): it
shows what awx_configure.yml asks AWX to create, which is what the test asserts. It listens on 127.0.0.1 only."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

PREFIX = "/api/v2/"
# The related lists awx.awx associates objects through.
RELATED = ("credentials", "hosts", "children", "labels", "instance_groups", "survey_spec",
           "notification_templates_started", "notification_templates_success", "notification_templates_error",
           "notification_templates_approvals", "success_nodes", "failure_nodes", "always_nodes")
# A related list -> the endpoint of its objects, where the two differ.
RELATED_TARGET = {"success_nodes": "workflow_job_template_nodes", "failure_nodes": "workflow_job_template_nodes",
                  "always_nodes": "workflow_job_template_nodes", "children": "groups"}
# What /unified_job_templates/ lists (of what the stand-in holds).
UNIFIED = ("job_templates", "workflow_job_templates", "workflow_approval_templates", "projects")
# What AWX fills in itself, where awx.awx reads it back (a project's sync, which the stand-in does not run).
SERVER_FIELDS = {"projects": {"scm_revision": "0" * 40, "status": "successful"}}


class AwxStandIn:
    def __init__(self):
        self.objects = {"organizations": {1: {"id": 1, "name": "Default", "type": "organization"}}}
        self.associations = {}  # (endpoint, id, related) -> [ids]
        self.surveys = {}  # job template id -> survey spec
        self.writes = []  # (method, path, body)
        self._next_id = 100
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = "http://127.0.0.1:%d" % self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def seed(self, endpoint, name, **fields):
        """An object that exists before the playbook runs (one it references by name)."""
        return self._new(endpoint, dict(fields, name=name))

    def named(self, endpoint, name):
        """The object of `endpoint` called `name` (None when there is none)."""
        return next((o for o in self.objects.get(endpoint, {}).values() if o.get("name") == name), None)

    def associated(self, endpoint, name, related):
        """The names of the objects associated with `endpoint`'s `name` under `related` (a group's hosts...)."""
        target = RELATED_TARGET.get(related, related)
        ids = self.associations.get((endpoint, self.named(endpoint, name)["id"], related), [])
        return sorted(self.objects[target][i]["name"] for i in ids)

    def linked(self, node, related="success_nodes"):
        """The nodes `node` (a workflow_job_template_nodes object) leads to under `related`."""
        ids = self.associations.get(("workflow_job_template_nodes", node["id"], related), [])
        return [self.objects["workflow_job_template_nodes"][i] for i in ids]

    def _listed(self, endpoint):
        if endpoint == "unified_job_templates":
            return [o for name in UNIFIED for o in self.objects.get(name, {}).values()]
        return list(self.objects.get(endpoint, {}).values())

    def _new(self, endpoint, body):
        self._next_id += 1
        oid = self._next_id
        obj = dict(SERVER_FIELDS.get(endpoint, {}), **body)
        obj.update(id=oid, type=endpoint.rstrip("s"), url="%s%s/%d/" % (PREFIX, endpoint, oid),
                   related=dict((r, "%s%s/%d/%s/" % (PREFIX, endpoint, oid, r)) for r in RELATED),
                   summary_fields={})
        self.objects.setdefault(endpoint, {})[oid] = obj
        return obj

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status, doc):
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-API-Product-Name", "AWX")
                self.send_header("X-API-Product-Version", "24.6.1")
                self.end_headers()
                self.wfile.write(data)

            def _body(self):
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}") if length else {}

            def _route(self):
                url = urlsplit(self.path)
                parts = [p for p in url.path[len(PREFIX):].split("/") if p] if url.path.startswith(PREFIX) else []
                return parts, dict(parse_qsl(url.query))

            def do_GET(self):  # noqa: N802
                parts, query = self._route()
                if not parts:
                    return self._send(200, {"current_version": PREFIX})
                endpoint = parts[0]
                if len(parts) == 1:
                    found = [o for o in standin._listed(endpoint)
                             if all(str(o.get(k)) == v for k, v in query.items() if k not in ("page_size", "page"))]
                    return self._send(200, {"count": len(found), "next": None, "previous": None, "results": found})
                obj = standin.objects.get(endpoint, {}).get(int(parts[1]))
                if obj is None:
                    return self._send(404, {"detail": "Not found."})
                if len(parts) == 2:
                    return self._send(200, obj)
                if parts[2] == "survey_spec":
                    return self._send(200, standin.surveys.get(obj["id"], {}))
                ids = standin.associations.get((endpoint, obj["id"], parts[2]), [])
                target = standin.objects.get(RELATED_TARGET.get(parts[2], parts[2]), {})
                results = [target[i] for i in ids if i in target]
                return self._send(200, {"count": len(results), "next": None, "previous": None, "results": results})

            def do_POST(self):  # noqa: N802
                parts, _query = self._route()
                body = self._body()
                standin.writes.append(("POST", self.path, body))
                if len(parts) == 1:
                    return self._send(201, standin._new(parts[0], body))
                endpoint, oid, related = parts[0], int(parts[1]), parts[2]
                if related == "survey_spec":
                    standin.surveys[oid] = body
                    return self._send(200, {})
                if related == "create_approval_template":
                    approval = standin._new("workflow_approval_templates", body)
                    node = standin.objects[endpoint][oid]
                    node["unified_job_template"] = approval["id"]
                    node["related"]["unified_job_template"] = approval["url"]
                    return self._send(201, approval)
                ids = standin.associations.setdefault((endpoint, oid, related), [])
                if body.get("disassociate"):
                    ids.remove(body["id"])
                elif body["id"] not in ids:
                    ids.append(body["id"])
                return self._send(204, {})

            def do_PATCH(self):  # noqa: N802
                parts, _query = self._route()
                body = self._body()
                standin.writes.append(("PATCH", self.path, body))
                obj = standin.objects[parts[0]][int(parts[1])]
                obj.update(body)
                return self._send(200, obj)

            def do_DELETE(self):  # noqa: N802
                parts, _query = self._route()
                standin.writes.append(("DELETE", self.path, None))
                standin.objects.get(parts[0], {}).pop(int(parts[1]), None)
                return self._send(204, {})

        return Handler
