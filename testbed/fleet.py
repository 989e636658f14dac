"""A fleet on this one machine: N nodes, each its own dockerd 26 in its own network namespace.

Each node has its own data root, exec root and containerd (the one dockerd starts under its
exec root), its own ``docker0`` and iptables (its namespace's), and one veth into the host
bridge ``twfleet0`` (10.213.0.0/24: node ``n<i>`` is 10.213.0.<10+i>); swarm's VXLAN runs
between the nodes over that bridge. dockerd is started with ``nsenter --net=`` (``ip netns
exec`` would remount /sys, hide the cgroups, and dockerd refuses to start). Every node
reaches the bed's registry and token server as ``127.0.0.1:5000``/``:5001``, the same
references as the host's, through ``testbed.fleet_forward`` (from ``127.0.1.<i>``, so the
registry's log names the node).

    python -m testbed fleet up --nodes 3     # after `python -m testbed up --engine 26`
    python -m testbed fleet down             # leaves no namespace, interface, mount, process

What a node cannot do here: IPVS is not available in a node's namespace, so there is no
ingress routing mesh; publish swarm ports in ``host`` mode or use ``dnsrr`` behind a proxy.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import docker

from testbed import engines, services
from testbed.services import engine_pings
from testbed.util import BedError, wait_until

BRIDGE = "twfleet0"
NET = "10.213.0"
RUN = engines.RUN / "fleet"
DATA = engines.ROOT / "fleet"
STATE = RUN / "fleet.json"
NETNS_PREFIX = "twbed-"
MAX_NODES = 8
FORWARD_RULE = ("-i", BRIDGE, "-o", BRIDGE, "-m", "comment", "--comment", "twilight-bed fleet",
                "-j", "ACCEPT")
# the forwarder's Popen, kept so that stopping it reaps it (no "still running" warning)
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class Node:
    index: int

    @property
    def name(self) -> str:
        return f"n{self.index}"

    @property
    def netns(self) -> str:
        return f"/run/netns/{NETNS_PREFIX}{self.name}"

    @property
    def ip(self) -> str:
        return f"{NET}.{10 + self.index}"

    @property
    def source(self) -> str:
        """The address its registry requests come from, on the host's loopback."""
        return f"127.0.1.{self.index}"

    @property
    def run(self) -> Path:
        return RUN / self.name

    @property
    def data(self) -> Path:
        return DATA / self.name

    @property
    def sock(self) -> str:
        return str(self.run / "docker.sock")

    @property
    def docker_host(self) -> str:
        return f"unix://{self.sock}"

    def client(self, timeout: int = 60) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.docker_host, version="auto", timeout=timeout)

    def inside(self, argv: list[str]) -> list[str]:
        """``argv`` run in this node's network namespace (the host's mounts and cgroups)."""
        return ["nsenter", f"--net={self.netns}", "--", *argv]

    def dockerd_argv(self) -> list[str]:
        p = engines.prefix()
        # its own hostname too (a UTS namespace): swarm names its nodes by it
        return ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', self.name,
                *self.inside([
            str(p / "usr/sbin/dockerd"), "--host", self.docker_host,
            "--data-root", str(self.data / "data"), "--exec-root", str(self.run),
            "--pidfile", str(self.run / "dockerd.pid"),
            "--config-file", str(self.data / "daemon.json"),
            "--userland-proxy-path", str(p / "usr/sbin/docker-proxy"),
            "--init-path", str(p / "usr/bin/tini-static")])]

    def dockerd_pid(self) -> int | None:
        try:
            pid = int((self.run / "dockerd.pid").read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None


@dataclass
class FleetState:
    nodes: int
    forwarder: int = 0

    def save(self) -> None:
        RUN.mkdir(parents=True, exist_ok=True)
        STATE.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls) -> FleetState | None:
        try:
            return cls(**json.loads(STATE.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def nodes(n: int | None = None) -> list[Node]:
    """The fleet's nodes (``n`` of them, default: the running fleet's)."""
    if n is None:
        st = FleetState.load()
        n = st.nodes if st else 0
    return [Node(i) for i in range(1, n + 1)]


def _ip(*args: str) -> None:
    p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if p.returncode:
        raise BedError(f"ip {' '.join(args)}: {p.stderr.strip()}")


def _make_bridge() -> None:
    _ip("link", "add", BRIDGE, "type", "bridge")
    _ip("addr", "add", f"{NET}.1/24", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")
    # frames bridged between nodes pass the host's FORWARD chain (br_netfilter is on under
    # dockerd) whose policy is DROP: one rule of the bed's own lets them through, and
    # ``down`` deletes it again
    _iptables("-I", "FORWARD", "1", *FORWARD_RULE)


def _iptables(*args: str) -> bool:
    p = subprocess.run(["iptables", "-w", "10", *args], capture_output=True, text=True,
                       timeout=30, check=False)
    return p.returncode == 0


def _make_node_net(node: Node) -> None:
    _ip("netns", "add", f"{NETNS_PREFIX}{node.name}")
    ns = f"{NETNS_PREFIX}{node.name}"
    _ip("link", "add", f"tw{node.name}h", "type", "veth", "peer", "name", "eth0", "netns", ns)
    _ip("link", "set", f"tw{node.name}h", "master", BRIDGE, "up")
    _ip("-n", ns, "addr", "add", f"{node.ip}/24", "dev", "eth0")
    _ip("-n", ns, "link", "set", "eth0", "up")
    _ip("-n", ns, "link", "set", "lo", "up")
    _ip("-n", ns, "route", "add", "default", "via", f"{NET}.1")


def start_node(node: Node, timeout: float = 90) -> None:
    """Start the node's dockerd (again: the same roots) and wait until it answers."""
    node.run.mkdir(parents=True, exist_ok=True)
    node.data.mkdir(parents=True, exist_ok=True)
    (node.data / "daemon.json").write_text("{}\n")
    log = node.data / "dockerd.log"
    with open(log, "ab") as fh:  # setsid -f: nobody's child, like the bed's own engine
        subprocess.run(["setsid", "-f", *node.dockerd_argv()], stdout=fh,
                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=True,
                       timeout=30)
    try:  # a raw /_ping that closes its socket (docker-py leaks one when refused)
        wait_until(lambda: engine_pings(node.sock), timeout=timeout, interval=0.3,
                   what=f"node {node.name}'s dockerd")
    except TimeoutError as exc:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-10:])
        raise BedError(f"fleet node {node.name} did not come up:\n{tail}") from exc


def _start_forwarder(ns: list[Node]) -> int:
    log = RUN / "forward.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "testbed.fleet_forward",
             *(f"{n.netns}={n.source}" for n in ns)],
            stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=Path(__file__).resolve().parent.parent)
    wait_until(lambda: "fleet_forward:" in log.read_text(errors="replace")
               or proc.poll() is not None, timeout=15, what="the fleet's forwarder")
    if proc.poll() is not None:
        raise BedError(f"the fleet's forwarder exited: {log.read_text()[-500:]}")
    _CHILDREN[proc.pid] = proc
    return proc.pid


def up(n: int) -> list[Node]:
    """Start an ``n``-node fleet (none may be running); return its nodes once all answer."""
    if not 1 <= n <= MAX_NODES:
        raise BedError(f"--nodes must be 1..{MAX_NODES}, not {n}")
    if FleetState.load() is not None or leftovers():
        raise BedError("a fleet (or what one left) is here: `python -m testbed fleet down`")
    engines.fetch_26()
    ns = nodes(n)
    RUN.mkdir(parents=True, exist_ok=True)
    FleetState(nodes=n).save()  # from here on, `down` knows what to remove
    _make_bridge()
    for node in ns:
        _make_node_net(node)
    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(start_node, ns))
    FleetState(nodes=n, forwarder=_start_forwarder(ns)).save()
    return ns


def _stop(pid: int, timeout: float) -> None:
    child = _CHILDREN.pop(pid, None)
    if child is None:  # a dockerd, containerd or shim: nobody's child here
        services._kill(pid, timeout)
        return
    child.terminate()
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(10)


def stop_node(node: Node, timeout: float = 60) -> None:
    """Stop one node's dockerd (SIGTERM; its containers stop with it): a host that went
    away. ``start_node`` brings it back with the same roots."""
    pid = node.dockerd_pid()
    if pid:
        _stop(pid, timeout)


def kill_node(node: Node) -> None:
    """SIGKILL one node's dockerd: a host lost without a goodbye (its containerd and the
    containers' shims live on, as they would on a machine whose engine crashed)."""
    pid = node.dockerd_pid()
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: node.dockerd_pid() is None or _is_zombie(pid), timeout=30,
                   what=f"node {node.name}'s dockerd to die")


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except (OSError, IndexError):
        return True


def fleet_pids() -> list[int]:
    """Every process of the fleet: its dockerds, their containerds and shims, the forwarder."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        cmd = engines.cmdline(int(entry.name))
        if str(RUN) in cmd or str(DATA) in cmd or "testbed.fleet_forward" in cmd:
            found.append(int(entry.name))
    return [p for p in found if p != os.getpid()]


def _mounts() -> list[str]:
    with open("/proc/self/mountinfo") as fh:
        points = [line.split()[4] for line in fh]
    return [m for m in points if m.startswith((str(RUN), str(DATA)))
            or m.startswith(f"/run/netns/{NETNS_PREFIX}")]


def _links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                         timeout=30, check=False).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()
             if line.count(":") >= 2]
    return [n for n in names if n == BRIDGE or (n.startswith("twn") and n.endswith("h"))]


def _namespaces() -> list[str]:
    d = Path("/run/netns")
    return sorted(p.name for p in d.iterdir() if p.name.startswith(NETNS_PREFIX)) \
        if d.is_dir() else []


def leftovers() -> list[str]:
    """What of a fleet is still on this machine: processes, mounts, interfaces, namespaces."""
    rule = ["iptables FORWARD rule"] if _iptables("-C", "FORWARD", *FORWARD_RULE) else []
    return ([f"process {p}" for p in fleet_pids()] + [f"mount {m}" for m in _mounts()]
            + [f"interface {n}" for n in _links()] + [f"netns {n}" for n in _namespaces()]
            + rule)


def down(timeout: float = 60) -> list[str]:
    """Stop every node's dockerd (its containers and containerd go with it), the forwarder,
    then remove mounts, interfaces, namespaces and the nodes' directories; return what is
    still left (empty when the machine is as before)."""
    st = FleetState.load()
    ns = nodes(st.nodes if st else MAX_NODES)
    if st and st.forwarder:
        _stop(st.forwarder, 10)
    with ThreadPoolExecutor(max_workers=len(ns)) as pool:
        list(pool.map(lambda n: stop_node(n, timeout), ns))
    for pid in fleet_pids():  # a containerd or shim that outlived its dockerd
        _stop(pid, 10)
    for m in sorted(_mounts(), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True, timeout=30, check=False)
    for name in _links():
        subprocess.run(["ip", "link", "delete", name], capture_output=True, timeout=30,
                       check=False)
    for name in _namespaces():
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30,
                       check=False)
    for _ in range(10):  # each -D removes one copy; leftovers() reports any that stays
        if not _iptables("-D", "FORWARD", *FORWARD_RULE):
            break
    shutil.rmtree(RUN, ignore_errors=True)
    shutil.rmtree(DATA, ignore_errors=True)
    return leftovers()
