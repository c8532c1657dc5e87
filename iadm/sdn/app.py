"""The OpenFlow app: a thin event layer between the framework and GatewayController.

Connect sequence per switch: features -> port description (to resolve the
monitor port by name) -> meter features (to know whether packet-ins can be
metered) -> GatewayController.switch_connected.
"""
from __future__ import annotations

import logging

from iadm.sdn import ofmsg
from iadm.sdn.api import VerdictServer
from iadm.sdn.blockstore import BlockStore
from iadm.sdn.core import GatewayController
from iadm.sdn.framework import (CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, BaseApp,
                                hub, ofp_event, ofproto_v1_3, set_ev_cls)
from iadm.sdn.verdicts import Allowlist

# Set by iadm.sdn.launcher before the framework instantiates the app.
CONFIG = None

log = logging.getLogger("iadm.controller")


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


class GatewayApp(BaseApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if CONFIG is None:
            raise RuntimeError("start the controller with `iadm controller`, which loads the config")
        self.datapaths = {}
        self.pending_ports = {}
        self.barriers = {}  # (dpid, xid) -> hub.Event set by the barrier reply
        self.core = GatewayController(
            store=BlockStore(CONFIG.block_store), allowlist=Allowlist(CONFIG.allowlist),
            send=self._send, confirm=self._barrier, monitor_port=CONFIG.monitor_port, packet_in_rate=CONFIG.packet_in_rate,
            default_block_seconds=CONFIG.default_block_seconds, max_hosts=CONFIG.max_hosts,
            alert_only=CONFIG.alert_only)
        self.api = VerdictServer((CONFIG.api_host, CONFIG.api_port), self.core, CONFIG.api_token)
        log.info("verdict API on http://%s:%d/v1/", *self.api.server_address[:2])
        hub.spawn(self.api.serve_forever)

    def _send(self, dpid: int, ops) -> None:
        dp = self.datapaths.get(dpid)
        if dp is None:
            return  # gone; it gets everything again when it reconnects
        for msg in ofmsg.to_messages(dp, ops):
            dp.send_msg(msg)

    def _barrier(self, dpid: int, timeout: float = 2.0) -> bool:
        """Wait until the switch has processed every message sent before; False on timeout."""
        dp = self.datapaths.get(dpid)
        if dp is None:
            return False
        request = dp.ofproto_parser.OFPBarrierRequest(dp)
        dp.set_xid(request)
        done = self.barriers[(dpid, request.xid)] = hub.Event()
        try:
            dp.send_msg(request)
            if done.wait(timeout):
                return True
            log.warning("switch %016x did not confirm within %.1fs", dpid, timeout)
            return False
        finally:
            self.barriers.pop((dpid, request.xid), None)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def on_barrier(self, ev):
        done = self.barriers.get((ev.msg.datapath.id, ev.msg.xid))
        if done is not None:
            done.set()

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def on_features(self, ev):
        dp = ev.msg.datapath
        self.datapaths[dp.id] = dp
        dp.send_msg(dp.ofproto_parser.OFPPortDescStatsRequest(dp, 0))

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    def on_port_desc(self, ev):
        dp = ev.msg.datapath
        names = self.pending_ports.setdefault(dp.id, {})
        for port in ev.msg.body:
            name = port.name.decode(errors="replace") if isinstance(port.name, bytes) else port.name
            names[name] = port.port_no
        if not ev.msg.flags & dp.ofproto.OFPMPF_REPLY_MORE:
            dp.send_msg(dp.ofproto_parser.OFPMeterFeaturesStatsRequest(dp, 0))

    @set_ev_cls(ofp_event.EventOFPMeterFeaturesStatsReply, MAIN_DISPATCHER)
    def on_meter_features(self, ev):
        dp = ev.msg.datapath
        max_meter = max((f.max_meter for f in ev.msg.body), default=0)
        self.core.switch_connected(dp.id, self.pending_ports.pop(dp.id, {}), meters=max_meter > 0)

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def on_dead(self, ev):
        dp = ev.datapath
        if dp.id is not None and self.datapaths.get(dp.id) is dp:
            del self.datapaths[dp.id]
            self.core.switch_disconnected(dp.id)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def on_packet_in(self, ev):
        msg = ev.msg
        if len(msg.data) < 14:
            return
        self.core.packet_in(msg.datapath.id, msg.match["in_port"], _mac(msg.data[6:12]), _mac(msg.data[0:6]))

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    def on_flow_removed(self, ev):
        msg = ev.msg
        ofp = msg.datapath.ofproto
        reasons = {ofp.OFPRR_IDLE_TIMEOUT: "idle timeout", ofp.OFPRR_HARD_TIMEOUT: "hard timeout",
                   ofp.OFPRR_DELETE: "deleted"}
        self.core.flow_removed(msg.datapath.id, msg.cookie, reasons.get(msg.reason, str(msg.reason)),
                               msg.packet_count)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, MAIN_DISPATCHER)
    def on_error(self, ev):
        msg = ev.msg
        log.error("switch %016x refused a message: type %d code %d, data %s",
                  msg.datapath.id, msg.type, msg.code, bytes(msg.data[:64]).hex())
