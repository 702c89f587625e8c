"""The domain-tool test layer behind plain HTTP tool endpoints (no MCP), for preflight's HTTP
adapter: `GET /tools` lists `[{name, description, input_schema}]`, `POST /tools/NAME` with the
arguments as a JSON body calls one. The principal comes from the X-Layer-Tenant header.

Like tests/targets/domain/, `list_tickets` trusts its `tenant_id` argument (the deliberate flaw);
`get_order` scopes by the caller's tenant. Standard library and psycopg only.

Usage: server.py PORT   (DATABASE_URL in the environment)
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg

TOOLS = [
    {
        "name": "get_order",
        "description": "The status and total of one of your orders.",
        "input_schema": {"type": "object", "properties": {"order_id": {"type": "integer"}}, "required": ["order_id"]},
    },
    {
        "name": "list_tickets",
        "description": "Open support tickets of a tenant.",
        "input_schema": {"type": "object", "properties": {"tenant_id": {"type": "string"}}, "required": ["tenant_id"]},
    },
]


def query(sql, params, scope):
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (scope,))
        with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            cur.execute(sql, params)
            return [{k: v if isinstance(v, (str, int, type(None))) else str(v) for k, v in r.items()} for r in cur.fetchall()]


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/tools":
            self.reply(200, TOOLS)
        else:
            self.reply(404, {"code": "not_found", "message": "no such path"})

    def do_POST(self):
        tenant = self.headers.get("X-Layer-Tenant", "")
        length = int(self.headers.get("Content-Length", "0"))
        try:
            args = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return self.reply(400, {"code": "validation_error", "message": "body is not JSON"})
        if not tenant:
            return self.reply(401, {"code": "tenant_mismatch", "message": "no tenant"})
        if self.path == "/tools/get_order":
            rows = query("SELECT id, status, total FROM orders WHERE id = %s AND tenant_id = %s", (args.get("order_id"), tenant), tenant)
            if not rows:
                return self.reply(404, {"code": "not_found", "message": "no such order"})
            return self.reply(200, {"order": rows[0]})
        if self.path == "/tools/list_tickets":
            scope = args.get("tenant_id", tenant)
            rows = query("SELECT id, status, subject FROM support_tickets WHERE tenant_id = %s ORDER BY id LIMIT 20", (scope,), scope)
            return self.reply(200, {"tickets": rows})
        return self.reply(404, {"code": "not_found", "message": "no such tool"})

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
