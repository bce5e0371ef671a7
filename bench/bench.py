#!/usr/bin/env python3
"""The kernel path against no policy and against a sidecar proxy (issue 6).

    bench.py            measure everything, write docs/BENCHMARKS.md and docs/bench.svg
    bench.py --check    smoke test: generated configs, policies and wrk heads are valid
    bench.py --render results.json   write the documents again from a saved run

Configurations, all on loopback, wrk with one thread:
    A  wrk -> nginx                                  (no policy)
    B  wrk -> nginx, wrk in a cgroup enrolled by `l7c run POLICY --cgroup`
    C  wrk -> HAProxy (1 thread, the policy as ACLs, deny = 403) -> nginx

Every process of the path runs in its own child cgroup of a cgroup2
directory made for the run; CPU time is read from each cgroup's
`cpu.stat` (`usage_usec`, user + system, softirq included on this kernel:
it has no CONFIG_IRQ_TIME_ACCOUNTING, so softirq time is charged to the
task it interrupts). Environment: L7C_BIN (the l7c binary), L7C_BENCH_QUICK=1
(2-second runs, fewer rounds), L7C_BENCH_SECONDS, L7C_BENCH_ROUNDS, L7C_BENCH_RUN_ARGS
(more `l7c run` flags, e.g. "--receive-verdict off").
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the repository
import genpolicy  # noqa: E402
import report  # noqa: E402

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
REQUEST_LUA = BENCH / "request.lua"
API30 = BENCH / "api30.l7"
PASS_ALL = BENCH / "pass-all.l7"
HAPROXY_CFG = BENCH / "haproxy30.cfg"
NGINX_CONF = BENCH / "nginx.conf"
RULE_COUNTS = (10, 100, 1000, 10000)
# Issue 15, target 4: policies in one program (api30 last, the others on ports of their own).
POLICY_COUNTS = (1, 20, 100)
# The scale files (../shared/bench/scale, copied; and the generated 100 x 20): compiled and loaded.
SCALE_FILES = ("multi5.l7", "multi20.l7", "multi100x20.l7")
SCALE_DIR = ROOT / "tests" / "scale"
HEAD_SIZES = (100, 1024, 8192, 16384)
# Realistic heads (bench/heads/, issue 15): what a browser and an API client with a bearer token send.
HEAD_KINDS = ("browser", "api")
HEADS_DIR = BENCH / "heads"
RPS_CONNECTIONS = 16
LATENCY_CONNECTIONS = 1
# The five requests of shared/bench/README.md: (method, path, headers, allowed).
PROBES = (
    ("GET", "/api/v1/users/123", ("X-Api-Key: k",), True),
    ("DELETE", "/api/v1/users/1", ("X-Api-Key: k",), False),
    ("GET", "/admin", ("X-Api-Key: k",), False),
    ("GET", "/.env", ("X-Api-Key: k",), False),
    ("POST", "/api/v1/orders", (), False),
)
# The rule of api30.l7 (and of every generated policy) that allows the benchmark request.
ALLOWING_RULE = "user"


class BenchError(Exception):
    """A measurement that cannot be trusted: the run stops and says why."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def l7c_binary() -> Path:
    if os.environ.get("L7C_BIN"):
        return Path(os.environ["L7C_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "release" / "l7c"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{what} exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"{what} does not listen on {port} after {seconds} s")


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def machine_busy_seconds() -> float:
    """Busy time of the whole machine from /proc/stat (every process, other agents too)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def cgroup2_mount() -> Path | None:
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[2] == "cgroup2":
            return Path(parts[1])
    return None


class Cgroups:
    """One cgroup2 directory for the run, a child per role; removed at the end."""

    def __init__(self, mount: Path):
        self.base = mount / f"l7c-bench.{os.getpid()}"
        self.base.mkdir()
        self.children: list[Path] = []

    def child(self, name: str) -> Path:
        path = self.base / name
        path.mkdir()
        self.children.append(path)
        return path

    @staticmethod
    def usage_seconds(path: Path) -> float:
        for line in (path / "cpu.stat").read_text().splitlines():
            key, value = line.split()
            if key == "usage_usec":
                return int(value) / 1e6
        raise BenchError(f"no usage_usec in {path}/cpu.stat")

    def remove(self) -> None:
        for path in reversed(self.children):
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
        try:
            self.base.rmdir()
        except OSError as error:
            log(f"warning: could not remove {self.base}: {error}")


def in_cgroup(cgroup: Path | None):
    """A preexec_fn that moves the child into `cgroup` before it runs the program."""
    if cgroup is None:
        return None

    def enter() -> None:
        (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    return enter


class Processes:
    """The long-running processes of the run, stopped by their own ids."""

    def __init__(self):
        self.running: list[tuple[str, subprocess.Popen]] = []

    def start(self, what: str, argv: list[str], cgroup: Path | None, **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(argv, preexec_fn=in_cgroup(cgroup), **kwargs)
        self.running.append((what, process))
        return process

    def stop(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.running = [(w, p) for (w, p) in self.running if p is not process]

    def stop_all(self) -> None:
        for _, process in reversed(list(self.running)):
            self.stop(process)


def nginx_config(directory: Path, port: int) -> Path:
    text = NGINX_CONF.read_text().replace("@DIR@", str(directory)).replace("@PORT@", str(port))
    path = directory / "nginx.conf"
    path.write_text(text)
    return path


def haproxy_config(directory: Path, frontend: int, backend: int) -> Path:
    """shared/bench/haproxy30.cfg with its two port placeholders filled in and one line added:
    `tune.bufsize 32768`, because HAProxy's default 16 KiB buffer, less its 1 KiB rewrite
    reserve, refuses the 16 KiB head of the head-size runs (C runs at every head size, issue 15)."""
    text = HAPROXY_CFG.read_text()
    for placeholder in ("FRONTEND_PORT", "BACKEND_PORT"):
        if placeholder not in text:
            raise BenchError(f"{HAPROXY_CFG} has no {placeholder}")
    if "\nglobal\n" not in text:
        raise BenchError(f"{HAPROXY_CFG} has no global section")
    text = text.replace("FRONTEND_PORT", str(frontend)).replace("BACKEND_PORT", str(backend))
    text = text.replace("\nglobal\n", "\nglobal\n    tune.bufsize 32768\n", 1)
    path = directory / "haproxy.cfg"
    path.write_text(text)
    return path


def with_header_bytes(policy: str, header_bytes: str) -> str:
    """api30.l7 with a `limits` line, so that heads up to 16 KiB are judged (the default is 8 KiB)."""
    marker = "  default deny\n"
    if marker not in policy:
        raise BenchError("the policy has no `default deny` line to put the limits after")
    return policy.replace(marker, f"{marker}  limits {{ header_bytes {header_bytes} }}\n", 1)


class Agent:
    """`l7c run POLICY --cgroup ENROLLED --metrics ADDR`, as shared/spec/cli.md gives it."""

    def __init__(self, processes: Processes, l7c: Path, policy: Path, enrolled: Path, cgroup: Path, workdir: Path):
        self.port = free_port()
        self.stderr_path = workdir / f"l7c-run-{policy.stem}.log"
        self.stderr = self.stderr_path.open("w")
        argv = [str(l7c), "run", str(policy), "--cgroup", str(enrolled), "--metrics", f"127.0.0.1:{self.port}"]
        # L7C_BENCH_RUN_ARGS: more `l7c run` flags, e.g. "--receive-verdict off" to measure
        # what the receive side costs (docs/BENCHMARKS.md, "Receive side").
        argv += os.environ.get("L7C_BENCH_RUN_ARGS", "").split()
        self.argv = argv
        self.process = processes.start("l7c run", argv, cgroup, stdout=subprocess.DEVNULL, stderr=self.stderr)
        self.processes = processes
        self.enrolled = enrolled
        self.cgroup = cgroup
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise BenchError(f"`{' '.join(argv)}` exited with {self.process.returncode}: {self.stderr_tail()}")
            # The metrics are served before the policy is compiled and loaded (an operator
            # slip is caught before the kernel is touched): the agent is ready when it says
            # it enforces, and serves metrics.
            self.stderr.flush()
            if "l7c: enforcing policy" in self.stderr_path.read_text():
                try:
                    self.metrics()
                    return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise BenchError(f"`{' '.join(argv)}` does not enforce, or serves no metrics, after 120 s: {self.stderr_tail()}")
            time.sleep(0.2)

    def stderr_tail(self) -> str:
        self.stderr.flush()
        lines = [line for line in self.stderr_path.read_text().splitlines() if line.strip()]
        return " | ".join(lines[-3:])

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
            return response.read().decode()

    def rule_verdicts(self) -> dict[str, int]:
        counts = {}
        for line in self.metrics().splitlines():
            if line.startswith("l7c_rule_verdicts_total{"):
                labels, value = line.rsplit(" ", 1)
                rule = labels.split('rule="', 1)[1].split('"', 1)[0]
                counts[rule] = counts.get(rule, 0) + int(float(value))
        return counts

    def enrolled_connections(self) -> int:
        for line in self.metrics().splitlines():
            if line.startswith("l7c_connections_enrolled "):
                return int(float(line.split()[1]))
        raise BenchError("`l7c run` serves no l7c_connections_enrolled")

    def stop(self) -> None:
        self.processes.stop(self.process)
        self.stderr.close()


def curl(url: str, method: str, headers: tuple[str, ...], cgroup: Path) -> tuple[int, str]:
    """(curl's exit code, the HTTP status it printed) for one request sent from `cgroup`."""
    argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "-X", method, url]
    for header in headers:
        argv += ["-H", header]
    done = subprocess.run(argv, capture_output=True, text=True, preexec_fn=in_cgroup(cgroup))
    return done.returncode, done.stdout.strip()


def check_probes(config: str, base_url: str, cgroup: Path, agent: Agent | None) -> list[str]:
    """shared/bench/README.md: the benchmark request is allowed, the four others refused.

    A and B0 (nothing governed) let all five through."""
    governed = config in ("B", "C")
    before = agent.rule_verdicts() if agent else {}
    lines = []
    for method, path, headers, allowed in PROBES:
        code, status = curl(base_url + path, method, headers, cgroup)
        # B answers a refused request 403 from the kernel (language.md §6), as HAProxy does in C;
        # nothing reaches nginx.
        ok = code == 0 and status == ("200" if allowed or not governed else "403")
        outcome = f"HTTP {status}" if code == 0 else f"curl exit {code}"
        expected = "allowed" if allowed or not governed else "refused"
        lines.append(f"{config}: {method} {path} -> {outcome} ({expected}: {'ok' if ok else 'WRONG'})")
        if not ok:
            raise BenchError(f"probe failed: {lines[-1]}")
    if agent:
        expected = {"user": 1, "no-delete": 1, "admin": 1, "dotfiles": 1, "post-key": 1} if governed else {}
        for _ in range(50):  # `l7c run` refreshes its counters from the maps every 50 ms
            after = agent.rule_verdicts()
            decided = {rule: n - before.get(rule, 0) for rule, n in after.items() if n != before.get(rule, 0)}
            if decided == expected:
                break
            time.sleep(0.1)
        if decided != expected:
            raise BenchError(f"{config}'s rule counters moved by {decided}, expected {expected}")
        lines.append(f"{config}: rule counters moved by {decided}")
    return lines


def head_env(head: int | str | None) -> dict:
    """request.lua's environment for a head: padded to a size, or a realistic kind of bench/heads/."""
    env = dict(os.environ)
    env.pop("L7C_BENCH_HEAD_BYTES", None)
    env.pop("L7C_BENCH_HEAD_FIELDS", None)
    if isinstance(head, str):
        env["L7C_BENCH_HEAD_FIELDS"] = str(HEADS_DIR / f"{head}.fields")
    elif head:
        env["L7C_BENCH_HEAD_BYTES"] = str(head)
    return env


def wrk(url: str, connections: int, seconds: int, cgroup: Path, head: int | str | None) -> dict:
    env = head_env(head)
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(REQUEST_LUA), url]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, preexec_fn=in_cgroup(cgroup),
                          timeout=seconds + 60)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip()} {done.stdout.strip()}")
    return json.loads(lines[-1])


def capture_head(head: int | str | None) -> int:
    """The size of the head wrk sends with request.lua, read by a listener of our own."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(20)
        port = listener.getsockname()[1]
        env = head_env(head)
        client = subprocess.Popen(["wrk", "-t1", "-c1", "-d1s", "-s", str(REQUEST_LUA), f"http://127.0.0.1:{port}/"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        data = b""
        try:
            # wrk first opens a connection and closes it unused: read the first one that sends.
            while not data:
                connection, _ = listener.accept()
                with connection:
                    connection.settimeout(10)
                    while b"\r\n\r\n" not in data:
                        chunk = connection.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    if data:
                        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        finally:
            client.wait(timeout=30)
        if b"\r\n\r\n" not in data:
            raise BenchError(f"wrk sent no complete head: {client.stderr.read().decode().strip()}")
        return data.index(b"\r\n\r\n") + 4


class Bench:
    def __init__(self, quick: bool):
        self.quick = quick
        self.seconds = int(os.environ.get("L7C_BENCH_SECONDS", 2 if quick else 8))
        self.rounds = int(os.environ.get("L7C_BENCH_ROUNDS", 3 if quick else 5))
        self.scaling_rounds = 1 if quick else 3
        self.l7c = l7c_binary()
        self.processes = Processes()
        self.workdir = Path(tempfile.mkdtemp(prefix="l7c-bench."))
        self.cgroups: Cgroups | None = None
        self.results: dict = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "quick": quick, "seconds": self.seconds, "rounds": self.rounds,
            "scaling_rounds": self.scaling_rounds, "runs": [], "skipped": {}, "probes": [],
            "compile": [], "heads": {}, "load": {}, "many": [], "scale_files": [],
        }

    # -- the path --------------------------------------------------------------------------

    def setup(self) -> None:
        mount = cgroup2_mount()
        if mount is None:
            raise BenchError("no cgroup2 mount (mount | grep cgroup2)")
        self.cgroups = Cgroups(mount)
        self.cg_client = self.cgroups.child("client")
        self.cg_server = self.cgroups.child("server")
        self.cg_proxy = self.cgroups.child("proxy")
        self.nginx_port = free_port()
        conf = nginx_config(self.workdir, self.nginx_port)
        self.nginx = self.processes.start(
            "nginx", ["nginx", "-p", str(self.workdir), "-c", str(conf), "-e", "stderr"], self.cg_server,
            stdout=subprocess.DEVNULL, stderr=(self.workdir / "nginx.log").open("w"))
        wait_for_port(self.nginx_port, self.nginx, "nginx")
        self.haproxy_port = free_port()
        cfg = haproxy_config(self.workdir, self.haproxy_port, self.nginx_port)
        self.haproxy = self.processes.start(
            "haproxy", ["haproxy", "-db", "-f", str(cfg)], self.cg_proxy,
            stdout=subprocess.DEVNULL, stderr=(self.workdir / "haproxy.log").open("w"))
        wait_for_port(self.haproxy_port, self.haproxy, "haproxy")
        self.results["versions"] = versions(self.l7c)

    def teardown(self) -> None:
        self.processes.stop_all()
        if self.cgroups:
            self.cgroups.remove()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def url(self, config: str) -> str:
        port = self.haproxy_port if config == "C" else self.nginx_port
        return f"http://127.0.0.1:{port}"

    def start_agent(self, policy: Path, name: str) -> Agent:
        """`l7c run` in cgroup agent-NAME, enrolling cgroup enrolled-NAME."""
        return Agent(self.processes, self.l7c, policy, self.cgroups.child(f"enrolled-{name}"),
                     self.cgroups.child(f"agent-{name}"), self.workdir)

    def measure(self, phase: str, config: str, connections: int, agent: Agent | None = None,
                head_bytes: int | None = None, head_kind: str | None = None, **labels) -> dict:
        """One wrk run. A and C: wrk in `client`; B and B0: wrk in the agent's enrolled cgroup."""
        if agent:
            client = agent.enrolled
            accounted = [agent.enrolled, self.cg_server, agent.cgroup]
        else:
            client = self.cg_client
            accounted = [self.cg_client] + ([self.cg_proxy] if config == "C" else []) + [self.cg_server]
        label = f"{phase} {config} c={connections}" + "".join(f" {k}={v}" for k, v in labels.items())
        verdicts0 = agent.rule_verdicts() if agent else {}
        enrolled: list[int] = []
        if agent:
            # Halfway through, every wrk connection must be in the socket map.
            sampler = threading.Timer(self.seconds / 2, lambda: enrolled.append(agent.enrolled_connections()))
            sampler.start()
        busy0 = machine_busy_seconds()
        usage0 = [Cgroups.usage_seconds(path) for path in accounted]
        out = wrk(self.url(config), connections, self.seconds, client, head_kind or head_bytes)
        usage1 = [Cgroups.usage_seconds(path) for path in accounted]
        busy1 = machine_busy_seconds()
        requests = out["requests"]
        if sum(out["errors"].values()) or requests == 0:
            raise BenchError(f"{label}: wrk counted {requests} requests and errors {out['errors']}")
        if agent:
            sampler.join()
            if not enrolled or enrolled[0] < connections:
                raise BenchError(f"{label}: `l7c run` had {enrolled} connections enrolled halfway, not {connections}")
            self.check_judged(label, agent, verdicts0, requests, connections, config == "B")
        cpu = sum(b - a for a, b in zip(usage0, usage1))
        run = {
            "phase": phase, "config": config, "connections": connections, **labels,
            "head_bytes": head_bytes, "head_kind": head_kind, "requests": requests, "seconds": out["duration_us"] / 1e6,
            "rps": requests / (out["duration_us"] / 1e6), "p50_us": out["p50_us"], "p99_us": out["p99_us"],
            "cpu_s": cpu, "cpu_per_10k": cpu / requests * 1e4,
            "machine_cpu_per_10k": (busy1 - busy0) / requests * 1e4,
            "cpu_by_role": {path.name: round(b - a, 3) for path, a, b in zip(accounted, usage0, usage1)},
        }
        log(f"  {label}: {run['rps']:.0f} req/s, p50 {run['p50_us']} us, p99 {run['p99_us']} us, "
            f"{run['cpu_per_10k']:.3f} CPU s/10k (machine {run['machine_cpu_per_10k']:.3f})")
        self.results["runs"].append(run)
        return run

    @staticmethod
    def check_judged(label: str, agent: Agent, before: dict[str, int], requests: int, connections: int,
                     governed: bool) -> None:
        """B: rule `user` judged every request wrk counted. B0: nothing was judged."""
        deadline = time.monotonic() + 5
        while True:
            # `l7c run` refreshes its counters from the maps every 50 ms, later when it is starved.
            after = agent.rule_verdicts()
            moved = {rule: n - before.get(rule, 0) for rule, n in after.items() if n != before.get(rule, 0)}
            judged = moved.get(ALLOWING_RULE, 0)
            if not governed or judged >= requests or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if not governed:
            if moved:
                raise BenchError(f"{label}: the pass-all policy judged requests: {moved}")
            return
        # wrk counts the responses it read; requests still in flight when it stops were judged too.
        if not requests <= judged <= requests + connections or set(moved) != {ALLOWING_RULE}:
            raise BenchError(f"{label}: l7c's rule counters moved by {moved}; wrk counted {requests} requests")

    # -- the three phases ------------------------------------------------------------------

    def start_agents(self, where: str, policies: dict[str, Path]) -> dict[str, Agent]:
        agents = {}
        for config, policy in policies.items():
            try:
                agents[config] = self.start_agent(policy, f"{where}-{config}")
            except BenchError as error:
                self.skip(config, where, str(error))
        return agents

    def compare(self) -> None:
        """A B0 B C interleaved at 16 connections, then A B C at 1."""
        log(f"== A B C, {self.rounds} rounds of {self.seconds:g} s runs")
        self.results["load"]["compare_start"] = loadavg()
        agents = self.start_agents("compare", {"B0": PASS_ALL, "B": API30})
        for config in ("A", "B0", "B", "C"):
            if config in agents or config in ("A", "C"):
                self.results["probes"] += check_probes(config, self.url(config),
                                                       agents[config].enrolled if config in agents else self.cg_client,
                                                       agents.get(config))
        for round_index in range(self.rounds):
            for connections, configs in ((RPS_CONNECTIONS, ("A", "B0", "B", "C")),
                                         (LATENCY_CONNECTIONS, ("A", "B", "C"))):
                for config in configs:
                    if config in ("A", "C") or config in agents:
                        self.measure("compare", config, connections, agents.get(config), round=round_index)
        for agent in agents.values():
            agent.stop()
        self.results["load"]["compare_end"] = loadavg()

    def scale_policy(self) -> None:
        """Generated policies of 10 to 10,000 rules: compile figures, then B's requests/s.

        One `l7c run` at a time (started again each round), so that one agent's own work does not
        slow another's runs."""
        log("== policy size")
        self.results["load"]["policy_start"] = loadavg()
        texts = {rules: genpolicy.policy(rules, None) for rules in RULE_COUNTS}
        # The default rule refuses anything else: one probe each way.
        self.scale_runs("policy", "rules", texts, self.results["compile"], "/nothing", ())
        self.results["load"]["policy_end"] = loadavg()

    def scale_runs(self, phase: str, key: str, texts: dict[int, str], compiled: list, refused_path: str,
                   headers: tuple[str, ...]) -> None:
        """Each policy text compiled (figures into `compiled`, labelled `key`), then per round A and B
        with each of them (`measure_policy`)."""
        files = {}
        for n, text in texts.items():
            path = self.workdir / f"{phase}{n}.l7"
            path.write_text(text)
            figures = compile_figures(self.l7c, path)
            figures[key] = n
            compiled.append(figures)
            files[n] = (path, figures)
            log(f"  {n} {key}: compile {figures['compile_s']:.3f} s, {figures.get('instructions')} instructions, "
                f"{figures.get('processed')} processed")
        for round_index in range(self.scaling_rounds):
            self.measure(phase, "A", RPS_CONNECTIONS, round=round_index, **{key: 0})
            for n, (path, figures) in files.items():
                if figures.get("loaded") is False:
                    continue
                self.measure_policy(phase, path, figures, f"{n} {key}", refused_path, headers,
                                    round=round_index, **{key: n})

    def measure_policy(self, phase: str, path: Path, figures: dict, what: str, refused_path: str,
                       headers: tuple[str, ...], **labels) -> None:
        """B with `l7c run path`, started for this one run: a probe the policy allows and one it refuses
        (`refused_path`) first, then wrk. A policy `l7c run` cannot load is marked in `figures`."""
        try:
            agent = self.start_agent(path, f"{phase}-" + "-".join(str(v) for v in labels.values()))
        except BenchError as error:
            figures["loaded"] = False
            figures["load_error"] = " ".join(str(error).split())
            print(f"SKIPPED B ({what}): {figures['load_error']}", flush=True)
            return
        figures["loaded"] = True
        code, status = curl(self.url("B") + "/api/v1/users/1", "GET", headers, agent.enrolled)
        refused = curl(self.url("B") + refused_path, "GET", headers, agent.enrolled)
        if (code, status) != (0, "200") or refused != (0, "403"):
            raise BenchError(f"{what}: the benchmark request gave {code}/{status}, a refused one {refused}")
        for _ in range(50):  # until the counters show the probe, so that it is not taken for wrk's
            if agent.rule_verdicts().get(ALLOWING_RULE, 0) == 1:
                break
            time.sleep(0.1)
        self.measure(phase, "B", RPS_CONNECTIONS, agent, **labels)
        agent.stop()

    def scale_policies(self) -> None:
        """Issue 15, target 4: the scale files compile and load; B with api30 as the last of 1, 20 and
        100 policies in one program, each `l7c run` started again per round, A in the same rounds."""
        log("== policies in one program")
        self.results["load"]["many_start"] = loadavg()
        for name in SCALE_FILES:
            figures = compile_figures(self.l7c, SCALE_DIR / name, self.workdir / name)
            figures["file"] = name
            self.results["scale_files"].append(figures)
            log(f"  {name}: compile {figures['compile_s']:.3f} s, {figures.get('instructions')} instructions, "
                f"{figures.get('processed')} processed")
        texts = {count: genpolicy.many(count, API30.read_text(), self.nginx_port) for count in POLICY_COUNTS}
        self.scale_runs("many", "policies", texts, self.results["many"], "/admin", ("X-Api-Key: k",))
        self.results["load"]["many_end"] = loadavg()

    def scale_head(self) -> None:
        """Heads of 100 B to 16 KiB: A, B0 and B (api30 with header_bytes 16KiB) interleaved."""
        log("== head size")
        self.results["load"]["head_start"] = loadavg()
        for size in HEAD_SIZES:
            sent = capture_head(size)
            self.results["heads"][str(size)] = sent
            if sent != size:
                raise BenchError(f"request.lua sends a {sent}-byte head for L7C_BENCH_HEAD_BYTES={size}")
        heads: list[tuple[int, str | None]] = [(size, None) for size in HEAD_SIZES]
        for kind in HEAD_KINDS:
            sent = capture_head(kind)
            self.results["heads"][kind] = sent
            heads.append((sent, kind))
        heads.sort()
        policy = self.workdir / "api30-16k.l7"
        policy.write_text(with_header_bytes(API30.read_text(), "16KiB"))
        agents = self.start_agents("head", {"B0": PASS_ALL, "B": policy})
        for round_index in range(self.scaling_rounds):
            for size, kind in heads:
                for config in ("A", "B0", "B", "C"):
                    if config in ("A", "C") or config in agents:
                        self.measure("head", config, RPS_CONNECTIONS, agents.get(config), head_bytes=size,
                                     head_kind=kind, round=round_index)
        for agent in agents.values():
            agent.stop()
        self.results["load"]["head_end"] = loadavg()

    def skip(self, config: str, where: str, reason: str) -> None:
        reason = " ".join(reason.split())
        print(f"SKIPPED {config} ({where}): {reason}", flush=True)
        self.results["skipped"].setdefault(config, f"{where}: {reason}")

    def run(self) -> dict:
        started = time.monotonic()
        try:
            self.setup()
            self.compare()
            self.scale_policy()
            self.scale_policies()
            self.scale_head()
        finally:
            self.teardown()
        self.results["elapsed_s"] = round(time.monotonic() - started)
        return self.results


def compile_figures(l7c: Path, policy: Path, out: Path | None = None) -> dict:
    """Compile time (median of 3, the release binary, start-up and checking included) and the report."""
    times = []
    obj = (out or policy).with_suffix(".o")
    for _ in range(3):
        started = time.monotonic()
        done = subprocess.run([str(l7c), "compile", str(policy), "-o", str(obj)],
                              capture_output=True, text=True)
        times.append(time.monotonic() - started)
        if done.returncode != 0:
            raise BenchError(f"l7c compile {policy.name} failed: {done.stderr.strip()[-400:]}")
    figures = {"compile_s": statistics.median(times), "object_bytes": obj.stat().st_size}
    done = subprocess.run([str(l7c), "compile", str(policy), "-o", "-", "--emit", "report", "--verify"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        figures["verify_error"] = done.stderr.strip()[-400:]
        return figures
    table_bytes = 0
    for line in done.stdout.splitlines():
        if line.startswith("instructions:"):
            figures["instructions"] = int(line.split(":")[1])
        elif line.startswith("verifier:"):
            figures["processed"] = int(line.split(":")[1].split()[0])
        elif line.startswith("largest number of request bytes scanned:"):
            figures["bytes_scanned"] = int(line.split(":")[1])
        elif line.startswith("  ") and line.strip().endswith(" bytes"):
            table_bytes += int(line.rsplit(":", 1)[1].split()[0])
    figures["table_bytes"] = table_bytes
    return figures


def versions(l7c: Path) -> dict:
    def first_line(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True)
        except OSError as error:
            return str(error)
        return (done.stdout + done.stderr).strip().splitlines()[0] if (done.stdout + done.stderr).strip() else "?"

    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    def version(argv: list[str], pattern: str, name: str) -> str:
        found = re.search(pattern, first_line(argv))
        return f"{name} {found.group(1)}" if found else first_line(argv)

    return {
        "kernel": platform.release(), "cpus": os.cpu_count(), "cpu": cpu,
        "nginx": version(["nginx", "-v"], r"nginx/(\S+)", "nginx"),
        "haproxy": version(["haproxy", "-v"], r"version (\S+)", "HAProxy"),
        "wrk": version(["wrk", "-v"], r"wrk \S*?([0-9][0-9.]+)", "wrk"), "l7c_commit": commit.stdout.strip(),
        "l7c": str(l7c),
    }


def check(l7c: Path) -> int:
    """The smoke mode: nothing is measured; every input the benchmark generates is validated."""
    failures = 0
    workdir = Path(tempfile.mkdtemp(prefix="l7c-bench-check."))

    def verdict(what: str, ok: bool, detail: str = "") -> None:
        nonlocal failures
        failures += not ok
        print(f"{'ok' if ok else 'FAILED'} {what}{': ' + detail if detail and not ok else ''}", flush=True)

    try:
        if not l7c.exists():
            print(f"SKIPPED l7c check: no binary at {l7c} (cargo build --release, or set L7C_BIN)")
        else:
            policies = [(API30, []), (PASS_ALL, ["--deny-warnings"])]
            for rules in RULE_COUNTS[:3]:
                path = workdir / f"gen{rules}.l7"
                path.write_text(genpolicy.policy(rules, None))
                policies.append((path, ["--deny-warnings"]))
            for count in POLICY_COUNTS:
                path = workdir / f"many{count}.l7"
                path.write_text(genpolicy.many(count, API30.read_text(), 8080))
                policies.append((path, []))
            policies += [(SCALE_DIR / name, []) for name in SCALE_FILES]
            wide = workdir / "api30-16k.l7"
            wide.write_text(with_header_bytes(API30.read_text(), "16KiB"))
            policies.append((wide, []))
            for path, flags in policies:
                done = subprocess.run([str(l7c), "check", *flags, str(path)], capture_output=True, text=True)
                verdict(f"l7c check {' '.join(flags)} {path.name}".replace("  ", " "), done.returncode == 0,
                        done.stderr.strip()[-300:])
        if shutil.which("haproxy"):
            cfg = haproxy_config(workdir, 18081, 18080)
            done = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
            verdict("haproxy -c (haproxy30.cfg, ports filled in)", done.returncode == 0,
                    (done.stdout + done.stderr).strip()[-300:])
        else:
            print("SKIPPED haproxy -c: haproxy is not installed (scripts/bench.sh installs it)")
        if shutil.which("nginx"):
            conf = nginx_config(workdir, 18080)
            done = subprocess.run(["nginx", "-t", "-p", str(workdir), "-c", str(conf), "-e", "stderr"],
                                  capture_output=True, text=True)
            verdict("nginx -t (bench/nginx.conf)", done.returncode == 0, done.stderr.strip()[-300:])
        else:
            print("SKIPPED nginx -t: nginx is not installed (scripts/bench.sh installs it)")
        if shutil.which("wrk"):
            for size in HEAD_SIZES:
                sent = capture_head(size)
                verdict(f"request.lua head of {size} bytes", sent == size, f"wrk sent {sent} bytes")
            for kind in HEAD_KINDS:
                sent = capture_head(kind)
                fields = (HEADS_DIR / f"{kind}.fields").read_text()
                verdict(f"request.lua {kind} head ({sent} bytes)", sent > len(fields), f"wrk sent {sent} bytes")
        else:
            print("SKIPPED request.lua heads: wrk is not installed (scripts/bench.sh installs it)")
        # The documents from a run of two rounds with invented figures, into a scratch folder,
        # so that a change to report.py that breaks rendering is caught here.
        report.write(report.sample_results(), workdir / "BENCHMARKS.md", workdir / "bench.svg")
        svg = (workdir / "bench.svg").read_text()
        verdict("report renders (sample figures, scratch folder)", svg.startswith("<svg") and svg.rstrip().endswith("</svg>"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{failures} failed" if failures else "all checks passed")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="validate the generated inputs; measure nothing")
    parser.add_argument("--render", type=Path, metavar="RESULTS_JSON", help="write the documents from a saved run")
    parser.add_argument("--results", type=Path, help="where to save the run's figures as JSON")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    parser.add_argument("--svg", type=Path, default=ROOT / "docs" / "bench.svg")
    args = parser.parse_args()
    if args.check:
        return check(l7c_binary())
    if args.render:
        report.write(json.loads(args.render.read_text()), args.doc, args.svg)
        return 0
    missing = [tool for tool in ("nginx", "haproxy", "wrk", "curl") if not shutil.which(tool)]
    if missing:
        print(f"SKIPPED benchmark: {', '.join(missing)} not installed (scripts/bench.sh installs them)")
        return 2
    if os.geteuid() != 0:
        print("SKIPPED benchmark: needs root (cgroups for the CPU accounting, l7c run)")
        return 2
    if not l7c_binary().exists():
        print(f"SKIPPED benchmark: no l7c at {l7c_binary()} (cargo build --release, or set L7C_BIN)")
        return 2
    quick = os.environ.get("L7C_BENCH_QUICK") == "1"
    try:
        results = Bench(quick).run()
    except BenchError as error:
        print(f"benchmark stopped: {error}", file=sys.stderr)
        return 1
    results_path = args.results or Path(tempfile.gettempdir()) / "l7c-bench-results.json"
    results_path.write_text(json.dumps(results, indent=1))
    log(f"figures saved to {results_path}")
    report.write(results, args.doc, args.svg)
    log(f"wrote {args.doc} and {args.svg} ({results['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
