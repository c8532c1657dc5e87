"""The app without the launcher: which framework, where its configuration comes from, the defaults and the
token it makes when there is none, os-ken's AppManager loading it, and the Ryu import hook that lets
`ryu-manager iadm/sdn/app.py` start (tests/integration/test_ryu_manager.py runs the real ryu-manager)."""
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from iadm.config import ConfigError, ControllerConfig
from iadm.sdn import app, framework

ROOT = Path(__file__).resolve().parents[2]
COMPAT = ROOT / "packaging" / "ryu" / "iadm_ryu_compat.py"


# --- which framework --------------------------------------------------------------------------

@pytest.mark.parametrize("environ, loaded, expected", [
    ({}, set(), "osken"),
    ({}, {"ryu.base.app_manager"}, "ryu"),                       # ryu-manager is loading the app
    ({}, {"os_ken.base.app_manager"}, "osken"),
    ({"IADM_FRAMEWORK": "ryu"}, set(), "ryu"),                  # the launcher says so before importing
    ({"IADM_FRAMEWORK": "ryu"}, {"ryu.base.app_manager"}, "ryu"),
])
def test_the_framework_follows_the_environment_or_the_manager_loading_the_app(environ, loaded, expected):
    assert framework.choose(environ, dict.fromkeys(loaded)) == expected


@pytest.mark.parametrize("environ, loaded, message", [
    ({"IADM_FRAMEWORK": "pox"}, set(), "expected 'osken' or 'ryu'"),
    ({"IADM_FRAMEWORK": "osken"}, {"ryu.base.app_manager"}, "loaded by ryu's manager"),
])
def test_a_framework_that_cannot_be_is_a_clear_error(environ, loaded, message):
    with pytest.raises(ImportError, match=message):
        framework.choose(environ, dict.fromkeys(loaded))


# --- the app's configuration under a bare manager -----------------------------------------------

class _Conf:
    """The shape of the manager's parsed options that the app reads."""

    def __init__(self, config=None, host="", port=None):
        self.iadm = type("Group", (), {"config": config})()
        self.ofp_listen_host, self.ofp_tcp_listen_port = host, port


def test_config_is_found_in_the_environment_then_the_managers_file_then_etc(tmp_path):
    default = tmp_path / "controller.toml"
    assert app.find_config({"IADM_CONFIG": "/a.toml"}, _Conf("/b.toml"), str(default)) == ("/a.toml", "IADM_CONFIG")
    assert app.find_config({}, _Conf("/b.toml"), str(default))[0] == "/b.toml"
    assert app.find_config({}, _Conf(), str(default)) == (None, "none")
    default.write_text("")
    assert app.find_config({}, _Conf(), str(default)) == (str(default), "the default location")


def _toml(tmp_path, api="", openflow=""):
    path = tmp_path / "c.toml"
    path.write_text(f'[openflow]\n{openflow}\n[blocks]\nstore = "{tmp_path / "state" / "blocks.sqlite"}"\n'
                    f'[api]\nport = 0\n{api}\n')
    return str(path)


def test_without_a_token_the_app_makes_one_beside_the_block_store_and_keeps_it(tmp_path, caplog):
    path = _toml(tmp_path)
    with caplog.at_level(logging.INFO, "iadm.controller"):
        first = app.load_config({"IADM_CONFIG": path}, _Conf())
    token_file = tmp_path / "state" / "api-token"
    assert first.api_token == token_file.read_text().strip() and len(first.api_token) >= 32
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert f"configuration {path} (named by IADM_CONFIG)" in caplog.text and str(token_file) in caplog.text
    assert app.load_config({"IADM_CONFIG": path}, _Conf()).api_token == first.api_token   # kept
    assert app.load_config({"IADM_CONFIG": path, "IADM_API_TOKEN": "env"}, _Conf()).api_token == "env"
    assert app.load_config({"IADM_CONFIG": _toml(tmp_path, 'token = "file"')}, _Conf()).api_token == "file"


def test_defaults_without_any_configuration_are_said_in_one_line(tmp_path, caplog, monkeypatch):
    store = str(tmp_path / "lib" / "blocks.sqlite")   # not the real default, /var/lib/iadm, in a test
    monkeypatch.setattr(app, "ControllerConfig", lambda: ControllerConfig(block_store=store))
    with caplog.at_level(logging.INFO, "iadm.controller"):
        config = app.load_config({"IADM_API_TOKEN": "x"}, _Conf(), default=str(tmp_path / "none.toml"))
    assert (config.api_host, config.api_port, config.monitor_port) == ("127.0.0.1", 8181, None)
    line = next(r.getMessage() for r in caplog.records if "no configuration" in r.getMessage())
    assert "built-in defaults" in line and "127.0.0.1:8181" in line and str(tmp_path / "lib") in line


def test_bad_configurations_are_refused_with_the_reason(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        app.load_config({"IADM_CONFIG": str(tmp_path / "missing.toml")}, _Conf())
    blocker = tmp_path / "file"
    blocker.write_text("")
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[blocks]\nstore = "{blocker / "blocks.sqlite"}"\n')
    with pytest.raises(ConfigError, match=r"cannot create .*file.*run as root"):
        app.load_config({"IADM_CONFIG": str(bad)}, _Conf())
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "api-token").write_text("\n")
    with pytest.raises(ConfigError, match="api-token is empty"):
        app.load_config({"IADM_CONFIG": _toml(tmp_path)}, _Conf())


def test_an_openflow_address_the_manager_does_not_use_is_pointed_out(tmp_path, caplog):
    path = _toml(tmp_path, 'token = "t"', "port = 6633")
    with caplog.at_level(logging.WARNING, "iadm.controller"):
        app.load_config({"IADM_CONFIG": path}, _Conf(port=6653))
    assert "openflow.port = 6633 is not used" in caplog.text and "--ofp-tcp-listen-port" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, "iadm.controller"):
        app.load_config({"IADM_CONFIG": path}, _Conf(port=6633))
    assert "is not used" not in caplog.text


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_os_ken_app_manager_runs_the_app_with_its_config_file_naming_the_toml(tmp_path):
    """No launcher: os-ken's AppManager loads iadm.sdn.app, which reads [iadm] config from --config-file."""
    api_port = _free_port()
    toml = tmp_path / "controller.toml"
    toml.write_text(f'[blocks]\nstore = "{tmp_path / "blocks.sqlite"}"\n[api]\nport = {api_port}\ntoken = "tk"\n')
    conf = tmp_path / "osken.conf"
    conf.write_text(f"[iadm]\nconfig = {toml}\n")
    code = ("import logging, sys; from os_ken import cfg; from os_ken.base.app_manager import AppManager; "
            "logging.basicConfig(level=logging.INFO); "
            "cfg.CONF(args=sys.argv[1:], project='os_ken'); AppManager.run_apps(['iadm.sdn.app'])")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IADM_")}
    proc = subprocess.Popen([sys.executable, "-c", code, "--config-file", str(conf), "--ofp-tcp-listen-port",
                             str(_free_port()), "--ofp-listen-host", "127.0.0.1"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        health = _wait_for_health(f"http://127.0.0.1:{api_port}", "tk", proc)
        assert health == {"api_version": 1, "switches": [], "blocks": 0}
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0].decode()
    assert f"configuration {toml}" in out


def _wait_for_health(url, token, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the app exited with {proc.returncode}: {proc.stdout.read().decode()[-2000:]}")
        try:
            req = urllib.request.Request(url + "/v1/health", headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(req, timeout=2) as resp:
                return json.loads(resp.read())
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"no answer from {url} within {timeout} s")


# --- the Ryu import hook ------------------------------------------------------------------------

def _fake_eventlet(tmp_path) -> Path:
    """An eventlet package whose wsgi module lacks ALREADY_HANDLED, as eventlet 0.33's does."""
    pkg = tmp_path / "fake" / "eventlet"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "wsgi.py").write_text("WSGI_LOCAL = object()\n")
    return tmp_path / "fake"


def _python(code, *paths):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(map(str, paths)))
    return subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True)


def test_the_hook_defines_already_handled_when_eventlet_wsgi_is_imported(tmp_path):
    fake = _fake_eventlet(tmp_path)
    check = "from eventlet.wsgi import ALREADY_HANDLED, WSGI_LOCAL; print('ok')"
    without = _python(check, fake)
    assert "cannot import name 'ALREADY_HANDLED'" in without.stderr   # the failure Ryu users meet
    hooked = _python("import iadm_ryu_compat; iadm_ryu_compat.install_hook(); import sys; "
                     "assert 'eventlet' not in sys.modules; " + check, fake, COMPAT.parent)
    assert hooked.stdout.strip() == "ok", hooked.stderr


def test_the_installed_pth_file_applies_the_hook_at_interpreter_start(tmp_path):
    fake = _fake_eventlet(tmp_path)
    site_dir = tmp_path / "site-packages"
    site_dir.mkdir()
    usage = subprocess.run([sys.executable, str(COMPAT)], capture_output=True, text=True)
    assert usage.returncode == 2 and "--install" in usage.stderr
    from importlib.util import module_from_spec, spec_from_file_location
    spec = spec_from_file_location("compat_under_test", COMPAT)
    compat = module_from_spec(spec)
    spec.loader.exec_module(compat)
    assert sorted(Path(p).name for p in compat.install_files(str(site_dir))) == ["iadm-ryu-compat.pth",
                                                                               "iadm_ryu_compat.py"]
    started = _python(f"import site; site.addsitedir({str(site_dir)!r}); "
                      "from eventlet.wsgi import ALREADY_HANDLED; print('ok')", fake)
    assert started.stdout.strip() == "ok", started.stderr


def test_the_hook_leaves_an_eventlet_that_has_the_name_alone(tmp_path):
    fake = _fake_eventlet(tmp_path)
    (fake / "eventlet" / "wsgi.py").write_text("ALREADY_HANDLED = 'theirs'\n")
    out = _python("import iadm_ryu_compat; iadm_ryu_compat.install_hook(); "
                  "from eventlet.wsgi import ALREADY_HANDLED; print(ALREADY_HANDLED)", fake, COMPAT.parent)
    assert out.stdout.strip() == "theirs", out.stderr
