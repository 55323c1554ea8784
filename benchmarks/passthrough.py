"""A bare pass-through proxy: the floor of one more Python HTTP hop on this machine.

The gateway sits between clients and its scoring server, so each request crosses loopback
twice more and wakes one more process. This proxy does only that: it forwards each
``POST /invocations`` body as it came to the upstream scoring server and returns the answer's
status, content type and bytes; no parsing, validation, logging or metrics. It runs on the
same server stack as the gateway (uvicorn with uvloop and httptools, access log off) and calls
upstream with the same aiohttp session settings (gateway/serving/scoring.py), so what the
gateway adds beyond this proxy is its own work, and what this proxy adds over direct is the
hop itself.
The serving benchmark runs it next to the gateway::

    python -m benchmarks.passthrough --upstream http://127.0.0.1:5001 --port 8200
"""

from __future__ import annotations

import argparse

import aiohttp
import uvicorn

READY = b'{"status": "ready"}'
NOT_FOUND = b'{"detail": "Not Found"}'


def create_app(upstream: str, max_connections: int = 8):
    """A raw ASGI app (no framework) forwarding /invocations to ``upstream``."""
    url = f"{upstream.rstrip('/')}/invocations"
    client: dict[str, aiohttp.ClientSession] = {}

    async def lifespan(receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Made here, inside the server's running loop, as the gateway makes its own.
                client["session"] = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=2.0),
                    timeout=aiohttp.ClientTimeout(total=None),
                    skip_auto_headers=("User-Agent",),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await client.pop("session").close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def respond(send, status: int, body: bytes, content_type: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", content_type)],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        if scope["type"] != "http":
            return None
        if scope["method"] == "GET" and scope["path"] == "/ready":
            return await respond(send, 200, READY, b"application/json")
        if scope["method"] != "POST" or scope["path"] != "/invocations":
            return await respond(send, 404, NOT_FOUND, b"application/json")
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        content_type = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"content-type"),
            "application/json",
        )
        async with client["session"].post(
            url, data=b"".join(chunks), headers={"Content-Type": content_type}
        ) as reply:
            body = await reply.read()
            answer_type = reply.headers.get("Content-Type", "application/json")
            status = reply.status
        return await respond(send, status, body, answer_type.encode("latin-1"))

    return app


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--upstream", required=True, help="scoring server, e.g. http://127.0.0.1:5001")
    cli.add_argument("--host", default="127.0.0.1")
    cli.add_argument("--port", type=int, default=8200)
    args = cli.parse_args()
    uvicorn.run(
        create_app(args.upstream),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
