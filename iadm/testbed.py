"""Bring the reference topology up and down from Python (tests, demo, scenarios).

Clean-up is part of the job: a run that crashed (or was killed) leaves a
bridge, host shells and the processes they started; `cleanup()` removes
exactly those (our switch, shells named "mininet:<host>") and nothing else,
so it is safe on a gateway that has bridges of its own.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY_FILE = ROOT / "topology" / "gateway.py"


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
def gateway_network(controller_port: int = 6653, devices: int = 0, attackers: int = 0, wait: float = 20):
    """The reference topology, started, connected to the controller at 127.0.0.1:controller_port."""
    from mininet.log import setLogLevel
    from mininet.net import Mininet
    from mininet.node import RemoteController

    setLogLevel(os.environ.get("IADM_MININET_LOG", "warning"))
    topo_module = load_topology()
    cleanup(topo_module.SWITCH)
    net = Mininet(topo=topo_module.GatewayTopo(devices=devices, attackers=attackers),
                  controller=None, autoSetMacs=False, build=False, waitConnected=False)
    net.addController("c0", controller=RemoteController, ip="127.0.0.1", port=controller_port)
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        net.build()
        net.start()
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
