"""The rule language: accepted forms, and rejected ones with their exact position."""
import ipaddress

import pytest

from iadm.rules.model import RuleError
from iadm.rules.parser import RuleErrors, Variables, load_rules, parse_rule, parse_rules

REPORT_EXAMPLE = 'alert tcp any any -> any 80(msg:"Possible DoS Attack"; stime > 1526876545; stime <= 1528099368)'


def variables(tmp_path, text="ipvar HOME_NET [10.0.0.0/24,192.168.1.0/24]\nipvar EXTERNAL_NET !$HOME_NET\n"
                             "portvar WEB [80,8080]\n"):
    path = tmp_path / "vars.conf"
    path.write_text(text)
    return Variables.load(str(path))


def test_the_reference_report_example_parses_as_written():
    rule = parse_rule(REPORT_EXAMPLE)
    assert (rule.action, rule.proto, rule.msg, rule.sid) == ("alert", "tcp", "Possible DoS Attack", 0)
    assert rule.dport.contains(80) and not rule.dport.contains(81)
    assert [(p.feature, p.op, p.value) for p in rule.predicates] == [("stime", ">", 1526876545.0),
                                                                      ("stime", "<=", 1528099368.0)]


def test_design_example_with_variables_flags_and_all_options(tmp_path):
    rule = parse_rule('drop  tcp $EXTERNAL_NET any -> $HOME_NET any (msg:"SYN flood"; flags:S; srate > 500; '
                      'classtype:dos; sid:1000001; rev:2; priority:1; reference:url,example.org/x; '
                      'metadata:created 2026, subcategory TCP; '
                      'threshold: type both, track by_dst, count 10, seconds 5;)', variables=variables(tmp_path))
    assert rule.action == "drop" and rule.flags == ("exact", 0x02, 0) and rule.rev == 2 and rule.priority == 1
    assert rule.src.contains("8.8.8.8") and not rule.src.contains("10.0.0.7")
    assert rule.dst.contains("192.168.1.4") and not rule.dst.contains("172.16.0.1")
    assert rule.references == ["url,example.org/x"] and rule.metadata == ["created 2026", "subcategory TCP"]
    assert (rule.threshold.kind, rule.threshold.track, rule.threshold.count, rule.threshold.seconds) == \
        ("both", "by_dst", 10, 5.0)


@pytest.mark.parametrize("ports, inside, outside", [
    ("any", [0, 65535], []), ("80", [80], [81]), ("1:1024", [1, 1024], [0, 1025]), ("1024:", [1024, 65535], [1023]),
    (":1023", [0, 1023], [1024]), ("[80,443,8000:8010]", [80, 443, 8005], [81, 7999]), ("!80", [81], [80]),
    ("![1:1023]", [1024], [22]), ("[1:100,!22]", [21, 23], [22, 101]), ("$WEB", [8080], [443]),
])
def test_port_forms(tmp_path, ports, inside, outside):
    rule = parse_rule(f"alert tcp any any -> any {ports} (sid:1;)", variables=variables(tmp_path))
    assert all(rule.dport.contains(p) for p in inside) and not any(rule.dport.contains(p) for p in outside)


@pytest.mark.parametrize("addr, inside, outside", [
    ("10.0.0.1", ["10.0.0.1"], ["10.0.0.2"]), ("10.0.0.0/24", ["10.0.0.200"], ["10.0.1.1"]),
    ("[10.0.0.0/24, 192.168.0.0/16]", ["192.168.5.5"], ["172.16.0.1"]), ("!10.0.0.0/8", ["11.0.0.1"], ["10.9.9.9"]),
    ("[10.0.0.0/8,!10.0.0.5]", ["10.0.0.6"], ["10.0.0.5"]), ("$HOME_NET", ["10.0.0.9"], ["8.8.8.8"]),
    ("!$HOME_NET", ["8.8.8.8"], ["10.0.0.9"]), ("2001:db8::/32", ["2001:db8::1"], ["2001:db9::1"]),
])
def test_address_forms(tmp_path, addr, inside, outside):
    rule = parse_rule(f"alert ip {addr} any <> any any (sid:1;)", variables=variables(tmp_path))
    assert rule.direction == "<>"
    assert all(rule.src.contains(a) for a in inside) and not any(rule.src.contains(a) for a in outside)


@pytest.mark.parametrize("flags, expected", [
    ("S", ("exact", 2, 0)), ("SA", ("exact", 0x12, 0)), ("SF+", ("all", 3, 0)), ("+SF", ("all", 3, 0)),
    ("RA*", ("any", 0x14, 0)), ("0", ("exact", 0, 0)), ("FPU", ("exact", 41, 0)), ("S,CE", ("exact", 2, 0xC0)),
    ("S,12", ("exact", 2, 0xC0)), ("!A", ("none", 0x10, 0)), ("SEC", ("exact", 0xC2, 0)), ("*FA,C", ("any", 0x11, 0x80))])
def test_flag_forms(flags, expected):
    assert parse_rule(f"alert tcp any any -> any any (flags:{flags}; sid:1;)").flags == expected


BAD = [
    # (rule, the token the error must point at, words of the message)
    ("alrt tcp any any -> any 80 (sid:1;)", "alrt", "expected an action"),
    ("alert tdp any any -> any 80 (sid:1;)", "tdp", "expected a protocol"),
    ("alert tcp any any => any 80 (sid:1;)", "=>", "expected a direction"),
    ("alert tcp any any - any 80 (sid:1;)", "- ", "expected a direction"),
    ("alert tcp 10.0.0.256 any -> any 80 (sid:1;)", "10.0.0.256", "expected an address"),
    ("alert tcp 10.0.0.1/33 any -> any 80 (sid:1;)", "10.0.0.1/33", "expected an address"),
    ("alert tcp 10.0.0.1/8 any -> any 80 (sid:1;)", "10.0.0.1/8", "bad CIDR"),
    ("alert tcp host any -> any 80 (sid:1;)", "host", "expected an address"),
    ("alert tcp !any any -> any 80 (sid:1;)", "!any", "matches nothing"),
    ("alert tcp $NOPE any -> any 80 (sid:1;)", "$NOPE", "unknown address variable"),
    ("alert tcp [10.0.0.1,] any -> any 80 (sid:1;)", "[10.0.0.1,]", "empty element"),
    ("alert tcp [10.0.0.1 any -> any 80 (sid:1;)", "[10.0.0.1 any -> any 80 (sid:1;)", "unbalanced"),
    ("alert tcp [10.0.0.1,bogus] any -> any 80 (sid:1;)", "bogus", "expected an address"),
    ("alert tcp any 70000 -> any 80 (sid:1;)", "70000", "out of range"),
    ("alert tcp any 90:80 -> any 80 (sid:1;)", "90:80", "empty port range"),
    ("alert tcp any http -> any 80 (sid:1;)", "http", "expected a port"),
    ("alert tcp any : -> any 80 (sid:1;)", ":", "expected a port"),
    ("alert tcp any any -> any $NOPORT (sid:1;)", "$NOPORT", "unknown port variable"),
    ("alert tcp any any -> any !any (sid:1;)", "!any", "matches nothing"),
    ("alert tcp any any -> any [80,99999] (sid:1;)", "99999", "out of range"),
    ("alert tcp any any -> any 80 sid:1;", "sid:1;", "expected ( to open"),
    ("alert tcp any any -> any", "", "expected a destination port"),
    ("alert tcp any any -> any 80 (sid:1;", "", "expected ) to close"),
    ('alert tcp any any -> any 80 (msg:"unterminated; sid:1;)', '"unterminated', "unterminated string"),
    ("alert tcp any any -> any 80 (sid:x;)", "x", "sid expects a whole number"),
    ("alert tcp any any -> any 80 (sid:0;)", "0", "sid must be between"),
    ("alert tcp any any -> any 80 (sid:1; rev:-1;)", "-1", "rev expects"),
    ("alert tcp any any -> any 80 (sid:1; priority:300;)", "300", "priority must be between"),
    ("alert tcp any any -> any 80 (sid:1; classtype:nonsense;)", "nonsense", "unknown classtype"),
    ("alert tcp any any -> any 80 (sid:1; bogus:3;)", "bogus", "unknown option"),
    ("alert tcp any any -> any 80 (sid:1; nocase;)", "nocase", "unknown option"),
    ("alert tcp any any -> any 80 (sid:1; msg;)", "msg", "needs a value"),
    ("alert tcp any any -> any 80 (sid:1; srte > 5;)", "srte", "unknown feature"),
    ("alert tcp any any -> any 80 (sid:1; saddr == 5;)", "saddr", "unknown feature"),
    ("alert tcp any any -> any 80 (sid:1; srate >> 5;)", "> 5", "expected a number"),
    ("alert tcp any any -> any 80 (sid:1; srate > five;)", "five", "expected a number"),
    ("alert tcp any any -> any 80 (sid:1; srate 5;)", "5;", "expected an operator"),
    ("alert tcp any any -> any 80 (sid:1; srate > 5 dur < 3;)", "dur", "expected ; or )"),
    ("alert tcp any any -> any 80 (sid:1; sid:2;)", "sid:2", "given twice"),
    ("alert tcp any any -> any 80 (sid:1; flags:SX;)", "SX", "flags expects"),
    ("alert tcp any any -> any 80 (sid:1; flags:0S;)", "0S", "flags expects"),
    ("alert tcp any any -> any 80 (sid:1; flags:+S*;)", "+S*", "flags expects"),
    ("alert tcp any any -> any 80 (sid:1; flags:S,X;)", "S,X", "flags expects"),
    ("alert tcp any any -> any 80 (sid:1; threshold: type limit, track by_src, count 5;)",
     "type limit", "threshold needs exactly"),
    ("alert tcp any any -> any 80 (sid:1; threshold: type often, track by_src, count 5, seconds 1;)",
     "often", "threshold type must be"),
    ("alert tcp any any -> any 80 (sid:1; threshold: type limit, track by_port, count 5, seconds 1;)",
     "by_port", "track must be"),
    ("alert tcp any any -> any 80 (sid:1; detection_filter: track by_src, count 0, seconds 1;)",
     "0", "count must be between"),
    ("alert tcp any any -> any 80 (sid:1; detection_filter: track by_src, count 5, seconds -1;)",
     "-1", "seconds must be a positive"),
    ("alert tcp any any -> any 80 (sid:1; detection_filter: track by_src, count 5, seconds 1; "
     "threshold: type limit, track by_src, count 1, seconds 1;)", "threshold:", "one threshold"),
    ("alert tcp any any -> any 80 (sid:1;) trailing", "trailing", "unexpected text"),
    ("alert tcp any any -> any 80 (sid:1; 5 > srate;)", "5 > srate", "expected an option name"),
]


HEADER_ERRORS = {"expected a port", "out of range", "empty port range", "unknown port variable", "matches nothing",
                 "expected an address", "bad CIDR", "unknown address variable", "empty element", "unbalanced",
                 "expected a direction", "expected a protocol", "expected ( to open"}


@pytest.mark.parametrize("rule, token, words", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_rules_name_line_column_and_token(tmp_path, rule, token, words):
    with pytest.raises(RuleError) as err:
        parse_rule(rule, "site.rules", 7, variables(tmp_path))
    e = err.value
    assert (e.path, e.line) == ("site.rules", 7)
    assert words in e.message, e.message
    if token:
        # the column points at the first place the offending token stands: in the options when it is
        # there, else in the header after the action
        opts = rule.find("(")
        start = opts if opts >= 0 and token in rule[opts:] and words not in HEADER_ERRORS else 5
        expected = rule.index(token, 0 if rule.startswith(token) else start) + 1
        assert e.col == expected, f"{e} (expected column {expected})"
        assert e.token.startswith(token.split()[0][:10]) or token.startswith(e.token[:10]), e.token
    assert str(e).startswith(f"site.rules:7:{e.col}: ")


def test_there_are_at_least_forty_bad_rule_cases():
    assert len(BAD) >= 40


def test_a_file_reports_every_error_and_duplicate_sids():
    text = "\n".join(["# comment", "alert tcp any any -> any 80 (sid:5;)", "alrt tcp any any -> any 80 (sid:6;)",
                      "", "alert tcp any any -> any 80 (sid:5;)", "alert tcp any any -> any 99999 (sid:7;)"])
    with pytest.raises(RuleErrors) as err:
        parse_rules(text, "f.rules")
    found = [(e.line, e.message.split(":")[0]) for e in err.value.errors]
    assert [line for line, _ in found] == [3, 5, 6]
    assert "duplicate sid 5 (first at line 2)" in str(err.value)


def test_duplicate_sids_across_files_and_unreadable_files(tmp_path):
    (tmp_path / "a.rules").write_text("alert tcp any any -> any 80 (sid:9;)\n")
    (tmp_path / "b.rules").write_text("alert udp any any -> any 53 (sid:9;)\n")
    (tmp_path / "c.rules").write_bytes(b"alert \xff\xfe")
    with pytest.raises(RuleErrors) as err:
        load_rules([str(tmp_path / n) for n in ("a.rules", "b.rules", "c.rules", "missing.rules")])
    text = str(err.value)
    assert "b.rules:1:1: duplicate sid 9 (first in" in text
    assert "c.rules" in text and "not UTF-8" in text and "missing.rules" in text and "cannot read" in text


def test_variables_file_errors(tmp_path):
    path = tmp_path / "v.conf"
    path.write_text("ipvar HOME_NET 10.0.0.0/24\nportvar WEB [80,x]\nvariable A 1\nipvar B $MISSING\n")
    with pytest.raises(RuleErrors) as err:
        Variables.load(str(path))
    lines = [(e.line, e.col) for e in err.value.errors]
    assert lines == [(2, 17), (3, 1), (4, 9)]


def test_shipped_rules_and_variables_load():
    rules = load_rules(["rules/iot.rules"], "rules/variables.conf")
    assert len(rules) >= 15
    assert all(r.sid and r.rev and r.msg for r in rules)
    assert all(r.classtype for r in rules if r.action != "pass")
    net = ipaddress.ip_network("10.0.0.0/8")
    assert any(net in r.src.include for r in rules)


def test_variables_conf_beside_the_rules_is_the_default(tmp_path):
    (tmp_path / "site.rules").write_text('alert tcp any any -> $HOME_NET 22 (msg:"ssh"; classtype:dos; sid:7;)\n')
    with pytest.raises(RuleErrors, match="HOME_NET"):
        load_rules([str(tmp_path / "site.rules")])
    (tmp_path / "variables.conf").write_text("ipvar HOME_NET [10.0.0.0/8]\n")
    rule, = load_rules([str(tmp_path / "site.rules")])
    assert rule.dst.contains("10.1.2.3") and not rule.dst.contains("192.168.0.1")
