"""A SQL layer guarded by a keyword list: statements that start with INSERT, UPDATE, DELETE, DROP,
ALTER, CREATE, ... are refused; everything else runs, as the owner, on one long-lived
connection in autocommit, several statements per message.

The guard reads the first word only. Everything that does not start with a listed word gets
through: a leading comment, a writing CTE (`WITH d AS (DELETE ...)`), `SELECT ... INTO`,
`EXPLAIN ANALYZE`, `DO`, `PREPARE`/`EXECUTE`, `SELECT nextval(...)`, `SELECT pg_advisory_lock(...)`,
`COMMIT; ...`, `SELECT 1; DELETE ...`. The `sql` probe family must name each of them.

Environment: DATABASE_URL (the login the profile names), LAYER_TENANT.
"""

import os

import psycopg

from common import Refused, collect, serve, tenant

BLOCKED = {
    "INSERT", "UPDATE", "DELETE", "MERGE", "DROP", "ALTER", "CREATE", "TRUNCATE", "GRANT",
    "REVOKE", "COPY", "COMMENT", "VACUUM", "REINDEX", "CLUSTER", "LOCK", "CALL", "REFRESH",
}

conn = None


def connection():
    global conn
    if conn is None or conn.closed or conn.broken:
        conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (tenant(),))
    return conn


def run(sql):
    words = sql.split()
    first = words[0].upper().rstrip(";") if words else ""
    if first in BLOCKED:
        raise Refused(f"{first} statements are not allowed; only read queries")
    with connection().cursor() as cur:
        cur.execute(sql)
        return collect(cur)


if __name__ == "__main__":
    serve("sql-keyword-guard", run, "Run a read-only SQL query against the shop database.")
