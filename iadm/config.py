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
    ofp_host: str = "127.0.0.1"
    ofp_port: int = 6653
    monitor_port: int | str | None = None
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


_SCHEMA = {
    # key in the file: (attribute, accepted types, check or None)
    "openflow.host": ("ofp_host", str, None),
    "openflow.port": ("ofp_port", int, lambda v: 1 <= v <= 65535),
    "openflow.monitor_port": ("monitor_port", (int, str), lambda v: not isinstance(v, int) or v >= 1),
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


def load_controller_config(path: str | None) -> ControllerConfig:
    config = ControllerConfig()
    if path:
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        for section, values in doc.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: {section!r} must be a [section]")
            for key, value in values.items():
                name = f"{section}.{key}"
                if name not in _SCHEMA:
                    raise ConfigError(f"{path}: unknown key {name!r}; known: {', '.join(sorted(_SCHEMA))}")
                attr, types, check = _SCHEMA[name]
                if (isinstance(value, bool) != (types is bool) or not isinstance(value, types)
                        or (check and not check(value))):
                    raise ConfigError(f"{path}: {name} has a bad value {value!r}")
                setattr(config, attr, value)
    config.api_token = os.environ.get("IADM_API_TOKEN", config.api_token)
    if not config.api_token:
        raise ConfigError(f"{path or 'defaults'}: api.token is empty and IADM_API_TOKEN is not set")
    return config
