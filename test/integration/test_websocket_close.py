"""WebSocket close frames (issue 12 item 4): usher follows RFC 6455 frames
both ways after a 101 and, shutdown.tunnel_close_grace before a drain
deadline, sends 1001 "going away" to the client (unmasked) and to the
backend (masked), so both sides see a clean close handshake instead of a
cut TCP connection (1006)."""

import asyncio
import signal
import socket
import struct
import time

import usher_proc
import wire
from clients import WsClient as WSClient
from servers import WsEchoServer as WSEchoServer
from usher_proc import drain_signal

GRACE = 1.0


class RecordingEcho(WSEchoServer):
    """WSEchoServer that records the close code each session ended with."""

    def __init__(self, name):
        super().__init__(name, tag=True)
        self.close_codes = []

    async def _handler(self, ws, *args):
        self.sessions_active += 1
        self.sessions += 1
        try:
            async for msg in ws:
                await ws.send("%s:%s" % (self.name, msg))
        except Exception:  # pylint: disable=broad-except
            pass
        finally:
            self.close_codes.append(ws.close_code)
            self.sessions_active -= 1


def _wait_close(c, timeout):
    """Waits until the session ends; returns (code, reason, monotonic time)."""
    async def _recv():
        try:
            while True:
                await asyncio.wait_for(c.ws.recv(), timeout)
        except Exception:  # pylint: disable=broad-except
            pass
        return c.ws.close_code, c.ws.close_reason
    code, reason = c.aio.run(_recv(), timeout + 2)
    return code, reason, time.monotonic()


def _cfg(backends, **kw):
    return usher_proc.make_config(pools={"ws": backends}, **kw)


def test_process_drain_sends_1001_grace_before_the_deadline(servers, usher_factory):
    w = servers.add(RecordingEcho("ws-1").start())
    u = usher_factory(_cfg([w], shutdown={"timeout": "3s", "tunnel_close_grace": "1s"}))
    c = servers.add(WSClient("ws://127.0.0.1:%d/echo" % u.port))
    assert c.exchange("hello") == "ws-1:hello"
    t0 = drain_signal(u, signal.SIGTERM)
    code, _, t_close = _wait_close(c, 5.0)
    print("\nWS process drain: close code %s at +%.2fs (timeout 3s, grace 1s)" % (code, t_close - t0))
    assert code == 1001, "client saw close code %s (1006 = TCP cut without a close frame)" % code
    assert 2.0 - 0.2 <= t_close - t0 <= 2.0 + 0.6, t_close - t0
    wire.wait_until(lambda: w.close_codes, 2.0, what="backend session end")
    assert w.close_codes == [1001], w.close_codes
    # the close handshake finished before the deadline: nothing was cut
    assert u.wait_exit(3.0) == 0, u.log()


def test_deregistration_delay_ends_with_1001(servers, usher_factory):
    w1 = servers.add(RecordingEcho("ws-1").start())
    w2 = servers.add(RecordingEcho("ws-2").start())
    cfg = _cfg([w1, w2], shutdown={"tunnel_close_grace": "1s"})
    cfg["pools"][0]["deregistration_delay"] = "2500ms"
    u = usher_factory(cfg)
    # round robin, but with several workers two new connections need not
    # alternate: open sessions until one runs on each backend
    by_backend = {}
    on_ws1 = 0
    for _ in range(8):
        s = servers.add(WSClient("ws://127.0.0.1:%d/echo" % u.port))
        name = s.exchange("x").split(":", 1)[0]
        on_ws1 += name == "ws-1"
        by_backend.setdefault(name, s)
        if len(by_backend) == 2:
            break
    assert set(by_backend) == {"ws-1", "ws-2"}, by_backend
    mine, other = by_backend["ws-1"], by_backend["ws-2"]
    new = dict(cfg, pools=[dict(cfg["pools"][0],
                                backends=[b for b in cfg["pools"][0]["backends"]
                                          if b["name"] != "ws-1"])])
    t0 = time.monotonic()
    u.reload(new)
    # still flowing during the delay
    time.sleep(0.5)
    assert mine.exchange("during") == "ws-1:during"
    code, _, t_close = _wait_close(mine, 5.0)
    print("\nWS deregistration: close code %s at +%.2fs (delay 2.5s, grace 1s)" % (code, t_close - t0))
    assert code == 1001, code
    assert 1.5 - 0.2 <= t_close - t0 <= 1.5 + 0.6, t_close - t0
    wire.wait_until(lambda: len(w1.close_codes) >= on_ws1, 2.0, what="backend session end")
    assert w1.close_codes == [1001] * on_ws1, w1.close_codes
    assert other.exchange("untouched") == "ws-2:untouched"


def test_untrackable_stream_keeps_its_connection_until_the_deadline(backend_factory, servers,
                                                                  usher_factory):
    """A peer whose frames have impossible lengths loses only the courtesy:
    the tunnel keeps flowing until the deadline and the process survives."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    port = lsock.getsockname()[1]
    cfg = _cfg([{"name": "raw", "address": "127.0.0.1:%d" % port, "weight": 1}],
               shutdown={"timeout": "2s", "tunnel_close_grace": "1s"})
    u = usher_factory(cfg)
    c = socket.create_connection(("127.0.0.1", u.port), timeout=5.0)
    c.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    b, _ = lsock.accept()
    b.settimeout(5.0)
    head = b""
    while b"\r\n\r\n" not in head:
        head += b.recv(4096)
    b.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got:
        got += c.recv(4096)
    assert got.startswith(b"HTTP/1.1 101"), got
    # a 64-bit length with its top bit set: not a frame stream usher can follow
    b.sendall(b"\x82\x7f\x80\x00\x00\x00\x00\x00\x00\x01" + b"z" * 100)
    got = b""
    while len(got) < 110:
        got += c.recv(4096)
    t0 = drain_signal(u, signal.SIGTERM)
    time.sleep(1.3)   # past deadline - grace: no close frame, still flowing
    b.sendall(b"more")
    assert c.recv(4096) == b"more"
    c.settimeout(3.0)
    rest = b""
    try:
        while True:
            d = c.recv(4096)
            if not d:
                break
            rest += d
    except OSError:
        pass
    assert time.monotonic() - t0 >= 1.8, "cut before the deadline"
    assert b"\x88" not in rest, rest
    assert u.wait_exit(3.0) == 1, u.log()   # a tunnel was cut at the deadline
    c.close()
    b.close()
    lsock.close()
