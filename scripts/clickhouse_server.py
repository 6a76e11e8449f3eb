#!/usr/bin/env python3
"""Runs a real ClickHouse server (from the chdb-core wheel) for the tests, until killed.

    python clickhouse_server.py DIR

chdb embeds the ClickHouse server. Its HTTP and native (TCP) listeners run only while a query
runs, so this starts them and then runs a query that never returns. Ports and the data path
come from DIR/config.xml, which this writes (chdb reads config.xml from the working
directory). The chosen ports are written to DIR/http_port and DIR/tcp_port once the config
is in place; the caller then waits until http://127.0.0.1:PORT/ping answers.
"""

import os
import socket
import sys

CONFIG = """<clickhouse>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{http}</http_port>
    <tcp_port>{tcp}</tcp_port>
    <path>{data}/</path>
    <tmp_path>{data}/tmp/</tmp_path>
    <user_files_path>{data}/user_files/</user_files_path>
    <logger><level>warning</level><console>1</console></logger>
</clickhouse>
"""

# One row a second, forever: keeps the listeners up. sleepEachRow is capped at 3 s per block,
# hence one-row blocks.
FOREVER = (
    "SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP; "
    "SELECT sleepEachRow(1) FROM system.numbers SETTINGS max_block_size = 1"
)


def free_port() -> int:
    # Bound and released at once: another process could take it before ClickHouse does,
    # which the caller notices as a server that never answers /ping.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} DIR")
    work = os.path.abspath(sys.argv[1])
    data = os.path.join(work, "data")
    os.makedirs(data, exist_ok=True)
    http, tcp = free_port(), free_port()
    with open(os.path.join(work, "config.xml"), "w", encoding="utf-8") as f:
        f.write(CONFIG.format(http=http, tcp=tcp, data=data))
    os.chdir(work)
    for name, port in (("http_port", http), ("tcp_port", tcp)):
        with open(os.path.join(work, name), "w", encoding="utf-8") as f:
            f.write(f"{port}\n")
    print(f"clickhouse: http 127.0.0.1:{http}, tcp 127.0.0.1:{tcp}, data {data}", flush=True)

    import chdb._chdb  # noqa: PLC0415 (after chdir: chdb reads ./config.xml when it starts)

    chdb._chdb.query(FOREVER, "CSV")
    sys.exit("clickhouse: the listening query returned; the server is gone")


if __name__ == "__main__":
    main()
