#!/usr/bin/python3
"""gRPC helper for scripts/bench (python3-grpcio, generic handlers, raw bytes:
no protoc, no generated code).

  grpc_echo.py serve [--port P] [--grace S] [--workers N]
      An h2c gRPC server on 127.0.0.1 whose method /bench.Echo/Echo answers
      the request's bytes. Prints "PORT <p>" once it listens. On SIGTERM it
      stops gracefully: server.stop(grace) (new calls refused, calls in
      flight finish within <grace> s, GOAWAY to every connection), prints
      "STOPPED", exits 0.
  grpc_echo.py client --port P --seconds S [--threads N] [--deadline D] [--method M]
      <threads> threads, each calling M (default /bench.Echo/Echo) in a loop on its own
      channel (h2c, no TLS) for <seconds> s (at least once), each call with a <deadline> s
      deadline and no retry (grpc.enable_retries 0: a failure the proxy
      lets through is counted, not hidden by the client). Prints one line:
      BENCH calls=N ok=N failed=N first_error=<code> plus failed_<CODE>=N
      per status code seen.

Loopback only; every run is bounded (the client by --seconds, the server by
the bench's process cleanup)."""
import argparse
import signal
import sys
import threading
import time

import grpc

SERVICE = "bench.Echo"
METHOD = "Echo"
PAYLOAD = b"hello from backend\n"
# grpc-core's default is 4 MB; the bench's messages are small
CHANNEL_OPTIONS = [("grpc.enable_retries", 0), ("grpc.so_reuseport", 1)]


def serve(a):
    from concurrent import futures
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(lambda req, ctx: req)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=a.workers),
                         options=[("grpc.so_reuseport", 1)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"127.0.0.1:{a.port}")
    if not port:
        print(f"cannot bind 127.0.0.1:{a.port}", file=sys.stderr, flush=True)
        return 1
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"PORT {port}", flush=True)
    while not stop.wait(0.2):
        pass
    server.stop(a.grace).wait(a.grace + 5)
    print("STOPPED", flush=True)
    return 0


def client(a):
    end = time.monotonic() + a.seconds
    lock = threading.Lock()
    counts = {"calls": 0, "ok": 0}
    failed = {}
    first = []

    def loop():
        with grpc.insecure_channel(f"127.0.0.1:{a.port}", options=CHANNEL_OPTIONS) as ch:
            call = ch.unary_unary(a.method)
            while True:   # at least one call, then until the end
                try:
                    ok = call(PAYLOAD, timeout=a.deadline) == PAYLOAD
                    code, details = (None, "") if ok else ("BAD_BODY", "")
                except grpc.RpcError as e:
                    code = e.code().name if e.code() else "UNKNOWN"
                    details = e.details() or ""
                with lock:
                    counts["calls"] += 1
                    if code is None:
                        counts["ok"] += 1
                    else:
                        failed[code] = failed.get(code, 0) + 1
                        if not first:
                            first.append(f"{code}:{details}")
                if time.monotonic() >= end:
                    break

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(a.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(a.seconds + a.deadline + 5)
    with lock:
        n_failed = sum(failed.values())
        extra = " ".join(f"failed_{k}={v}" for k, v in sorted(failed.items()))
        err = first[0].replace(" ", "_")[:120] if first else "-"
        print(f"BENCH calls={counts['calls']} ok={counts['ok']} failed={n_failed} {extra}".rstrip()
              + f" first_error={err}", flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--grace", type=float, default=2.0)
    s.add_argument("--workers", type=int, default=16)
    c = sub.add_parser("client")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--seconds", type=float, required=True)
    c.add_argument("--threads", type=int, default=4)
    c.add_argument("--deadline", type=float, default=5.0)
    c.add_argument("--method", default=f"/{SERVICE}/{METHOD}")
    a = ap.parse_args()
    return serve(a) if a.cmd == "serve" else client(a)


if __name__ == "__main__":
    sys.exit(main())
