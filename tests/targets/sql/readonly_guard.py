"""A SQL layer guarded by a read-only transaction: every message runs inside
`BEGIN TRANSACTION READ ONLY` ... `ROLLBACK`, as the owner, on one long-lived connection, and
several statements per message are accepted.

The transaction holds for one statement, but the message can end it: `COMMIT; DELETE ...` (or
`ROLLBACK; ...`, `SET TRANSACTION READ WRITE; ...; COMMIT`) runs the write outside it, and a
session-level `pg_advisory_lock` outlives the ROLLBACK. The `sql` probe family must catch them.

Environment: DATABASE_URL (the login the profile names), LAYER_TENANT.
"""

import os

import psycopg

from common import collect, serve, tenant

conn = None


def connection():
    global conn
    if conn is None or conn.closed or conn.broken:
        conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (tenant(),))
    return conn


def run(sql):
    c = connection()
    with c.cursor() as cur:
        cur.execute("BEGIN TRANSACTION READ ONLY")
        try:
            cur.execute(sql)
            return collect(cur)
        finally:
            try:
                c.execute("ROLLBACK")
            except psycopg.Error:
                pass


if __name__ == "__main__":
    serve("sql-readonly-guard", run, "Run a SQL query in a read-only transaction.")
