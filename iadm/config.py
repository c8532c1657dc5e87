"""The controller's configuration file (TOML), checked key by key.

Errors name the file and the key, so an operator fixes the right line.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field


class ConfigError(ValueError):
    pass


@dataclass
class ControllerConfig:
    gateway_id: str = ""            # this gateway's name in events; "" = the host name
    ofp_host: str = "127.0.0.1"
    ofp_port: int = 6653
    monitor_port: int | str | None = None
    uplink_port: int | str | None = None
    packet_in_rate: int = 1000
    max_hosts: int = 4096
    block_store: str = "/var/lib/iadm/blocks.sqlite"
    default_block_seconds: int = 300
    allowlist: list = field(default_factory=list)
    alert_only: bool = False
    api_host: str = "127.0.0.1"
    api_port: int = 8181
    api_token: str = ""
    log_file: str | None = None
    fleet: "FleetConfig" = field(default_factory=lambda: FleetConfig())


@dataclass
class FleetConfig:
    """Events to Redis Streams and shared blocks (docs/fleet.md); off by default."""
    enabled: bool = False
    redis_server: str = "127.0.0.1"
    redis_port: int = 6379
    redis_password: str = ""        # or IADM_REDIS_PASSWORD in the environment, which wins
    redis_tls: bool = False
    key: str = "iadm:events"        # the stream events are added to
    maxlen: int = 1_000_000         # XADD MAXLEN ~
    spool: str = "/var/lib/iadm/fleet-spool"   # events kept while Redis does not answer
    spool_max_bytes: int = 256 << 20
    shared_blocks: str = "off"      # what this gateway does with another's block offer: off | alert | block
    shared_block_seconds: int = 600


_FLEET_SCHEMA = {
    "fleet.enabled": ("enabled", bool, None),
    "fleet.redis_server": ("redis_server", str, lambda v: bool(v)),
    "fleet.redis_port": ("redis_port", int, lambda v: 1 <= v <= 65535),
    "fleet.redis_password": ("redis_password", str, None),
    "fleet.redis_tls": ("redis_tls", bool, None),
    "fleet.key": ("key", str, lambda v: 0 < len(v) <= 200),
    "fleet.maxlen": ("maxlen", int, lambda v: v >= 1000),
    "fleet.spool": ("spool", str, lambda v: bool(v)),
    "fleet.spool_max_bytes": ("spool_max_bytes", int, lambda v: v >= 1 << 20),
    "fleet.shared_blocks": ("shared_blocks", str, lambda v: v in ("off", "alert", "block")),
    "fleet.shared_block_seconds": ("shared_block_seconds", int, lambda v: 1 <= v <= 0xFFFF),
}


_SCHEMA = {
    # key in the file: (attribute, accepted types, check or None)
    "gateway.id": ("gateway_id", str, lambda v: 0 < len(v) <= 64),
    "openflow.host": ("ofp_host", str, None),
    "openflow.port": ("ofp_port", int, lambda v: 1 <= v <= 65535),
    "openflow.monitor_port": ("monitor_port", (int, str), lambda v: not isinstance(v, int) or v >= 1),
    "openflow.uplink_port": ("uplink_port", (int, str), lambda v: not isinstance(v, int) or v >= 1),
    "openflow.packet_in_rate": ("packet_in_rate", int, lambda v: 1 <= v <= 1_000_000),
    "openflow.max_hosts": ("max_hosts", int, lambda v: v >= 1),
    "blocks.store": ("block_store", str, None),
    "blocks.default_seconds": ("default_block_seconds", int, lambda v: 1 <= v <= 0xFFFF),
    "blocks.allowlist": ("allowlist", list, None),
    "blocks.alert_only": ("alert_only", bool, None),
    "api.host": ("api_host", str, None),
    "api.port": ("api_port", int, lambda v: 0 <= v <= 65535),
    "api.token": ("api_token", str, None),
    "log.file": ("log_file", str, None),
}


def read_toml(path: str) -> dict:
    """A TOML file, or a ConfigError naming the file and what is wrong."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _load(path: str | None, schema: dict, config, sections: dict | None = None):
    """sections: {name: (schema, object)} for sections read into their own object (fleet)."""
    if not path:
        return config
    doc = read_toml(path)
    for section, values in doc.items():
        if section in (sections or {}):
            _load_doc(path, {section: values}, *sections[section])
            continue
        _load_doc(path, {section: values}, schema, config)
    return config


def _load_doc(path: str, doc: dict, schema: dict, config) -> None:
    for section, values in doc.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: {section!r} must be a [section]")
        for key, value in values.items():
            name = f"{section}.{key}"
            if name not in schema:
                raise ConfigError(f"{path}: unknown key {name!r}; known: {', '.join(sorted(schema))}")
            attr, types, check = schema[name]
            if (isinstance(value, bool) != (types is bool) or not isinstance(value, types)
                    or (check and not check(value))):
                raise ConfigError(f"{path}: {name} has a bad value {value!r}")
            setattr(config, attr, value)


def load_controller_config(path: str | None) -> ControllerConfig:
    config = ControllerConfig()
    _load(path, _SCHEMA, config, {"fleet": (_FLEET_SCHEMA, config.fleet)})
    _fleet_environment(config.fleet)
    config.api_token = os.environ.get("IADM_API_TOKEN", config.api_token)
    if not config.api_token:
        raise ConfigError(f"{path or 'defaults'}: api.token is empty and IADM_API_TOKEN is not set")
    return config


@dataclass
class MonitorConfig:
    """What the live monitor needs beyond the capture: opinions, verdicts, alerts."""
    gateway_id: str = ""            # this gateway's name in alerts and metrics; "" = the host name
    rule_files: list = field(default_factory=lambda: ["rules/iot.rules"])
    variables: str | None = "rules/variables.conf"
    baseline: str = ""
    learn_seconds: float = 0.0
    model: str | None = "models/default"
    status_interval: float = 0.1
    idle_timeout: float = 30.0
    max_flows: int = 1 << 18
    verdict_url: str | None = None
    verdict_token: str = ""
    block_seconds: int = 300
    min_records: int = 3
    model_min_records: int = 10
    evidence_seconds: float = 2.0
    realert_seconds: float = 10.0
    uplink_macs: list = field(default_factory=list)
    shaped_rate_pps: int = 1000
    no_uplink: bool = False
    alert_log: str = "/var/log/iadm/alerts.json"
    alert_max_bytes: int = 64 << 20
    alert_keep: int = 5
    zscore: bool = True
    zscore_db: str = "/var/lib/iadm/zscore.sqlite"
    zscore_tolerance: float = 3.0
    zscore_frequency: float = 24.0
    zscore_min_count: int = 10
    api: bool = True
    api_host: str = "127.0.0.1"
    api_port: int = 8282
    api_token: str = ""
    console: bool = True            # the operator console in the browser, on the operator API's port
    console_store: str = "/var/lib/iadm/alerts.sqlite"   # the alert store: a SQLite path or postgresql://...
    fleet: FleetConfig = field(default_factory=FleetConfig)


def _fleet_environment(fleet: FleetConfig) -> None:
    fleet.redis_password = os.environ.get("IADM_REDIS_PASSWORD", fleet.redis_password)


def _positive(v):
    return v > 0


_MONITOR_SCHEMA = {
    "gateway.id": ("gateway_id", str, lambda v: 0 < len(v) <= 64),
    "rules.files": ("rule_files", list, lambda v: bool(v) and all(isinstance(x, str) for x in v)),
    "rules.variables": ("variables", str, None),
    "baseline.file": ("baseline", str, None),
    "baseline.learn_seconds": ("learn_seconds", (int, float), lambda v: v >= 0),
    "model.path": ("model", str, None),
    "flows.status_interval": ("status_interval", (int, float), _positive),
    "flows.idle_timeout": ("idle_timeout", (int, float), _positive),
    "flows.max_flows": ("max_flows", int, lambda v: v >= 16),
    "verdicts.url": ("verdict_url", str, lambda v: v.startswith(("http://", "https://"))),
    "verdicts.token": ("verdict_token", str, None),
    "verdicts.block_seconds": ("block_seconds", int, lambda v: 1 <= v <= 0xFFFF),
    "verdicts.min_records": ("min_records", int, _positive),
    "verdicts.model_min_records": ("model_min_records", int, _positive),
    "verdicts.evidence_seconds": ("evidence_seconds", (int, float), _positive),
    "verdicts.realert_seconds": ("realert_seconds", (int, float), _positive),
    "verdicts.uplink_macs": ("uplink_macs", list, lambda v: all(isinstance(m, str) and len(m) == 17 for m in v)),
    "verdicts.no_uplink": ("no_uplink", bool, None),
    "verdicts.shaped_rate_pps": ("shaped_rate_pps", int, lambda v: 1 <= v <= 10_000_000),
    "alerts.log": ("alert_log", str, None),
    "alerts.max_bytes": ("alert_max_bytes", int, lambda v: v >= 4096),
    "alerts.keep": ("alert_keep", int, _positive),
    "zscore.enabled": ("zscore", bool, None),
    "zscore.db": ("zscore_db", str, None),
    "zscore.tolerance": ("zscore_tolerance", (int, float), lambda v: 2 <= v <= 6),
    "zscore.frequency": ("zscore_frequency", (int, float), lambda v: 1 <= v <= 168),
    "zscore.min_count": ("zscore_min_count", int, lambda v: v >= 2),
    "api.enabled": ("api", bool, None),
    "api.host": ("api_host", str, None),
    "api.port": ("api_port", int, lambda v: 0 <= v <= 65535),
    "api.token": ("api_token", str, None),
    "console.enabled": ("console", bool, None),
    "console.store": ("console_store", str, lambda v: bool(v)),
}


def load_monitor_config(path: str | None) -> MonitorConfig:
    """Relative paths are relative to the working directory; IADM_API_TOKEN wins over verdicts.token."""
    config = MonitorConfig()
    _load(path, _MONITOR_SCHEMA, config, {"fleet": (_FLEET_SCHEMA, config.fleet)})
    _fleet_environment(config.fleet)
    config.verdict_token = os.environ.get("IADM_API_TOKEN", config.verdict_token)
    if config.verdict_url and not config.verdict_token:
        raise ConfigError(f"{path}: verdicts.url is set but verdicts.token is empty and IADM_API_TOKEN is not set")
    config.api_token = os.environ.get("IADM_OPERATOR_TOKEN", config.api_token)
    if config.api and not config.api_token:
        raise ConfigError(f"{path}: the operator API is on (api.enabled) but api.token is empty and "
                          f"IADM_OPERATOR_TOKEN is not set")
    return config


def load_fleet_config(path: str | None) -> FleetConfig:
    """The [fleet] section alone, of any iadm config (the collector's, a monitor's, a controller's);
    other sections are not checked here: they belong to their own program."""
    config = FleetConfig()
    if path:
        doc = read_toml(path)
        if "fleet" in doc:
            _load_doc(path, {"fleet": doc["fleet"]}, _FLEET_SCHEMA, config)
    _fleet_environment(config)
    return config
