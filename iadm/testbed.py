"""Bring the reference topology up and down from Python (tests, demo, scenarios).

Clean-up is part of the job: a run that crashed (or was killed) leaves a
bridge, host shells and the processes they started; `cleanup()` removes
exactly those (our switch, shells named "mininet:<host>") and nothing else,
so it is safe on a gateway that has bridges of its own.
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY_FILE = ROOT / "topology" / "gateway.py"

# The management link: a veth from the root namespace (controller) to the
# monitor host, on a link-local /30 that no topology traffic uses. The
# monitor reaches the verdict API over it, as a monitor container would over
# a gateway's management network; nothing on it is bridged to the switch.
MGMT_CONTROLLER, MGMT_MONITOR, MGMT_PREFIX = "169.254.66.1", "169.254.66.2", 30
MGMT_ROOT_IFACE, MGMT_MONITOR_IFACE = "iadm-mgmt0", "mgmt0"

# One reference topology per machine: it has fixed switch and host names, and
# starting one cleans up what another left, so a second run (a test beside the
# demo, two test runs) waits for the first instead of tearing it down.
TOPOLOGY_LOCK = "/run/lock/iadm-topology.lock"


@contextlib.contextmanager
def topology_lock(path: str = TOPOLOGY_LOCK):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"iadm: another reference topology is running ({path}); waiting for it", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_topology():
    spec = importlib.util.spec_from_file_location("iadm_topology_gateway", TOPOLOGY_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _host_shell_sessions() -> set[int]:
    sessions = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            if b"mininet:" in cmdline and b"bash" in cmdline:
                sessions.add(os.getsid(int(proc.name)))
        except (OSError, ProcessLookupError):
            continue
    return sessions


def cleanup(switch: str = "s1") -> None:
    """Remove what a crashed run left behind: host shells (and all they started), the bridge, veths."""
    for sid in _host_shell_sessions():
        subprocess.run(["pkill", "-9", "-s", str(sid)], check=False)
    subprocess.run(["ovs-vsctl", "--if-exists", "del-br", switch], check=False)
    for link in Path("/sys/class/net").glob(f"{switch}-eth*"):
        subprocess.run(["ip", "link", "del", link.name], check=False, stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def management_link():
    """The management veth, made before the controller starts (its API binds to MGMT_CONTROLLER);
    gateway_network(management=True) moves the far end into the monitor host."""
    def remove():
        subprocess.run(["ip", "link", "del", MGMT_ROOT_IFACE], check=False, stderr=subprocess.DEVNULL)
    remove()
    subprocess.run(["ip", "link", "add", MGMT_ROOT_IFACE, "type", "veth", "peer", "name", MGMT_MONITOR_IFACE],
                   check=True)
    subprocess.run(["ip", "addr", "add", f"{MGMT_CONTROLLER}/{MGMT_PREFIX}", "dev", MGMT_ROOT_IFACE], check=True)
    subprocess.run(["ip", "link", "set", MGMT_ROOT_IFACE, "up"], check=True)
    try:
        yield MGMT_CONTROLLER
    finally:
        remove()


def _attach_management(monitor) -> None:
    subprocess.run(["ip", "link", "set", MGMT_MONITOR_IFACE, "netns", str(monitor.pid)], check=True)
    monitor.cmd(f"ip addr add {MGMT_MONITOR}/{MGMT_PREFIX} dev {MGMT_MONITOR_IFACE}; "
                f"ip link set {MGMT_MONITOR_IFACE} up")


def _terminated(*_signal_args):
    """SIGTERM unwinds like Ctrl-C, so the network is stopped and cleaned up on the way out."""
    raise KeyboardInterrupt


def wait_for_api(proc, client, timeout: float, what: str, log_path) -> None:
    """Until the verdict API of a starting process answers; a RuntimeError with the tail of its log
    when the process exits first or the API stays silent for `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; log: {log_path}\n"
                               + Path(log_path).read_text(errors="replace")[-3000:])
        try:
            client().health()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what}'s API not up within {timeout}s; log: {log_path}\n"
                       + Path(log_path).read_text(errors="replace")[-3000:])


@contextlib.contextmanager
def gateway_network(controller_port: int = 6653, devices: int = 0, attackers: int = 0, wait: float = 20,
                    management: bool = False, uplink: bool = False):
    """The reference topology, started, connected to the controller at 127.0.0.1:controller_port;
    with `management`, the monitor host gets the far end of management_link(); with `uplink`, the
    router r1 on the last switch port (topology.gateway.uplink_port) and the outside client o1."""
    from mininet.log import setLogLevel

    setLogLevel(os.environ.get("IADM_MININET_LOG", "warning"))
    topo_module = load_topology()
    with topology_lock():
        cleanup(topo_module.SWITCH)
        yield from _started_network(topo_module, controller_port, devices, attackers, wait, management, uplink)


def _started_network(topo_module, controller_port, devices, attackers, wait, management, uplink=False):
    from mininet.net import Mininet
    from mininet.node import RemoteController

    net = Mininet(topo=topo_module.GatewayTopo(devices=devices, attackers=attackers, uplink=uplink),
                  controller=None, autoSetMacs=False, build=False, waitConnected=False)
    class Remote(RemoteController):
        def checkListening(self):
            """Mininet probes the port with telnet and decodes what comes back as UTF-8; an
            OpenFlow controller answers with a binary HELLO, which crashes the probe. Whether the
            switch got connected is what waitConnected below checks."""

    net.addController("c0", controller=Remote, ip="127.0.0.1", port=controller_port)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        net.build()
        net.start()
        if management:
            _attach_management(net.get("monitor"))
        if not net.waitConnected(timeout=wait):
            raise RuntimeError(f"the switch did not connect to the controller at 127.0.0.1:{controller_port} "
                               f"within {wait}s")
        yield net
    finally:
        try:
            net.stop()
        finally:
            cleanup(topo_module.SWITCH)
            signal.signal(signal.SIGTERM, previous)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ControllerProcess:
    """`iadm controller` as its own process, with a config written for this run."""

    def __init__(self, workdir: Path, token: str = "iadm-test-token", framework: str = "osken",
                 python: str = sys.executable, allowlist=("10.0.0.253",), monitor_port="s1-eth3",
                 alert_only: bool = False, api_host: str = "127.0.0.1", uplink_port: str | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.framework = framework
        self.python = python
        self.ofp_port = free_port()
        self.api_host = api_host
        self.api_port = free_port()
        self.log_path = self.workdir / f"controller-{framework}.log"
        self.config_path = self.workdir / "controller.toml"
        self.config_path.write_text((
            f"[openflow]\nport = {self.ofp_port}\nmonitor_port = {monitor_port!r}\n"
            + (f"uplink_port = {uplink_port!r}\n" if uplink_port else "") +
            f"[blocks]\nstore = {str(self.workdir / 'blocks.sqlite')!r}\nallowlist = {list(allowlist)!r}\n"
            f"alert_only = {str(alert_only).lower()}\n"
            f"[api]\nhost = {api_host!r}\nport = {self.api_port}\ntoken = {token!r}\n").replace("'", '"'))
        self.proc = None

    @property
    def url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"

    def client(self, token: str | None = None):
        from iadm.sdn.client import VerdictClient
        return VerdictClient(self.url, self.token if token is None else token)

    def start(self, timeout: float = 30) -> "ControllerProcess":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.python, "-m", "iadm.cli", "controller", "--config", str(self.config_path),
             "--framework", self.framework], stdout=log, stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if k != "IADM_API_TOKEN"})
        try:
            wait_for_api(self.proc, self.client, timeout, "controller", self.log_path)
        except RuntimeError:
            self.stop()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, as in a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def switch_counters(switch: str = "s1") -> dict:
    """The verdicts' entries on the switch, read back with ovs-ofctl: per block id, the table-0
    entry's packets and bytes and, for a rate limit, its meter's packets in and dropped by its band.
    A drop entry's packets are all dropped; a meter's entry counts what it let through as well."""
    from iadm.sdn.pipeline import BLOCK_METER_BASE, COOKIE_BLOCK, COOKIE_ID_MASK, COOKIE_KIND_SHIFT

    def ofctl(*args) -> str:
        return subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", *args, switch], capture_output=True, text=True,
                              check=False).stdout
    out: dict = {}
    for line in ofctl("dump-flows").splitlines():
        fields = dict(part.split("=", 1) for part in line.strip().replace(", ", " ").split(" ")
                      if "=" in part and part.split("=", 1)[0] in ("cookie", "table", "n_packets", "n_bytes"))
        if "cookie" not in fields or fields.get("table") != "0":
            continue
        cookie = int(fields["cookie"], 16)
        if cookie >> COOKIE_KIND_SHIFT != COOKIE_BLOCK >> COOKIE_KIND_SHIFT:
            continue
        out[cookie & COOKIE_ID_MASK] = {"n_packets": int(fields["n_packets"]), "n_bytes": int(fields["n_bytes"]),
                                        "drop": "actions=drop" in line or line.rstrip().endswith("actions="),
                                        "entry": line.strip()}
    meter = None
    for line in ofctl("meter-stats").splitlines():
        words = dict(w.split(":", 1) for w in line.split() if ":" in w)
        if "meter" in words:
            meter = int(words["meter"])
            packets_in = int(words.get("packet_in_count", 0))
        elif meter is not None and "packet_count" in words and meter >= BLOCK_METER_BASE:
            block = out.get(meter - BLOCK_METER_BASE)
            if block is not None:
                block.update(meter_id=meter, meter_in=packets_in, meter_dropped=int(words["packet_count"]))
    return out
