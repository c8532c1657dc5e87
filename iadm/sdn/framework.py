"""The one place that decides which OpenFlow framework is imported.

os-ken (the maintained Ryu fork) by default; Ryu 4.34 when IADM_FRAMEWORK=ryu,
or when Ryu's own manager is the one loading the app (`ryu-manager
iadm/sdn/app.py`) and IADM_FRAMEWORK is unset. Both expose the Ryu API under a
different package name, so the app imports the names from here and runs
unchanged on either.
"""
import os
import sys

FRAMEWORKS = ("osken", "ryu")


def choose(environ=os.environ, modules=sys.modules) -> str:
    """IADM_FRAMEWORK if set; else the framework whose app manager is already loaded; else os-ken."""
    running = [name for name, module in (("osken", "os_ken.base.app_manager"), ("ryu", "ryu.base.app_manager"))
               if module in modules]
    name = environ.get("IADM_FRAMEWORK")
    if name is None:
        return running[0] if len(running) == 1 else "osken"
    if name not in FRAMEWORKS:
        raise ImportError(f"IADM_FRAMEWORK={name!r}: expected 'osken' or 'ryu'")
    if running and name not in running:
        raise ImportError(f"IADM_FRAMEWORK={name} but the app is being loaded by {running[0]}'s manager; "
                          f"unset IADM_FRAMEWORK or set it to {running[0]}")
    return name


NAME = choose()

if NAME == "osken":
    from os_ken import cfg
    from os_ken.base import app_manager
    from os_ken.controller import ofp_event
    from os_ken.controller.handler import (CONFIG_DISPATCHER, DEAD_DISPATCHER,
                                           MAIN_DISPATCHER, set_ev_cls)
    from os_ken.lib import hub
    from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser
    BaseApp = app_manager.OSKenApp
else:
    from ryu import cfg
    from ryu.base import app_manager
    from ryu.controller import ofp_event
    from ryu.controller.handler import (CONFIG_DISPATCHER, DEAD_DISPATCHER,
                                        MAIN_DISPATCHER, set_ev_cls)
    from ryu.lib import hub
    from ryu.ofproto import ofproto_v1_3, ofproto_v1_3_parser
    BaseApp = app_manager.RyuApp

__all__ = ["NAME", "BaseApp", "app_manager", "cfg", "ofp_event", "CONFIG_DISPATCHER", "DEAD_DISPATCHER",
           "MAIN_DISPATCHER", "set_ev_cls", "hub", "ofproto_v1_3", "ofproto_v1_3_parser"]
