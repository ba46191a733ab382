#!/usr/bin/python3
"""A faulty backend for scripts/bench's faulty scenario, on 127.0.0.1.

  faulty_backend.py garbage   answers every request with bytes that are not HTTP
  faulty_backend.py silent    accepts, reads, never answers (like a backend frozen
                              with SIGSTOP once its accept queue is full, or hung)
Prints "PORT n", runs until killed.
"""
import socket
import sys
import threading


def serve(conn, mode):
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            if mode == "garbage" and b"\r\n\r\n" in data:
                conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")
    except OSError:
        pass
    finally:
        conn.close()


def main():
    mode = sys.argv[1]
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(512)
    print("PORT %d" % ls.getsockname()[1], flush=True)
    while True:
        conn, _ = ls.accept()
        threading.Thread(target=serve, args=(conn, mode), daemon=True).start()


if __name__ == "__main__":
    main()
