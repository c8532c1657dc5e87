"""The app started the way Ryu users start apps: `ryu-manager iadm/sdn/app.py` or `ryu-manager iadm.sdn.app`,
in the Ryu 4.34 environment that scripts/setup --ryu builds (not through `iadm controller`)."""
import http.client
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from labtools import flow_packets, ping

from iadm.sdn.client import VerdictClient
from iadm.testbed import ROOT, free_port, gateway_network, wait_for_api

RYU_MANAGER = ROOT / ".venv-ryu" / "bin" / "ryu-manager"
TOKEN = "ryu-manager-token"


def _ryu_unavailable() -> str | None:
    if (ROOT / ".venv-ryu" / ".iadm-installed").exists():
        return None
    log = ROOT / "run" / "venv-ryu.log"
    return f"Ryu 4.34 is not installed at {RYU_MANAGER}: " + (log.read_text()[-600:] if log.exists()
                                                              else "scripts/setup --ryu was not run")


@pytest.fixture(scope="module", autouse=True)
def _ryu():
    reason = _ryu_unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"integration prerequisite missing in CI: {reason}")
        pytest.skip(reason)


class RyuManager:
    """`ryu-manager ARGS` as its own process, run from the checkout as a user would."""

    def __init__(self, workdir: Path, app: str, via: str):
        self.workdir = workdir
        self.ofp_port, self.api_port = free_port(), free_port()
        toml = workdir / "controller.toml"
        toml.write_text(f'[openflow]\nmonitor_port = "s1-eth3"\n'
                        f'[blocks]\nstore = "{workdir / "blocks.sqlite"}"\nallowlist = ["10.0.0.253"]\n'
                        f'[api]\nport = {self.api_port}\ntoken = "{TOKEN}"\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith("IADM_")}
        args = [str(RYU_MANAGER), "--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port", str(self.ofp_port)]
        if via == "IADM_CONFIG":
            env["IADM_CONFIG"] = str(toml)
        else:   # Ryu's own configuration file names the TOML in an [iadm] section
            (workdir / "ryu.conf").write_text(f"[iadm]\nconfig = {toml}\n")
            args += ["--config-file", str(workdir / "ryu.conf")]
        self.args, self.env = args + [app], env
        self.log_path = workdir / "ryu-manager.log"
        self.proc = None

    def client(self) -> VerdictClient:
        return VerdictClient(f"http://127.0.0.1:{self.api_port}", TOKEN)

    def start(self, timeout: float = 30) -> "RyuManager":
        self.proc = subprocess.Popen(self.args, env=self.env, cwd=ROOT, stdout=open(self.log_path, "ab"),
                                     stderr=subprocess.STDOUT)
        try:
            wait_for_api(self.proc, self.client, timeout, "ryu-manager", self.log_path)
        except RuntimeError as exc:
            self.stop()
            raise AssertionError(str(exc)) from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)   # what Ctrl-C does to ryu-manager
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None


@pytest.fixture(scope="module")
def by_path(tmp_path_factory, _integration_prerequisites):
    manager = RyuManager(tmp_path_factory.mktemp("ryu-manager"), "iadm/sdn/app.py", via="IADM_CONFIG").start()
    try:
        with gateway_network(manager.ofp_port) as net:
            yield manager, net
    finally:
        manager.stop()


def test_ryu_manager_with_the_apps_path_forwards_and_blocks(by_path):
    manager, net = by_path
    log = manager.log()
    assert "loading app iadm/sdn/app.py" in log and "loading app ryu.controller.ofp_handler" in log
    assert f"configuration {manager.workdir / 'controller.toml'} (named by IADM_CONFIG)" in log
    h1, switch = net.get("h1", "s1")
    assert ping(h1, "10.0.0.2") == 3
    doc = manager.client().verdict(action="block", src_ip="10.0.0.1", duration=60, reason="ryu-manager test")
    assert doc["installed_on"] == [f"{switch.dpid:0>16}"]   # answered after the switch's barrier
    assert ping(h1, "10.0.0.2") == 0
    assert flow_packets(switch, "table=0,ip,nw_src=10.0.0.1")[0] >= 3
    manager.client().verdict(action="unblock", src_ip="10.0.0.1")
    assert ping(h1, "10.0.0.2") == 3


def test_ryu_manager_with_the_module_name_and_a_ryu_config_file(tmp_path):
    """No switch needed: the app starts, its API answers on loopback beside 30 stalled connections
    (green threads under Ryu's hub), and Ctrl-C stops it."""
    manager = RyuManager(tmp_path, "iadm.sdn.app", via="--config-file").start()
    try:
        assert "named by [iadm] config in the manager's --config-file" in manager.log()
        assert manager.client().health() == {"api_version": 1, "switches": [], "blocks": 0}
        stalled = []
        for _ in range(30):
            s = socket.create_connection(("127.0.0.1", manager.api_port), timeout=5)
            s.sendall(b"POST /v1/verdicts HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n")
            stalled.append(s)
        time.sleep(0.3)
        conn = http.client.HTTPConnection("127.0.0.1", manager.api_port, timeout=5)
        start = time.perf_counter()
        conn.request("POST", "/v1/verdicts", json.dumps({"action": "block", "src_ip": "10.0.0.9", "duration": 30}),
                     {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        doc = json.loads(resp.read())
        seconds = time.perf_counter() - start
        conn.close()
        for s in stalled:
            s.close()
        assert resp.status == 201 and doc["installed_on"] == []   # no switch connected
        assert seconds < 0.5, f"{seconds:.3f} s beside 30 stalled connections under ryu-manager"
    finally:
        code = manager.stop()
    assert code is not None and manager.proc.poll() is not None
