"""The server of tests/run_cli.rs's receive-side test: outside the cgroup.

Each connection reads one request head; the path says what to answer:
  /small       a 566-byte response, then the connection stays open
  /big/N       N bytes of a seeded stream (sha256 printed by the client's
               twin), then close
Prints its port on stdout, then serves until killed.
"""
import hashlib
import socket
import sys
import threading


def stream(n):
    """N deterministic bytes, sent in 64 KiB pieces."""
    block = hashlib.sha256(b"l7c").digest() * 2048  # 64 KiB
    sent = 0
    while sent < n:
        piece = block[: min(len(block), n - sent)]
        yield piece
        sent += len(piece)


def serve(conn):
    with conn:
        head = b""
        while b"\r\n\r\n" not in head:
            data = conn.recv(4096)
            if not data:
                return
            head += data
        path = head.split(b" ")[1].decode()
        if path == "/small":
            body = b"x" * (566 - len("HTTP/1.1 200 OK\r\nContent-Length: 000\r\n\r\n"))
            answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            assert len(answer) == 566, len(answer)
            conn.sendall(answer)
            conn.recv(1)  # the client closes
        elif path.startswith("/big/"):
            n = int(path[len("/big/"):])
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
            for piece in stream(n):
                conn.sendall(piece)


def main():
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(sys.argv[1])))
    listener.listen(64)
    print(listener.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


main()
