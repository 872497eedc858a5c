"""A bare aiohttp server: the ceiling of the framework on this machine.

``GET /bare`` answers a fixed 1 KiB body; ``POST /bare`` reads the request
body and answers the same 1 KiB (about the size of a ``.tlog-proof``
bundle). No middleware, no logging: what the server benchmarks compare
firmlog's handlers against, measured with the same wrk settings in the same
run. Listens on 127.0.0.1 only.

Run: ``.venv/bin/python loadtests/load_bare_server.py --port 8099``
"""

from __future__ import annotations

import argparse

from aiohttp import web

BODY = b"x" * 1023 + b"\n"


async def get_bare(request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="text/plain")


async def post_bare(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=BODY, content_type="text/plain")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_get("/bare", get_bare)
    app.router.add_post("/bare", post_bare)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
