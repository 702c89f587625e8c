"""What the three SQL test layers share: the MCP server with its one `execute_sql` tool, and how
rows become JSON.

Each layer module defines `run(sql) -> list[dict]` and raises `Refused` (or lets a psycopg error
through) to refuse; the tool turns a refusal or an error into an MCP `isError` result with the
message, the way SQL-tool servers in the wild answer.
"""

import datetime
import decimal
import json
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


def audit(path, outcome):
    """Appends one record per call, refused or not, to the JSONL log at `path` (if any).
    With LAYER_FLAW=no_audit_denied, refused calls leave no record (the flaw the audit family
    must catch)."""
    if not path:
        return
    if outcome == "denied" and os.environ.get("LAYER_FLAW") == "no_audit_denied":
        return
    record = {
        "at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "tenant": os.environ.get("LAYER_TENANT", ""),
        "user": os.environ.get("LAYER_USER", ""),
        "tool": "execute_sql",
        "outcome": outcome,
    }
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def serve(name, run, describe, audit_path=None):
    mcp = FastMCP(name)

    @mcp.tool(description=describe)
    def execute_sql(sql: str = "") -> dict:
        # A call without SQL (malformed arguments) is refused here, not by the framework, so
        # that it is audited like any other refusal.
        try:
            if not sql.strip():
                raise Refused("no SQL given")
            rows = run(sql)
        except Refused as e:
            audit(audit_path, "denied")
            raise ValueError(f"refused: {e}") from None
        except psycopg.Error as e:
            audit(audit_path, "denied")
            raise ValueError(f"database error: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        except Exception as e:
            audit(audit_path, "denied")
            raise ValueError(f"error: {type(e).__name__}: {e}") from None
        audit(audit_path, "allowed")
        return {"rows": rows}

    mcp.run()
