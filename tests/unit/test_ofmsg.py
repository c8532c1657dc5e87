"""Pipeline operations become well-formed OpenFlow 1.3 messages (serialised and parsed back)."""
from os_ken.ofproto import ofproto_parser, ofproto_v1_3, ofproto_v1_3_parser

from iadm.sdn import ofmsg, pipeline


class Datapath:
    ofproto = ofproto_v1_3
    ofproto_parser = ofproto_v1_3_parser
    id = 1


def round_trip(msg):
    msg.set_xid(1)
    msg.serialize()
    return ofproto_parser.msg(Datapath(), ofproto_v1_3.OFP_VERSION, msg.msg_type, msg.msg_len, 1, bytes(msg.buf))


def test_base_pipeline_serialises_in_order_with_a_barrier():
    msgs = ofmsg.to_messages(Datapath(), pipeline.base_pipeline(500))
    kinds = [type(m).__name__ for m in msgs]
    assert kinds == ["OFPFlowMod", "OFPMeterMod", "OFPMeterMod", "OFPFlowMod", "OFPFlowMod", "OFPFlowMod",
                     "OFPBarrierRequest"]
    assert msgs[0].command == ofproto_v1_3.OFPFC_DELETE and msgs[0].table_id == ofproto_v1_3.OFPTT_ALL
    assert [msgs[1].command, msgs[2].command] == [ofproto_v1_3.OFPMC_DELETE, ofproto_v1_3.OFPMC_ADD]
    assert msgs[2].bands[0].rate == 500
    for m in msgs:
        m.set_xid(1)
        m.serialize()


def test_learn_miss_meters_sends_headers_to_controller_and_continues():
    miss = [e for e in pipeline.base_pipeline(500) if isinstance(e, pipeline.FlowEntry) and e.table == 1][0]
    [msg] = ofmsg.to_messages(Datapath(), [miss])[:1]
    parsed = round_trip(msg)
    meter, apply, goto = parsed.instructions
    assert meter.meter_id == pipeline.PACKET_IN_METER_ID
    assert apply.actions[0].port == ofproto_v1_3.OFPP_CONTROLLER
    assert apply.actions[0].max_len == pipeline.PACKET_IN_BYTES
    assert goto.table_id == pipeline.TABLE_FORWARD


def test_block_entry_drops_with_hard_timeout_and_flow_removed_flag():
    entry = pipeline.block_entry(7, pipeline.block_match(src_ip="10.0.0.1"), 45)
    parsed = round_trip(ofmsg.to_messages(Datapath(), [entry])[0])
    assert parsed.instructions == []  # no instruction: drop
    assert parsed.hard_timeout == 45 and parsed.priority == pipeline.PRIO_BLOCK
    assert parsed.flags & ofproto_v1_3.OFPFF_SEND_FLOW_REM
    assert parsed.cookie == pipeline.block_cookie(7)
    assert dict(parsed.match.items()) == {"eth_type": 0x0800, "ipv4_src": "10.0.0.1"}


def test_unblock_deletes_by_exact_cookie_in_table_0():
    parsed = round_trip(ofmsg.to_messages(Datapath(), [pipeline.unblock(7)])[0])
    assert parsed.command == ofproto_v1_3.OFPFC_DELETE and parsed.table_id == 0
    assert parsed.cookie == pipeline.block_cookie(7) and parsed.cookie_mask == 2**64 - 1


def test_learned_destination_outputs_port_then_monitor():
    ops = pipeline.learn_entries(2, "00:00:00:00:00:02", monitor_port=3, previous_port=1)
    parsed = [round_trip(m) for m in ofmsg.to_messages(Datapath(), ops)[:-1]]
    assert parsed[0].command == ofproto_v1_3.OFPFC_DELETE
    assert dict(parsed[1].match.items()) == {"in_port": 2, "eth_src": "00:00:00:00:00:02"}
    assert [a.port for a in parsed[2].instructions[0].actions] == [2, 3]
