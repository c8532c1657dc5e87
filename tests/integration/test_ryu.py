"""The same app under Ryu 4.34 (in .venv-ryu, built by scripts/setup --ryu)."""
import os
from pathlib import Path

import pytest
from labtools import flow_packets, ping

from iadm.testbed import ROOT, ControllerProcess, gateway_network

RYU_PYTHON = Path(os.environ.get("IADM_RYU_PYTHON", ROOT / ".venv-ryu" / "bin" / "python"))


def _ryu_unavailable() -> str | None:
    if (RYU_PYTHON.parent.parent / ".iadm-installed").exists() or "IADM_RYU_PYTHON" in os.environ:
        return None
    log = ROOT / "run" / "venv-ryu.log"
    tail = log.read_text()[-600:] if log.exists() else "scripts/setup --ryu was not run"
    return f"Ryu 4.34 is not installed at {RYU_PYTHON}: {tail}"


@pytest.fixture(scope="module")
def ryu_lab(tmp_path_factory):
    reason = _ryu_unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"integration prerequisite missing in CI: {reason}")
        pytest.skip(reason)
    controller = ControllerProcess(tmp_path_factory.mktemp("ryu"), framework="ryu", python=str(RYU_PYTHON))
    controller.start()
    try:
        with gateway_network(controller.ofp_port) as net:
            yield controller, net
    finally:
        controller.stop()


def test_ryu_forwards_and_blocks(ryu_lab):
    controller, net = ryu_lab
    assert "loading app ryu.controller.ofp_handler" in controller.log_path.read_text()  # really Ryu
    h1, switch = net.get("h1", "s1")
    assert ping(h1, "10.0.0.2") == 3
    doc = controller.client().verdict(action="block", src_ip="10.0.0.1", duration=60)
    assert doc["installed_on"] == [f"{switch.dpid:0>16}"]  # answered after the barrier
    assert ping(h1, "10.0.0.2") == 0
    assert flow_packets(switch, "table=0,ip,nw_src=10.0.0.1")[0] >= 3
    controller.client().verdict(action="unblock", src_ip="10.0.0.1")
    assert ping(h1, "10.0.0.2") == 3
