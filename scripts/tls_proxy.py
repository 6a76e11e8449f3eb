#!/usr/bin/env python3
"""A TLS-terminating TCP proxy for the Kafka TLS test, until killed.

    python3 tls_proxy.py LISTEN_PORT UPSTREAM_PORT CERT KEY

Accepts TLS on 127.0.0.1:LISTEN_PORT with the certificate CERT and its key KEY, and forwards
each connection, decrypted, to 127.0.0.1:UPSTREAM_PORT (a broker that advertises the proxy's
address, so every connection a Kafka client makes goes through TLS). Prints "ready" once it
listens.
"""

import asyncio
import ssl
import sys


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.close()
        except Exception:  # the peer is gone already
            pass


async def main(listen, upstream, cert, key):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def handle(client_reader, client_writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, up_writer), pipe(up_reader, client_writer))

    server = await asyncio.start_server(handle, "127.0.0.1", listen, ssl=context)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]))
