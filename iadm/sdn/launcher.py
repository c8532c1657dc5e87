"""Runs the gateway app under os-ken (default) or Ryu 4.34.

os-ken has no `osken-manager`: its AppManager.run_apps is called directly.
Ryu 4.34 on Python 3.11 needs eventlet 0.33.3, whose wsgi module lacks
ALREADY_HANDLED; Ryu's manager imports it, so it is defined first. (Started
by Ryu's own `ryu-manager iadm/sdn/app.py`, the app loads its configuration
itself, and the import hook that scripts/setup --ryu installs into .venv-ryu,
packaging/ryu/iadm_ryu_compat.py, defines the name.)
"""
from __future__ import annotations

import logging
import os
import sys

from iadm.config import ControllerConfig

APP_MODULE = "iadm.sdn.app"


def _ofp_args(config: ControllerConfig) -> list[str]:
    return ["--ofp-listen-host", config.ofp_host, "--ofp-tcp-listen-port", str(config.ofp_port)]


def _setup_logging(config: ControllerConfig, stderr: bool) -> None:
    handlers = [logging.StreamHandler(sys.stderr)] if stderr else []
    if config.log_file:
        handlers.append(logging.FileHandler(config.log_file))
    logging.basicConfig(level=logging.INFO, handlers=handlers,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _prepare(config: ControllerConfig, framework: str) -> None:
    os.environ["IADM_FRAMEWORK"] = framework
    os.makedirs(os.path.dirname(os.path.abspath(config.block_store)), exist_ok=True)
    _setup_logging(config, stderr=framework != "ryu")  # Ryu's manager logs to stderr itself
    import iadm.sdn.app as app  # after IADM_FRAMEWORK is set: it picks the framework
    app.CONFIG = config


def run_osken(config: ControllerConfig) -> None:
    _prepare(config, "osken")
    from os_ken import cfg
    from os_ken.base.app_manager import AppManager
    cfg.CONF(args=_ofp_args(config), project="os_ken")
    AppManager.run_apps([APP_MODULE])


def run_ryu(config: ControllerConfig) -> None:
    import eventlet.wsgi
    if not hasattr(eventlet.wsgi, "ALREADY_HANDLED"):
        eventlet.wsgi.ALREADY_HANDLED = object()
    # Importing Ryu's manager monkey-patches the standard library with eventlet;
    # it must come before the app imports http.server, or the API's select()
    # blocks the whole hub and the switch never gets an answer.
    from ryu.cmd import manager
    _prepare(config, "ryu")
    manager.main(args=_ofp_args(config) + [APP_MODULE])


def run(config: ControllerConfig, framework: str = "osken") -> None:
    {"osken": run_osken, "ryu": run_ryu}[framework](config)
