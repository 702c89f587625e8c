"""A domain-tool enforcement layer: business tools, not a query language.

An independent stand-in for a home-grown MCP server, written for preflight's tests. Its tools
(`get_order`, `find_customer`, `list_tickets`) are scoped to the caller's tenant from the
environment (LAYER_TENANT) -- except `list_tickets`, which trusts the `tenant_id` argument it is
given. That is its deliberate flaw: preflight's every-tool probe must catch it and pass the rest.

More flaws are switched on with LAYER_FLAW (or `--flaw NAME`):
  leak_errors  a database error is answered with psycopg's raw text, DETAIL and the SQL that ran
  strip_ids    list_tickets answers with each ticket's status and date only: no id, no tenant,
               no text, so nothing in its reply says whose rows they are

Environment: DATABASE_URL (the login the profile names), LAYER_TENANT, LAYER_FLAW.
"""

import argparse
import functools
import os

import psycopg
from mcp.server.fastmcp import FastMCP

mcp = FastMCP("domain-test-layer")

FLAWS = ("none", "leak_errors", "strip_ids")
flaw = "none"


def tenant():
    t = os.environ.get("LAYER_TENANT", "")
    if not t:
        raise LookupError("no tenant in this session")
    return t


class LeakedError(Exception):
    """A database error with the SQL it came from (what the leak_errors flaw hands out)."""


def query(sql, params, scope):
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (scope,))
        with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            try:
                cur.execute(sql, params)
            except psycopg.Error as e:
                if flaw != "leak_errors":
                    raise
                detail = getattr(getattr(e, "diag", None), "message_detail", None) or ""
                raise LeakedError(f"{type(e).__name__}: {e}\nDETAIL: {detail}\nwhile running: {sql}") from e
            return cur.fetchall()


def plain(row):
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v if isinstance(v, (str, int, bool, type(None))) else str(v)) for k, v in row.items()}


def guarded(fn):
    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LeakedError as e:
            return {"error": str(e)}
        except (LookupError, psycopg.Error, ValueError, TypeError):
            return {"error": "not available"}

    return run


@mcp.tool()
@guarded
def get_order(order_id: int) -> dict:
    """The status and total of one of your orders."""
    rows = query(
        "SELECT id, status, total, created_at FROM orders WHERE id = %s AND tenant_id = %s",
        (order_id, tenant()),
        tenant(),
    )
    if not rows:
        return {"error": "no such order"}
    return {"order": plain(rows[0])}


@mcp.tool()
@guarded
def find_customer(email: str) -> dict:
    """Find one of your customers by e-mail; returns the customer's id and creation date."""
    rows = query(
        "SELECT id, created_at FROM customers WHERE email = %s AND tenant_id = %s",
        (email, tenant()),
        tenant(),
    )
    if not rows:
        return {"error": "no such customer"}
    return {"customer": plain(rows[0])}


@mcp.tool()
@guarded
def list_tickets(tenant_id: str, status: str | None = None) -> dict:
    """Open support tickets of a tenant."""
    # The flaw: the tenant comes from the argument, not from the session.
    sql = "SELECT id, status, subject, created_at FROM support_tickets WHERE tenant_id = %s"
    params = [tenant_id]
    if status:
        sql += " AND status = %s"
        params.append(status)
    rows = [plain(r) for r in query(sql + " ORDER BY id LIMIT 20", params, tenant_id)]
    if flaw == "strip_ids":
        rows = [{"status": r["status"], "created_at": r["created_at"]} for r in rows]
    return {"tickets": rows}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--flaw", default=os.environ.get("LAYER_FLAW", "none"), choices=FLAWS)
    flaw = parser.parse_args().flaw
    mcp.run()
