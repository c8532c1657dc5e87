"""The one place that decides which OpenFlow framework is imported.

os-ken (the maintained Ryu fork) by default; Ryu 4.34 when IADM_FRAMEWORK=ryu.
Both expose the Ryu API under a different package name, so the app imports
the names from here and runs unchanged on either.
"""
import os

NAME = os.environ.get("IADM_FRAMEWORK", "osken")

if NAME == "osken":
    from os_ken.base import app_manager
    from os_ken.controller import ofp_event
    from os_ken.controller.handler import (CONFIG_DISPATCHER, DEAD_DISPATCHER,
                                           MAIN_DISPATCHER, set_ev_cls)
    from os_ken.lib import hub
    from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser
    BaseApp = app_manager.OSKenApp
elif NAME == "ryu":
    from ryu.base import app_manager
    from ryu.controller import ofp_event
    from ryu.controller.handler import (CONFIG_DISPATCHER, DEAD_DISPATCHER,
                                        MAIN_DISPATCHER, set_ev_cls)
    from ryu.lib import hub
    from ryu.ofproto import ofproto_v1_3, ofproto_v1_3_parser
    BaseApp = app_manager.RyuApp
else:
    raise ImportError(f"IADM_FRAMEWORK={NAME!r}: expected 'osken' or 'ryu'")

__all__ = ["NAME", "BaseApp", "app_manager", "ofp_event", "CONFIG_DISPATCHER", "DEAD_DISPATCHER",
           "MAIN_DISPATCHER", "set_ev_cls", "hub", "ofproto_v1_3", "ofproto_v1_3_parser"]
