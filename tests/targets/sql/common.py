"""What the three SQL test layers share: the MCP server with its one `execute_sql` tool, and how
rows become JSON.

Each layer module defines `run(sql) -> list[dict]` and raises `Refused` (or lets a psycopg error
through) to refuse; the tool turns a refusal or an error into an MCP `isError` result with the
message, the way SQL-tool servers in the wild answer.
"""

import datetime
import decimal
import os

import psycopg
from mcp.server.fastmcp import FastMCP


class Refused(Exception):
    """The guard refused the statement before it reached the database."""


def tenant():
    t = os.environ.get("LAYER_TENANT", "")
    if not t:
        raise Refused("no tenant in this session")
    return t


def plain(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, (datetime.date, datetime.datetime, datetime.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, datetime.timedelta)):
        return str(value)
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return str(value)


def collect(cur, cap=None):
    """The rows of the last result that has any (several statements give several results)."""
    rows = []
    while True:
        if cur.description is not None:
            names = [c.name for c in cur.description]
            got = cur.fetchmany(cap) if cap else cur.fetchall()
            rows = [{n: plain(v) for n, v in zip(names, r)} for r in got]
        if not cur.nextset():
            return rows


def serve(name, run, describe):
    mcp = FastMCP(name)

    @mcp.tool(description=describe)
    def execute_sql(sql: str) -> dict:
        try:
            return {"rows": run(sql)}
        except Refused as e:
            raise ValueError(f"refused: {e}") from None
        except psycopg.Error as e:
            raise ValueError(f"database error: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None

    mcp.run()
