#!/usr/bin/env python3
"""How many logged verdicts per second `l7c run` reports with no event lost.

Root. Starts `l7c run` on a cgroup of its own with a policy that denies
and logs every request to one port, a listener outside the cgroup, and
client processes inside it that each open a connection, send one request
(denied: the send fails) and close, at a set rate. Afterwards it compares
the kernel's verdict counter with the lines written to --events and the
losses counted (l7c_events_lost_total in the kernel,
l7c_events_dropped_total in the agent). Prints one line per rate.

    python3 bench/events_rate.py [--seconds 5] [--rates 1000,2000,...] [--events-buffer 256KiB]
Environment: L7C_BIN (default target/release/l7c).
"""
import argparse
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORT = 18400
METRICS = "127.0.0.1:18401"
POLICY = f"""policy "flood" {{
  scope remote port {PORT}
  default allow
  rule "deny" {{ path prefix "/" deny log }}
}}
"""


def listener():
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", PORT))
    server.listen(4096)

    def serve():
        while True:
            conn, _ = server.accept()
            conn.close()

    threading.Thread(target=serve, daemon=True).start()


def client(cgroup, rate, seconds, sent):
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
        procs.write(str(os.getpid()))
    request = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
    start = time.monotonic()
    n = 0
    while True:
        now = time.monotonic()
        if now - start >= seconds:
            break
        due = start + n / rate
        if due > now:
            time.sleep(due - now)
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", PORT))
            s.send(request)
        except OSError:
            pass
        finally:
            s.close()
        n += 1
    with sent.get_lock():
        sent.value += n


def metric(text, name):
    match = re.search(r"^" + re.escape(name) + r" (\d+)$", text, re.M)
    return int(match.group(1)) if match else 0


def scrape():
    with urllib.request.urlopen(f"http://{METRICS}/metrics", timeout=5) as answer:
        return answer.read().decode()


def big_policy(rules):
    """The flood policy with `rules` more rules after its deny: slow to
    compile and verify, the same verdicts."""
    extra = "".join(f'  rule "r{i}" {{ method POST  path glob "/svc{i}/*/v{i % 7}/*"  allow }}\n' for i in range(rules))
    return POLICY[: POLICY.rindex("}")] + extra + "}\n"


def run_rate(l7c, cgroup_root, rate, seconds, workers, buffer, reload_rules=0):
    work = Path(tempfile.mkdtemp(prefix="l7c-events-"))
    policy = work / "flood.l7"
    policy.write_text(POLICY)
    events = work / "events.jsonl"
    cgroup = Path(cgroup_root) / f"l7c-events-rate-{os.getpid()}"
    cgroup.mkdir(exist_ok=True)
    agent = subprocess.Popen([l7c, "run", str(policy), "--cgroup", str(cgroup), "--ephemeral",
                              "--metrics", METRICS, "--events", str(events), "--events-buffer", buffer],
                             stderr=subprocess.PIPE, text=True)
    for line in agent.stderr:
        if "l7c: enforcing" in line:
            break
    reloaded = []

    def watch_stderr():
        for line in agent.stderr:
            if "l7c: reloaded" in line or "reload rejected" in line:
                reloaded.append((time.monotonic(), line.strip()))

    threading.Thread(target=watch_stderr, daemon=True).start()
    sent = multiprocessing.Value("q", 0)
    procs = [multiprocessing.Process(target=client, args=(str(cgroup), rate / workers, seconds, sent)) for _ in range(workers)]
    began = time.monotonic()
    for p in procs:
        p.start()
    asked = None
    if reload_rules:
        # Midway, a reload that takes a while to compile and verify.
        time.sleep(seconds / 4)
        policy.write_text(big_policy(reload_rules))
        asked = time.monotonic()
        agent.send_signal(signal.SIGHUP)
    for p in procs:
        p.join()
    elapsed = time.monotonic() - began
    time.sleep(1.5)  # the agent drains every 50 ms and publishes every second
    text = scrape()
    verdicts = metric(text, 'l7c_rule_verdicts_total{policy="flood",rule="deny"}')
    lost = metric(text, "l7c_events_lost_total")
    dropped = metric(text, "l7c_events_dropped_total")
    written = sum(1 for _ in events.open()) if events.exists() else 0
    if reload_rules:
        took = f"{reloaded[0][0] - asked:.1f} s" if reloaded else "not finished"
        print(f"    reload of {reload_rules} more rules: {took} ({reloaded[0][1] if reloaded else ''})", flush=True)
    agent.terminate()
    agent.wait()
    try:
        cgroup.rmdir()
    except OSError:
        pass
    return sent.value / elapsed, verdicts, written, lost, dropped


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rates", default="1000,2000,4000,8000,16000,32000")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--events-buffer", default="256KiB")
    parser.add_argument("--cgroup-root", default="/sys/fs/cgroup/unified")
    parser.add_argument("--reload-rules", type=int, default=0, help="reload midway to a policy with this many more rules")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("SKIPPED events rate: needs root (a cgroup, l7c run)")
        return 2
    l7c = os.environ.get("L7C_BIN", str(ROOT / "target" / "release" / "l7c"))
    listener()
    print(f"ring buffer {args.events_buffer}, {args.seconds:g} s per rate, {args.workers} client processes")
    print("target/s  achieved/s  verdicts  events written  lost (kernel)  dropped (agent)  missing")
    for rate in (int(r) for r in args.rates.split(",")):
        achieved, verdicts, written, lost, dropped = run_rate(l7c, args.cgroup_root, rate, args.seconds, args.workers, args.events_buffer, args.reload_rules)
        missing = verdicts - written
        print(f"{rate:8d}  {achieved:10.0f}  {verdicts:8d}  {written:14d}  {lost:13d}  {dropped:15d}  {missing:7d}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
