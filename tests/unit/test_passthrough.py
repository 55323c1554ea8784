"""The benchmark's bare proxy, on a real uvicorn in front of a real aiohttp server on loopback:
bodies go upstream as they came and answers come back with their status and content type."""

from __future__ import annotations

import asyncio

import aiohttp
import uvicorn
from aiohttp import web
from aiohttp.test_utils import TestServer

from benchmarks.passthrough import create_app

SPLIT = "application/json; format=pandas-split"


async def _exchange() -> tuple[list[tuple], dict]:
    seen: list[tuple] = []

    async def invocations(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append((request.method, request.path, request.headers["Content-Type"], body))
        if body == b"bad":
            return web.Response(status=400, body=b'{"error": "bad"}', content_type="text/x-error")
        return web.Response(body=b'{"predictions": [' + body + b"]}", content_type="text/json")

    upstream_app = web.Application()
    upstream_app.router.add_post("/invocations", invocations)
    upstream = TestServer(upstream_app, host="127.0.0.1")
    await upstream.start_server()
    config = uvicorn.Config(
        create_app(str(upstream.make_url("/"))),
        host="127.0.0.1",
        port=0,
        lifespan="on",
        log_config=None,
        access_log=False,
    )
    proxy = uvicorn.Server(config)
    serving = asyncio.create_task(proxy.serve())
    try:
        async with asyncio.timeout(20):
            while not proxy.started:
                await asyncio.sleep(0.01)
        port = proxy.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        answers = {}
        async with aiohttp.ClientSession() as client:
            for name, method, path, data in (
                ("ready", "GET", "/ready", None),
                ("ok", "POST", "/invocations", b'{"text": "\xc3\xa9t\xc3\xa9"}'),
                ("bad", "POST", "/invocations", b"bad"),
                ("elsewhere", "POST", "/predict", b"{}"),
            ):
                headers = {"Content-Type": SPLIT}
                async with client.request(method, base + path, data=data, headers=headers) as r:
                    answers[name] = (r.status, r.headers["Content-Type"], await r.read())
    finally:
        proxy.should_exit = True
        await serving
        await upstream.close()
    return seen, answers


def test_bodies_go_upstream_unchanged_and_answers_come_back_as_they_were():
    seen, answers = asyncio.run(_exchange())
    assert answers["ready"][0] == 200
    body = b'{"text": "\xc3\xa9t\xc3\xa9"}'
    assert answers["ok"] == (200, "text/json", b'{"predictions": [' + body + b"]}")
    assert answers["bad"] == (400, "text/x-error", b'{"error": "bad"}')
    assert answers["elsewhere"][0] == 404
    # Only the two /invocations bodies reached the upstream, with their own content type.
    assert seen == [
        ("POST", "/invocations", SPLIT, body),
        ("POST", "/invocations", SPLIT, b"bad"),
    ]
