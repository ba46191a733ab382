#!/usr/bin/python3
"""WebSocket echo helper for scripts/bench (python3-websockets), loopback only.

  ws_echo.py serve                 echo server on 127.0.0.1; prints "PORT n", runs until killed
  ws_echo.py client --url U --bytes N --count K
                                   K round trips of one N-byte binary message;
                                   prints "BENCH mbps=... seconds=..." (MB echoed per second)
"""
import argparse
import asyncio
import sys
import time

import websockets


async def serve():
    async def echo(ws, *args):
        async for msg in ws:
            await ws.send(msg)
    server = await websockets.serve(echo, "127.0.0.1", 0, max_size=None, ping_interval=None)
    print("PORT %d" % server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Future()


async def client(url, nbytes, count):
    payload = bytes(range(256)) * (nbytes // 256)
    async with websockets.connect(url, max_size=None, ping_interval=None) as ws:
        await ws.send(payload)       # warm-up
        await ws.recv()
        t0 = time.monotonic()
        for _ in range(count):
            await ws.send(payload)
            got = await ws.recv()
            if len(got) != len(payload):
                raise SystemExit("echo length %d != %d" % (len(got), len(payload)))
        secs = time.monotonic() - t0
    print("BENCH mbps=%.2f seconds=%.3f" % (count * len(payload) / secs / 1e6, secs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("serve", "client"))
    ap.add_argument("--url")
    ap.add_argument("--bytes", type=int, default=1 << 20)
    ap.add_argument("--count", type=int, default=20)
    a = ap.parse_args()
    if a.mode == "serve":
        asyncio.run(serve())
    else:
        asyncio.run(client(a.url, a.bytes, a.count))


if __name__ == "__main__":
    sys.exit(main())
