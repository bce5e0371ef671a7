"""The client of tests/run_cli.rs's receive-side test: runs in the
governed cgroup, so its connections are enrolled. Prints one line per
check, `ok NAME ...` or `FAIL NAME ...`, and exits 1 on a failure.
"""
import fcntl
import hashlib
import select
import socket
import struct
import sys
import termios
import time

PORT = int(sys.argv[1])
failed = False


def report(name, ok, detail):
    global failed
    failed |= not ok
    print(("ok " if ok else "FAIL ") + name + " " + detail, flush=True)


def connect(path):
    s = socket.create_connection(("127.0.0.1", PORT))
    s.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
    return s


def fionread(s):
    return struct.unpack("i", fcntl.ioctl(s, termios.FIONREAD, b"\0\0\0\0"))[0]


# FIONREAD counts what is queued (566 bytes), as without the policy.
s = connect("/small")
deadline = time.time() + 5
queued = 0
while time.time() < deadline:
    r, _, _ = select.select([s], [], [], 0.5)
    if r:
        time.sleep(0.2)  # every byte arrived
        queued = fionread(s)
        break
report("fionread", queued == 566, "FIONREAD %d with 566 bytes queued" % queued)
s.close()

# Edge-triggered epoll: one wake-up, then read until EAGAIN.
s = connect("/small")
s.setblocking(False)
ep = select.epoll()
ep.register(s.fileno(), select.EPOLLIN | select.EPOLLET)
got = b""
wakeups = 0
deadline = time.time() + 5
while len(got) < 566 and time.time() < deadline:
    if ep.poll(1.0):
        wakeups += 1
        while True:
            try:
                data = s.recv(65536)
            except BlockingIOError:
                break
            if not data:
                break
            got += data
report("epoll-et", len(got) == 566, "%d bytes after %d wake-ups" % (len(got), wakeups))
s.close()


def download(n, pause):
    s = connect("/big/%d" % n)
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, body = data.split(b"\r\n\r\n", 1)
    digest = hashlib.sha256()
    digest.update(body)
    total = len(body)
    while total < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        digest.update(chunk)
        total += len(chunk)
        if pause:
            time.sleep(pause)
    s.close()
    expected = hashlib.sha256()
    block = hashlib.sha256(b"l7c").digest() * 2048
    left = n
    while left:
        piece = block[: min(len(block), left)]
        expected.update(piece)
        left -= len(piece)
    return total, digest.hexdigest() == expected.hexdigest()


total, same = download(100 << 20, 0)
report("download-100MiB", total == 100 << 20 and same, "%d bytes, checksum %s" % (total, "equal" if same else "DIFFERENT"))
total, same = download(8 << 20, 0.002)
report("slow-reader-8MiB", total == 8 << 20 and same, "%d bytes, checksum %s" % (total, "equal" if same else "DIFFERENT"))
sys.exit(1 if failed else 0)
