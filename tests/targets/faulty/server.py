"""A layer with faults, for preflight's tests of how it handles a target that misbehaves.

--mode crash    writes a few lines to stderr (one with a database password) and exits at start
--mode hang     answers `initialize` and `tools/list`, then never answers a tool call
--mode garbage  answers `initialize` and `tools/list`, then answers tool calls with broken JSON-RPC

Speaks newline-delimited JSON-RPC on stdio by hand on purpose: a real SDK would not misbehave.
`--marker` is ignored; the tests use it to find this process afterwards.
"""

import argparse
import json
import sys
import time

TOOLS = [
    {
        "name": name,
        "description": f"{name} of the faulty layer",
        "inputSchema": {"type": "object", "properties": {}, "additionalProperties": True},
    }
    for name in ("db_query", "db_get", "db_update")
]


def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["crash", "hang", "garbage"], required=True)
    parser.add_argument("--marker", default="")
    args = parser.parse_args()
    if args.mode == "crash":
        print("faulty layer: starting", file=sys.stderr)
        print("faulty layer: cannot connect to postgres://layer:hunter2@db.internal:5432/shop", file=sys.stderr)
        print("faulty layer: giving up", file=sys.stderr)
        sys.exit(3)
    for line in sys.stdin:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        method, mid = msg.get("method"), msg.get("id")
        if mid is None:
            continue
        if method == "initialize":
            send({"jsonrpc": "2.0", "id": mid, "result": {
                "protocolVersion": msg.get("params", {}).get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "faulty-layer", "version": "0.0.1"},
            }})
        elif method == "tools/list":
            send({"jsonrpc": "2.0", "id": mid, "result": {"tools": TOOLS}})
        elif method == "tools/call":
            if args.mode == "hang":
                time.sleep(3600)
            else:
                sys.stdout.write('{"jsonrpc": "2.0", "id": ' + json.dumps(mid) + ', "result": {"content": 7\n')
                sys.stdout.write("Traceback (most recent call last): this is not JSON-RPC\n")
                sys.stdout.flush()
        else:
            send({"jsonrpc": "2.0", "id": mid, "error": {"code": -32601, "message": "method not found"}})


if __name__ == "__main__":
    main()
