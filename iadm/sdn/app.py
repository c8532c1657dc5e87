"""The OpenFlow app: a thin event layer between the framework and GatewayController.

Started by `iadm controller` (the launcher, which loads the TOML config and
sets CONFIG) or, as Ryu users start apps, by the framework's manager itself:
`ryu-manager iadm/sdn/app.py` or `ryu-manager iadm.sdn.app`. Then the app
finds its configuration (`find_config`): IADM_CONFIG, else the `config`
option of an `[iadm]` section in the manager's `--config-file`, else
/etc/iadm/controller.toml; with none, the built-in defaults, said in one log
line. The OpenFlow listener is the manager's own (`--ofp-listen-host`,
`--ofp-tcp-listen-port`) under a manager.

Connect sequence per switch: features -> port description (to resolve the
monitor port by name) -> meter features (to know whether packet-ins can be
metered) -> GatewayController.switch_connected.
"""
from __future__ import annotations

import logging
import os
import secrets

from iadm.config import _FLEET_SCHEMA, _SCHEMA, ConfigError, ControllerConfig, _fleet_environment, _load, read_toml
from iadm.sdn import ofmsg
from iadm.sdn.api import VerdictServer
from iadm.sdn.blockstore import BlockStore
from iadm.sdn.core import GatewayController
from iadm.sdn.framework import (CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, BaseApp, cfg,
                                hub, ofp_event, ofproto_v1_3, set_ev_cls)
from iadm.sdn.verdicts import Allowlist

# Set by iadm.sdn.launcher before the framework instantiates the app; None under a bare manager.
CONFIG = None

DEFAULT_CONFIG = "/etc/iadm/controller.toml"
TOKEN_FILE = "api-token"   # beside the block store, when no token is configured

cfg.CONF.register_opts([cfg.StrOpt("config", help="iadm's controller configuration (TOML); "
                                                  "IADM_CONFIG in the environment wins")], group="iadm")

log = logging.getLogger("iadm.controller")


def find_config(environ=os.environ, conf=cfg.CONF, default: str = DEFAULT_CONFIG) -> tuple[str | None, str]:
    """(the TOML file to read or None, where it was named), in the order the module docstring gives."""
    if environ.get("IADM_CONFIG"):
        return environ["IADM_CONFIG"], "IADM_CONFIG"
    try:
        named = conf.iadm.config
    except cfg.Error:   # the manager's configuration was not parsed (not under a manager)
        named = None
    if named:
        return named, "[iadm] config in the manager's --config-file"
    if os.path.exists(default):
        return default, "the default location"
    return None, "none"


def _token_from_file(config: ControllerConfig) -> str:
    """The token kept beside the block store, made (random, mode 0600) the first time."""
    path = os.path.join(os.path.dirname(os.path.abspath(config.block_store)), TOKEN_FILE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path) as fh:
            token = fh.read().strip()
        if not token:
            raise ConfigError(f"{path} is empty: delete it (a new token is made) or set api.token") from None
        log.warning("no api.token configured: the verdict API takes the token in %s", path)
        return token
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    log.warning("no api.token configured: made one for the verdict API in %s (mode 0600); give it to the "
                "monitor (verdicts.token, or IADM_API_TOKEN)", path)
    return token


def load_config(environ=os.environ, conf=cfg.CONF, default: str = DEFAULT_CONFIG) -> ControllerConfig:
    """The configuration when a manager (not `iadm controller`) loads the app; ConfigError says what is wrong."""
    path, named_by = find_config(environ, conf, default)
    config = ControllerConfig()
    _load(path, _SCHEMA, config, {"fleet": (_FLEET_SCHEMA, config.fleet)})
    _fleet_environment(config.fleet)
    if path:
        log.info("iadm: configuration %s (named by %s)", path, named_by)
    else:
        log.warning("iadm: no configuration (no IADM_CONFIG, no [iadm] config in the manager's --config-file, "
                    "no %s): built-in defaults, as config/controller.toml documents them: block store %s, "
                    "verdict API on %s:%d, no monitor port (no mirror), empty allowlist",
                    default, config.block_store, config.api_host, config.api_port)
    store_dir = os.path.dirname(os.path.abspath(config.block_store))
    try:
        os.makedirs(store_dir, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{path or 'defaults'}: blocks.store {config.block_store}: cannot create {store_dir} "
                          f"({exc.strerror}); run as root or name a configuration whose blocks.store is "
                          f"writable") from None
    config.api_token = environ.get("IADM_API_TOKEN") or config.api_token or _token_from_file(config)
    if config.log_file:
        handler = logging.FileHandler(config.log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
    if path:
        _check_openflow(read_toml(path).get("openflow", {}), path, conf)
    return config


def _check_openflow(section: dict, path: str, conf) -> None:
    """Under a manager, the OpenFlow listener is the manager's: say so when the TOML asks for another."""
    try:
        host, port = conf.ofp_listen_host, conf.ofp_tcp_listen_port or 6653
    except cfg.Error:
        return
    for key, mine, flag in (("host", host, "--ofp-listen-host"), ("port", port, "--ofp-tcp-listen-port")):
        if key in section and section[key] != mine:
            log.warning("%s: openflow.%s = %r is not used under the manager, which listens where %s says (%r)",
                        path, key, section[key], flag, mine or "all addresses")


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _fleet_link(config: ControllerConfig) -> dict:
    """The core's fleet arguments: its publisher (events and offers to Redis) and the shared-block policy."""
    if not config.fleet.enabled:
        return {}
    from iadm.fleet.events import gateway_name
    from iadm.fleet.publisher import publisher
    gateway = gateway_name(config.gateway_id)
    log.info("fleet: events as %r to %s:%d key %s (spool %s)", gateway, config.fleet.redis_server,
             config.fleet.redis_port, config.fleet.key, config.fleet.spool)
    return {"events": publisher(config.fleet, gateway, offers=True), "gateway_id": gateway,
            "shared_blocks": config.fleet.shared_blocks, "shared_block_seconds": config.fleet.shared_block_seconds}


class GatewayApp(BaseApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        global CONFIG
        if CONFIG is None:   # loaded by the framework's manager, not by `iadm controller`
            try:
                CONFIG = load_config()
            except ConfigError as exc:
                log.error("iadm: %s", exc)
                raise SystemExit(f"iadm: {exc}") from None
        self.datapaths = {}
        self.pending_ports = {}
        self.barriers = {}  # (dpid, xid) -> hub.Event set by the barrier reply
        self.core = GatewayController(
            store=BlockStore(CONFIG.block_store), allowlist=Allowlist(CONFIG.allowlist),
            send=self._send, confirm=self._barrier, monitor_port=CONFIG.monitor_port, packet_in_rate=CONFIG.packet_in_rate,
            default_block_seconds=CONFIG.default_block_seconds, max_hosts=CONFIG.max_hosts,
            alert_only=CONFIG.alert_only, uplink_port=CONFIG.uplink_port, **_fleet_link(CONFIG))
        if CONFIG.fleet.enabled and CONFIG.fleet.shared_blocks != "off":
            from iadm.fleet.publisher import redis_client
            from iadm.sdn.fleetlink import OfferFollower
            self.follower = OfferFollower(redis_client(CONFIG.fleet, timeout=3.0), CONFIG.fleet.key,
                                          self.core.apply_shared)
            hub.spawn(self.follower.run)
            log.info("fleet: following %s on %s:%d, shared blocks: %s for %d s", self.follower.key,
                     CONFIG.fleet.redis_server, CONFIG.fleet.redis_port, CONFIG.fleet.shared_blocks,
                     CONFIG.fleet.shared_block_seconds)
        # One worker per connection, on the framework's hub (green threads under Ryu, threads under os-ken).
        self.api = VerdictServer((CONFIG.api_host, CONFIG.api_port), self.core, CONFIG.api_token, spawn=hub.spawn)
        log.info("verdict API on http://%s:%d/v1/ (at most %d connections, %g s to send a request)",
                 *self.api.server_address[:2], self.api.max_connections, self.api.read_deadline)
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
