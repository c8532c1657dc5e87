import pytest

from iadm.config import ConfigError, load_controller_config


def write(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return str(path)


def test_shipped_config_loads(monkeypatch):
    monkeypatch.setenv("IADM_API_TOKEN", "t")
    config = load_controller_config("config/controller.toml")
    assert config.monitor_port == "s1-eth3" and config.api_token == "t"


@pytest.mark.parametrize("text, words", [
    ("[openflow]\nport = 70000\n", "openflow.port"),
    ("[openflow]\nmonitr_port = 3\n", "unknown key 'openflow.monitr_port'"),
    ("[api]\ntoken = 5\n", "api.token"),
    ("[api\n", "not valid TOML"),
    ("port = 3\n", "must be a [section]"),
    ("[blocks]\ndefault_seconds = true\n", "blocks.default_seconds"),
    ("[blocks]\nalert_only = 1\n", "blocks.alert_only"),
])
def test_bad_config_names_file_and_key(tmp_path, monkeypatch, text, words):
    monkeypatch.setenv("IADM_API_TOKEN", "t")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_controller_config(path)
    assert path in str(err.value) and words in str(err.value)


def test_token_is_required(tmp_path, monkeypatch):
    monkeypatch.delenv("IADM_API_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="token"):
        load_controller_config(write(tmp_path, "[api]\nport = 9000\n"))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_controller_config(str(tmp_path / "none.toml"))


def test_shipped_monitor_config_loads_and_needs_its_tokens(tmp_path, monkeypatch):
    from iadm.config import load_monitor_config
    monkeypatch.setenv("IADM_OPERATOR_TOKEN", "op")
    config = load_monitor_config("config/monitor.toml")
    assert config.status_interval == 0.1 and config.zscore and config.api_token == "op"
    monkeypatch.delenv("IADM_OPERATOR_TOKEN")
    with pytest.raises(ConfigError, match="api.token is empty"):
        load_monitor_config("config/monitor.toml")
    path = write(tmp_path, '[verdicts]\nurl = "http://127.0.0.1:8181"\n[api]\nenabled = false\n')
    with pytest.raises(ConfigError, match="verdicts.token is empty"):
        load_monitor_config(path)
    path = write(tmp_path, "[zscore]\ntolerance = 9\n")
    with pytest.raises(ConfigError, match="zscore.tolerance"):
        load_monitor_config(path)


def test_fleet_and_console_sections_are_checked_key_by_key(tmp_path, monkeypatch):
    from iadm.config import ConfigError, load_controller_config, load_monitor_config
    path = tmp_path / "monitor.toml"
    path.write_text('[api]\ntoken = "t"\n[console]\nstore = "a.sqlite"\n'
                    '[fleet]\nenabled = true\nredis_port = 6380\nshared_blocks = "block"\n')
    monkeypatch.setenv("IADM_REDIS_PASSWORD", "from-env")
    config = load_monitor_config(str(path))
    assert (config.console_store, config.fleet.enabled, config.fleet.redis_port, config.fleet.shared_blocks,
            config.fleet.redis_password) == ("a.sqlite", True, 6380, "block", "from-env")
    path.write_text('[api]\ntoken = "t"\n[fleet]\nshared_blocks = "sometimes"\n')
    with pytest.raises(ConfigError, match="fleet.shared_blocks has a bad value"):
        load_monitor_config(str(path))
    path.write_text('[api]\ntoken = "t"\n[fleet]\nredis_host = "x"\n')
    with pytest.raises(ConfigError, match="unknown key 'fleet.redis_host'"):
        load_controller_config(str(path))
    path.write_text('[api]\ntoken = "t"\n[gateway]\nid = "shop-3"\n[fleet]\nenabled = true\n')
    controller = load_controller_config(str(path))
    assert (controller.gateway_id, controller.fleet.enabled, controller.fleet.shared_blocks) == ("shop-3", True, "off")
