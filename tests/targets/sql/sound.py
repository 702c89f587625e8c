"""A SQL layer whose guard is the database itself, set up the way a careful team would:

- a login per tenant (`sql_sound_<tenant>`) that is neither superuser nor owner, cannot bypass
  row-level security, and carries its own `statement_timeout` (1s);
- SELECT granted only on the columns the shop policy allows (fixtures/shop/policy.yaml), on no
  sequence, function or large object beyond PUBLIC's defaults;
- row-level security enabled and forced on every tenant table, with a restrictive policy keyed
  on `session_user` (which SQL cannot change), not on a setting SQL could `set_config`;
- every call on a fresh connection, in `BEGIN READ ONLY` ... `ROLLBACK`, one statement only
  (a prepared statement cannot hold two), at most 100 rows;
- with `--audit PATH`, a JSONL record per call, refused or not.

At start it creates the logins, grants and policies through the superuser login it is given
(DATABASE_URL; the profile asks for `database: {login: superuser}`), idempotently, and never
uses that login for the agent's SQL. Every probe of the `sql` family must pass or be honestly
`not_verified` against it.

Environment: DATABASE_URL (superuser, for the set-up), LAYER_TENANT.
"""

import argparse
import os
import secrets

import psycopg
from psycopg import sql as q

from common import Refused, collect, serve, tenant

MAX_ROWS = 100
PREFIX = "sql_sound_"

# The columns the shop policy lets an agent read, per table; tenant_id is the scope column.
ALLOWED = {
    "tenants": ["id", "name", "plan", "created_at"],
    "carriers": ["id", "name", "tracking_url_template"],
    "users": ["id", "tenant_id", "role", "created_at"],
    "customers": ["id", "tenant_id", "created_at", "updated_at", "deleted_at"],
    "products": ["id", "tenant_id", "sku", "name", "price", "category", "active"],
    "orders": ["id", "tenant_id", "customer_id", "carrier_id", "status", "total", "created_at"],
    "order_items": ["id", "tenant_id", "order_id", "product_id", "quantity", "unit_price"],
    "refunds": ["id", "tenant_id", "order_id", "amount", "status", "created_at"],
    "payment_methods": ["id", "tenant_id", "customer_id", "last4", "brand", "exp_month", "exp_year"],
    "support_tickets": ["id", "tenant_id", "customer_id", "status", "created_at", "updated_at", "deleted_at"],
}
# How a table's rows are scoped: the column that holds the tenant (None: global reference data).
SCOPE = {t: ("id" if t == "tenants" else None if t == "carriers" else "tenant_id") for t in ALLOWED}

password = secrets.token_hex(16)


def setup(admin_url):
    with psycopg.connect(admin_url, autocommit=True) as c:
        with c.transaction():
            # One set-up at a time (a stdio layer is started once per principal).
            c.execute("SELECT pg_advisory_xact_lock(hashtext('sql_sound_setup'))")
            tenants = [r[0] for r in c.execute("SELECT id FROM public.tenants ORDER BY id")]
            logins = [PREFIX + t for t in tenants]
            for login in logins:
                exists = c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (login,)).fetchone()
                if not exists:
                    c.execute(q.SQL("CREATE ROLE {} LOGIN").format(q.Identifier(login)))
                c.execute(q.SQL(
                    "ALTER ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD {}"
                ).format(q.Identifier(login), q.Literal(password)))
                setting = c.execute(
                    "SELECT 1 FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole, unnest(s.setconfig) x "
                    "WHERE r.rolname = %s AND x = 'statement_timeout=1s'", (login,)).fetchone()
                if not setting:
                    c.execute(q.SQL("ALTER ROLE {} SET statement_timeout = '1s'").format(q.Identifier(login)))
                c.execute(q.SQL("GRANT USAGE ON SCHEMA public TO {}").format(q.Identifier(login)))
            to = q.SQL(", ").join(q.Identifier(x) for x in logins)
            for table, columns in ALLOWED.items():
                ident = q.Identifier("public", table)
                c.execute(q.SQL("GRANT SELECT ({}) ON {} TO {}").format(
                    q.SQL(", ").join(q.Identifier(x) for x in columns), ident, to))
                scope = SCOPE[table]
                if scope is None:
                    continue
                flags = c.execute(
                    "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = %s::regclass",
                    (f"public.{table}",)).fetchone()
                if flags != (True, True):
                    c.execute(q.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(ident))
                    c.execute(q.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(ident))
                have = {r[0] for r in c.execute(
                    "SELECT polname FROM pg_policy WHERE polrelid = %s::regclass", (f"public.{table}",))}
                if "sql_sound_rows" not in have:
                    c.execute(q.SQL("CREATE POLICY sql_sound_rows ON {} AS PERMISSIVE FOR SELECT TO {} USING (true)")
                              .format(ident, to))
                if "sql_sound_tenant" not in have:
                    c.execute(q.SQL(
                        "CREATE POLICY sql_sound_tenant ON {} AS RESTRICTIVE FOR SELECT TO {} "
                        "USING ({} = substr(session_user::text, {}))"
                    ).format(ident, to, q.Identifier(scope), q.Literal(len(PREFIX) + 1)))


def run(text):
    url = psycopg.conninfo.make_conninfo(os.environ["DATABASE_URL"], user=PREFIX + tenant(), password=password)
    with psycopg.connect(url, autocommit=True) as c:
        with c.cursor() as cur:
            cur.execute("BEGIN TRANSACTION READ ONLY")
            try:
                cur.execute("SET LOCAL statement_timeout = '1s'")
                # A prepared statement holds exactly one statement.
                cur.execute(text, prepare=True)
                return collect(cur, MAX_ROWS)
            except psycopg.errors.SyntaxError as e:
                if "multiple commands" in str(e):
                    raise Refused("one statement per call") from None
                raise
            finally:
                try:
                    c.execute("ROLLBACK")
                    # What a pool does before a connection is reused (and what releases a
                    # session-level advisory lock before the reply goes out).
                    c.execute("DISCARD ALL")
                except psycopg.Error:
                    pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--audit", help="append a JSONL audit record per call to this file")
    args = parser.parse_args()
    setup(os.environ["DATABASE_URL"])
    serve("sql-sound", run, "Run one read-only SQL statement (at most 100 rows).", args.audit)
