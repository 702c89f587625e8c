"""A structured-tool enforcement layer that does not look like preflight's own.

An independent stand-in for a third-party layer, written for preflight's tests: per-model tools
(`orders_search`, `customers_get`, ...), `take` instead of `limit`, camelCase field names, filters
as `{field: {op: value}}`, the principal from environment variables (one process per principal),
and denials inside successful results: `{"success": false, "error": {"code": "...", ...}}` with its
own codes.

It serves the shop fixture database over MCP, on stdio (default) or streamable HTTP
(`--http PORT`). Deliberate flaws are switched on one at a time with `--flaw NAME` (or the
LAYER_FLAW environment variable); see FLAWS.

Environment: DATABASE_URL (the login the profile names), LAYER_TENANT, LAYER_USER, LAYER_ROLES.
Over HTTP the principal comes from the X-Layer-Tenant/-User/-Roles headers instead, or, with
`--jwt-secret` (LAYER_JWT_SECRET), ONLY from a bearer token verified with PyJWT (HS256, audience
`structured-layer`, issuer `preflight`): claims `tid`, `sub`, `roles`. A request without a valid
token is refused with HTTP 401 before it reaches MCP.

Every call, allowed or denied, is appended to the JSONL audit log named by `--audit PATH`
(LAYER_AUDIT): {"at", "tenant", "user", "tool", "outcome": "allowed"|"denied", "code"}.
"""

import argparse
import datetime
import functools
import json
import os
import sys
import time

import jwt

import psycopg
from psycopg import sql
from mcp.server.fastmcp import Context, FastMCP

FLAWS = {
    "none": "every rule enforced",
    "no_tenant_filter": "orders_search forgets the tenant filter",
    "raw_relation": "an included customer is returned with its masked fields raw",
    "denied_filter": "a filter on a denied or masked customer field is accepted (an oracle)",
    "no_reason": "orders_update accepts a write without a reason",
    "no_audit_denied": "denied calls leave no audit record",
}

# What the layer lets an agent see, per model: field -> allow | mask. Anything else is denied
# (never returned, never filterable). Mirrors tests/targets/structured/policy.yaml.
MODELS = {
    "customers": {
        "table": "customers",
        "fields": {"id": "allow", "name": "mask", "email": "mask", "created_at": "allow"},
        "relations": {},
    },
    "orders": {
        "table": "orders",
        "fields": {
            "id": "allow",
            "customer_id": "allow",
            "status": "allow",
            "total": "allow",
            "created_at": "allow",
        },
        "relations": {"customer": ("customers", "customer_id")},
    },
}
WRITABLE = {"orders": {"status"}}
MAX_TAKE = 100
# Writes per minute per process (one process per principal, so per caller).
MAX_WRITES_PER_MINUTE = 10
write_times = {}
OPS = {
    "eq": "=",
    "ne": "<>",
    "lt": "<",
    "lte": "<=",
    "gt": ">",
    "gte": ">=",
}

flaw = "none"
audit_path = None
jwt_secret = None
JWT_AUDIENCE = "structured-layer"
JWT_ISSUER = "preflight"


class Denied(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def camel(name):
    head, *rest = name.split("_")
    return head + "".join(p.capitalize() for p in rest)


def snake(name):
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def verified_claims(authorization):
    """The claims of a valid bearer token, or None."""
    if not authorization or not authorization.startswith("Bearer "):
        return None
    try:
        return jwt.decode(
            authorization[len("Bearer "):],
            jwt_secret,
            algorithms=["HS256"],
            audience=JWT_AUDIENCE,
            issuer=JWT_ISSUER,
            options={"require": ["exp", "iat"]},
        )
    except jwt.InvalidTokenError:
        return None


def principal(ctx):
    """Who is calling: the verified token (with --jwt-secret), the X-Layer-* headers over HTTP,
    the environment over stdio."""
    request = ctx.request_context.request if ctx is not None else None
    if request is not None and jwt_secret:
        claims = verified_claims(request.headers.get("authorization"))
        if not claims or not claims.get("tid"):
            raise Denied("UNAUTHENTICATED", "no valid token in this session")
        roles = claims.get("roles") or []
        return {"tenant": claims["tid"], "user": claims.get("sub", ""), "roles": ",".join(roles)}
    if request is not None:
        headers = request.headers
        if not headers.get("x-layer-tenant"):
            raise Denied("UNAUTHENTICATED", "no tenant in this session")
        return {
            "tenant": headers["x-layer-tenant"],
            "user": headers.get("x-layer-user", ""),
            "roles": headers.get("x-layer-roles", ""),
        }
    tenant = os.environ.get("LAYER_TENANT", "")
    if not tenant:
        raise Denied("UNAUTHENTICATED", "no tenant in this session")
    return {"tenant": tenant, "user": os.environ.get("LAYER_USER", ""), "roles": os.environ.get("LAYER_ROLES", "")}


def connect():
    conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=False)
    return conn


def scoped(conn, tenant):
    conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))


def present(model, row, raw=False):
    out = {}
    for field, action in MODELS[model]["fields"].items():
        if field not in row:
            continue
        value = row[field]
        if action == "mask" and not raw and value is not None:
            value = "***"
        if hasattr(value, "isoformat"):
            value = value.isoformat()
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            value = str(value)
        out[camel(field)] = value
    return out


def conditions(model, where):
    """The SQL conditions and parameters for a `{field: {op: value}}` filter."""
    if where is None:
        return [], []
    if not isinstance(where, dict):
        raise Denied("BAD_REQUEST", "`where` must be an object of {field: {op: value}}")
    clauses, params = [], []
    for cfield, ops in where.items():
        field = snake(cfield)
        action = MODELS[model]["fields"].get(field)
        oracle = flaw == "denied_filter" and model == "customers" and field in ("ssn", "name", "email")
        if action != "allow" and not oracle:
            raise Denied("FORBIDDEN_FIELD", f"`{cfield}` cannot be filtered on")
        if not isinstance(ops, dict):
            ops = {"eq": ops}
        for op, value in ops.items():
            if op in OPS:
                clauses.append(sql.SQL("{} " + OPS[op] + " %s").format(sql.Identifier(field)))
                params.append(value)
            elif op == "in" and isinstance(value, list):
                clauses.append(sql.SQL("{} = ANY(%s)").format(sql.Identifier(field)))
                params.append(value)
            else:
                raise Denied("BAD_REQUEST", f"unsupported operator `{op}`")
    return clauses, params


def fetch(conn, model, tenant, clauses, params, take, tenant_filter=True):
    table = MODELS[model]["table"]
    cols = list(MODELS[model]["fields"])
    if tenant_filter:
        clauses = [sql.SQL("tenant_id = %s")] + clauses
        params = [tenant] + params
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in cols), sql.Identifier(table)
    )
    if clauses:
        query += sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses)
    query += sql.SQL(" ORDER BY id LIMIT %s")
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(query, params + [take])
        return cur.fetchall()


def with_includes(conn, model, tenant, rows, include):
    include = include or []
    if not isinstance(include, list):
        raise Denied("BAD_REQUEST", "`include` must be a list")
    out = [present(model, r) for r in rows]
    for name in include:
        rel = MODELS[model]["relations"].get(name)
        if rel is None:
            raise Denied("FORBIDDEN_RELATION", f"`{name}` cannot be included")
        target, fk = rel
        raw = flaw == "raw_relation"
        for shown, row in zip(out, rows):
            found = fetch(conn, target, tenant, [sql.SQL("id = %s")], [row[fk]], 1)
            shown[name] = present(target, found[0], raw=raw) if found else None
    return out


def ok(**payload):
    return {"success": True, **payload}


def refuse(code, message):
    return {"success": False, "error": {"code": code, "message": message}}


def audit(ctx, tool, result):
    """Appends the call's record to the audit log (one line, flushed before the reply)."""
    if not audit_path:
        return
    denied = not result.get("success", False)
    if denied and flaw == "no_audit_denied":
        return
    try:
        who = principal(ctx)
    except Denied:
        who = {"tenant": "", "user": ""}
    record = {
        "at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "tenant": who["tenant"],
        "user": who["user"],
        "tool": tool,
        "outcome": "denied" if denied else "allowed",
        "code": result["error"]["code"] if denied else None,
    }
    with open(audit_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def guarded(fn):
    """Every failure becomes a denial inside a successful result; nothing internal leaks. Every
    outcome is audited."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            result = fn(*args, **kwargs)
        except Denied as d:
            result = refuse(d.code, d.message)
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError):
            result = refuse("BAD_REQUEST", "the values do not fit the data")
        except psycopg.Error:
            result = refuse("INTERNAL", "the request could not be completed")
        except (TypeError, ValueError):
            result = refuse("BAD_REQUEST", "invalid arguments")
        audit(kwargs.get("ctx"), fn.__name__, result)
        return result

    return run


def search(ctx, model, where, take, include):
    p = principal(ctx)
    if take is None:
        take = 20
    if not isinstance(take, int) or isinstance(take, bool) or take < 1:
        raise Denied("BAD_REQUEST", "`take` must be a positive integer")
    take = min(take, MAX_TAKE)
    clauses, params = conditions(model, where)
    tenant_filter = not (flaw == "no_tenant_filter" and model == "orders")
    with connect() as conn:
        scoped(conn, p["tenant"])
        rows = fetch(conn, model, p["tenant"], clauses, params, take, tenant_filter=tenant_filter)
        return ok(items=with_includes(conn, model, p["tenant"], rows, include))


def get(ctx, model, id, include):
    p = principal(ctx)
    if not isinstance(id, int) or isinstance(id, bool):
        raise Denied("BAD_REQUEST", "`id` must be an integer")
    with connect() as conn:
        scoped(conn, p["tenant"])
        rows = fetch(conn, model, p["tenant"], [sql.SQL("id = %s")], [id], 1)
        if not rows:
            raise Denied("NO_SUCH_RECORD", "no such record")
        return ok(item=with_includes(conn, model, p["tenant"], rows, include)[0])


class AuditedMCP(FastMCP):
    """Calls refused before a tool runs (arguments that fail the tool's schema, an unknown tool)
    are audited too."""

    async def call_tool(self, name, arguments):
        try:
            return await super().call_tool(name, arguments)
        except Exception:
            audit(self.get_context(), name, refuse("BAD_REQUEST", "invalid arguments"))
            raise


mcp = AuditedMCP("structured-test-layer")


@mcp.tool()
@guarded
def customers_search(where: dict | None = None, take: int | None = None, include: list | None = None, ctx: Context | None = None) -> dict:
    """Search customers. `where` is {field: {op: value}} with camelCase fields; `take` caps rows."""
    return search(ctx, "customers", where, take, include)


@mcp.tool()
@guarded
def customers_get(id: int, include: list | None = None, ctx: Context | None = None) -> dict:
    """One customer by id."""
    return get(ctx, "customers", id, include)


@mcp.tool()
@guarded
def orders_search(where: dict | None = None, take: int | None = None, include: list | None = None, ctx: Context | None = None) -> dict:
    """Search orders. `where` is {field: {op: value}} with camelCase fields; include `customer`."""
    return search(ctx, "orders", where, take, include)


@mcp.tool()
@guarded
def orders_get(id: int, include: list | None = None, ctx: Context | None = None) -> dict:
    """One order by id."""
    return get(ctx, "orders", id, include)


@mcp.tool()
@guarded
def orders_update(id: int, data: dict, reason: str | None = None, ctx: Context | None = None) -> dict:
    """Change an order's status. A reason is required."""
    p = principal(ctx)
    if not isinstance(id, int) or isinstance(id, bool) or not isinstance(data, dict) or not data:
        raise Denied("BAD_REQUEST", "`id` (integer) and `data` (object) are required")
    if flaw != "no_reason" and (not isinstance(reason, str) or len(reason.strip()) < 10):
        raise Denied("REASON_MISSING", "a reason of at least 10 characters is required")
    fields = {snake(k): v for k, v in data.items()}
    for f in fields:
        if f not in WRITABLE["orders"]:
            raise Denied("READ_ONLY_FIELD", f"`{camel(f)}` cannot be written")
    now = time.monotonic()
    key = (p["tenant"], p["user"])
    recent = [t for t in write_times.get(key, []) if now - t < 60]
    if len(recent) >= MAX_WRITES_PER_MINUTE:
        raise Denied("RATE_LIMITED", "too many writes; wait a minute")
    write_times[key] = recent + [now]
    sets = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(f)) for f in fields)
    with connect() as conn:
        scoped(conn, p["tenant"])
        cur = conn.execute(
            sql.SQL("UPDATE orders SET {} WHERE id = %s AND tenant_id = %s RETURNING id").format(sets),
            list(fields.values()) + [id, p["tenant"]],
        )
        if cur.fetchone() is None:
            raise Denied("NO_SUCH_RECORD", "no such record")
        rows = fetch(conn, "orders", p["tenant"], [sql.SQL("id = %s")], [id], 1)
        return ok(item=present("orders", rows[0]))


def bearer_required(app):
    """Refuses any HTTP request without a valid bearer token with 401, before MCP sees it."""

    async def guard(scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            if verified_claims(headers.get("authorization")) is None:
                body = b'{"error": "invalid or missing bearer token"}'
                await send({
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
                })
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return guard


def serve_http(port):
    import uvicorn

    app = mcp.streamable_http_app()
    if jwt_secret:
        app = bearer_required(app)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def main():
    global flaw, audit_path, jwt_secret
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flaw", default=os.environ.get("LAYER_FLAW", "none"), choices=sorted(FLAWS))
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on 127.0.0.1:PORT")
    parser.add_argument("--audit", default=os.environ.get("LAYER_AUDIT"), metavar="PATH", help="append a JSONL audit record per call")
    parser.add_argument(
        "--jwt-secret",
        default=os.environ.get("LAYER_JWT_SECRET"),
        help="over HTTP, take the principal only from an HS256 bearer token signed with this secret",
    )
    args = parser.parse_args()
    flaw = args.flaw
    audit_path = args.audit
    jwt_secret = args.jwt_secret
    if args.http:
        serve_http(args.http)
    else:
        mcp.run()


if __name__ == "__main__":
    main()
