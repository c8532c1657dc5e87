"""Integration tests: real Open vSwitch, real Mininet hosts, real packets, the controller as its own process."""
import os
import shutil

import pytest

from iadm.testbed import ControllerProcess, gateway_network


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, OVS)"
    for tool in ("ovs-vsctl", "mnexec", "tcpdump", "ethtool"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/test installs it)"
    if os.system("ovs-vsctl --timeout=3 show >/dev/null 2>&1") != 0:
        return "Open vSwitch is not running (scripts/test starts it)"
    return None


@pytest.fixture(scope="session", autouse=True)
def _integration_prerequisites(request):
    reason = _missing()
    if reason and any("integration" in str(i.fspath) for i in request.session.items):
        if os.environ.get("CI"):
            pytest.fail(f"integration prerequisites missing in CI: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, _integration_prerequisites):
    """The controller as its own process and the reference topology, shared by one module's tests.

    Module scope: one topology at a time (they share the switch name), torn down between modules."""
    workdir = tmp_path_factory.mktemp("gateway")
    controller = ControllerProcess(workdir).start()
    try:
        with gateway_network(controller.ofp_port) as net:
            yield controller, net, workdir
    finally:
        controller.stop()
