"""The gateway install: systemd units that verify and are hardened, configs that load, deploy/install."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from iadm.config import load_controller_config, load_monitor_config

ROOT = Path(__file__).resolve().parents[2]


# --- systemd units and the install script --------------------------------------------------------

UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None and not os.environ.get("CI"),
                    reason="systemd-analyze is not installed")
def test_the_units_pass_systemd_analyze_verify(tmp_path):
    assert [u.name for u in UNITS] == ["iadm-collector.service", "iadm-controller.service", "iadm-monitor@.service"]
    iadm = Path(sys.executable).with_name("iadm")   # the unit's /opt/iadm/bin/iadm, here
    for unit in UNITS:
        (tmp_path / unit.name).write_text(unit.read_text().replace("/opt/iadm/bin/iadm", str(iadm)))
    for name in ("iadm-collector.service", "iadm-controller.service", "iadm-monitor@mirror0.service"):
        out = subprocess.run(["systemd-analyze", "verify", f"./{name}"], cwd=tmp_path, capture_output=True,
                             text=True)
        assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr
    broken = tmp_path / "iadm-controller.service"   # the check can fail: a misspelt key is reported
    broken.write_text(broken.read_text().replace("ProtectSystem=", "ProtectSistem="))
    out = subprocess.run(["systemd-analyze", "verify", "./iadm-controller.service"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert "Unknown key 'ProtectSistem'" in out.stdout + out.stderr


def test_the_units_are_hardened_as_a_security_daemon_should_be():
    collector, controller, monitor = (u.read_text() for u in UNITS)
    for unit in (collector, controller, monitor):
        for line in ("User=iadm", "StateDirectory=iadm", "LogsDirectory=iadm", "ProtectSystem=strict",
                     "NoNewPrivileges=yes", "Restart=on-failure"):
            assert f"\n{line}\n" in unit
    for unit in (controller, monitor):
        assert "\nEnvironmentFile=/etc/iadm/tokens.env\n" in unit
    assert "\nEnvironmentFile=/etc/iadm/fleet.env\n" in collector and "\nCapabilityBoundingSet=\n" in collector
    assert "fleet collect --config /etc/iadm/fleet.toml" in collector
    assert "\nCapabilityBoundingSet=\n" in controller and "\nAmbientCapabilities=\n" in controller
    assert "\nCapabilityBoundingSet=CAP_NET_RAW\n" in monitor and "\nAmbientCapabilities=CAP_NET_RAW\n" in monitor
    assert "--iface %I --config /etc/iadm/monitor.toml" in monitor
    assert "controller --config /etc/iadm/controller.toml" in controller


def test_the_shipped_gateway_configs_load(monkeypatch):
    monkeypatch.setenv("IADM_API_TOKEN", "a")
    monkeypatch.setenv("IADM_OPERATOR_TOKEN", "b")
    controller = load_controller_config(str(ROOT / "deploy" / "etc" / "controller.toml"))
    assert controller.block_store.startswith("/var/lib/iadm/") and controller.monitor_port == "mirror0"
    monitor = load_monitor_config(str(ROOT / "deploy" / "etc" / "monitor.toml"))
    assert monitor.alert_log.startswith("/var/log/iadm/") and monitor.zscore_db.startswith("/var/lib/iadm/")
    assert monitor.verdict_url == f"http://{controller.api_host}:{controller.api_port}"


def test_install_lays_the_files_and_an_upgrade_keeps_the_operators(tmp_path):
    root = tmp_path / "root"
    run = [str(ROOT / "deploy" / "install"), "--root", str(root), "--prefix", "/opt/gw", "--no-pip"]
    out = subprocess.run(run, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    unit = (root / "etc/systemd/system/iadm-controller.service").read_text()
    assert "ExecStart=/opt/gw/bin/iadm controller" in unit and "/opt/iadm" not in unit
    assert (root / "opt/gw/share/models/default.joblib").exists()
    assert (root / "opt/gw/share/models/default.trees.npz").exists()   # the compiled trees the card records
    assert (root / "etc/iadm/rules/variables.conf").exists()
    assert "/opt/gw/share/models/default" in (root / "etc/iadm/monitor.toml").read_text()
    tokens = (root / "etc/iadm/tokens.env").read_text()
    assert (root / "etc/iadm/tokens.env").stat().st_mode & 0o007 == 0   # nobody else reads the tokens
    (root / "etc/iadm/controller.toml").write_text("# mine\n")
    assert subprocess.run(run, capture_output=True).returncode == 0
    assert (root / "etc/iadm/controller.toml").read_text() == "# mine\n"
    assert (root / "etc/iadm/tokens.env").read_text() == tokens
    bad = subprocess.run(run + ["--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument --bogus" in bad.stderr


def test_commands_find_the_installed_config_without_config(tmp_path, monkeypatch):
    """On a gateway (deploy/install), `iadm controller`, `iadm verdict` and `iadm monitor` find their
    TOML in /etc/iadm when no --config is given; --config still wins; elsewhere nothing is assumed."""
    from iadm import cli
    monkeypatch.setattr(cli, "ETC", str(tmp_path))
    assert cli.installed_config(None, "controller.toml") is None
    (tmp_path / "controller.toml").write_text("[api]\nport = 8181\n")
    assert cli.installed_config(None, "controller.toml") == str(tmp_path / "controller.toml")
    assert cli.installed_config("mine.toml", "controller.toml") == "mine.toml"
