"""Pipeline operations (iadm.sdn.pipeline) to OpenFlow 1.3 messages.

Pure: takes the datapath whose ofproto/ofproto_parser it uses and returns
messages, so it is tested by serialising them without a switch.
"""
from __future__ import annotations

from iadm.sdn import pipeline


def _port(ofp, port):
    if port == pipeline.FLOOD:
        return ofp.OFPP_FLOOD
    if port == pipeline.CONTROLLER:
        return ofp.OFPP_CONTROLLER
    return int(port)


def _flow_mod(dp, entry: pipeline.FlowEntry):
    ofp, parser = dp.ofproto, dp.ofproto_parser
    instructions = []
    if entry.meter is not None:
        instructions.append(parser.OFPInstructionMeter(entry.meter, ofp.OFPIT_METER))
    if entry.actions:
        actions = []
        for kind, port in entry.actions:
            assert kind == "output", kind
            max_len = pipeline.PACKET_IN_BYTES if port == pipeline.CONTROLLER else ofp.OFPCML_NO_BUFFER
            actions.append(parser.OFPActionOutput(_port(ofp, port), max_len))
        instructions.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions))
    if entry.goto is not None:
        instructions.append(parser.OFPInstructionGotoTable(entry.goto))
    return parser.OFPFlowMod(
        dp, cookie=entry.cookie, table_id=entry.table, command=ofp.OFPFC_ADD,
        idle_timeout=entry.idle_timeout, hard_timeout=entry.hard_timeout, priority=entry.priority,
        buffer_id=ofp.OFP_NO_BUFFER, flags=ofp.OFPFF_SEND_FLOW_REM if entry.notify_removed else 0,
        match=parser.OFPMatch(**entry.match), instructions=instructions)


def _flow_delete(dp, delete: pipeline.FlowDelete):
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPFlowMod(
        dp, cookie=delete.cookie, cookie_mask=delete.cookie_mask,
        table_id=ofp.OFPTT_ALL if delete.table is None else delete.table,
        command=ofp.OFPFC_DELETE, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
        match=parser.OFPMatch(**delete.match))


def _meter(dp, meter: pipeline.MeterEntry):
    ofp, parser = dp.ofproto, dp.ofproto_parser
    # Delete first: ADD of an existing meter fails after a controller restart.
    return [
        parser.OFPMeterMod(dp, command=ofp.OFPMC_DELETE, meter_id=meter.meter_id),
        parser.OFPMeterMod(dp, command=ofp.OFPMC_ADD,
                           flags=(ofp.OFPMF_KBPS if meter.kbps else ofp.OFPMF_PKTPS) | ofp.OFPMF_BURST,
                           meter_id=meter.meter_id,
                           bands=[parser.OFPMeterBandDrop(rate=meter.rate_pps, burst_size=meter.burst)]),
    ]


def to_messages(dp, ops) -> list:
    """Messages for `ops`, in order, closed by a barrier."""
    msgs = []
    for op in ops:
        if isinstance(op, pipeline.FlowEntry):
            msgs.append(_flow_mod(dp, op))
        elif isinstance(op, pipeline.FlowDelete):
            msgs.append(_flow_delete(dp, op))
        elif isinstance(op, pipeline.MeterEntry):
            msgs.extend(_meter(dp, op))
        elif isinstance(op, pipeline.MeterDelete):
            msgs.append(dp.ofproto_parser.OFPMeterMod(dp, command=dp.ofproto.OFPMC_DELETE, meter_id=op.meter_id))
        else:
            raise TypeError(f"not a pipeline operation: {op!r}")
    msgs.append(dp.ofproto_parser.OFPBarrierRequest(dp))
    return msgs
