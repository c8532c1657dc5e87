"""Scenario files: the attack kinds of issue 15 (password guessing, ARP spoofing, DNS tunnel, slow HTTP,
ICMP flood), their defaults, their checks, and the generator and listener each one gets."""
from pathlib import Path

import pytest

from iadm.config import ConfigError
from iadm.scenario.runner import attack_command, listener_command
from iadm.scenario.spec import KINDS, SERVICE_PORTS, load_scenario

HEAD = """
name = "t"
duration = 30
devices = 3
attackers = 4
"""


def load(tmp_path: Path, *attacks: str):
    path = tmp_path / "s.toml"
    path.write_text(HEAD + "".join(f"\n[[attack]]\n{a}\n" for a in attacks))
    return load_scenario(str(path))


def one(tmp_path, body: str):
    return load(tmp_path, body).attacks[0]


def test_every_kind_names_a_technique_but_keylogging():
    assert {k for k, v in KINDS.items() if not v[4]} == {"keylogging"}
    assert KINDS["ssh-guess"][4] == KINDS["telnet-guess"][4] == "brute_force"


@pytest.mark.parametrize("kind, target, category, subcategory, technique, rate", [
    ("ssh-guess", "d1", "Theft", "BruteForce", "brute_force", 4),
    ("telnet-guess", "d1", "Theft", "BruteForce", "brute_force", 4),
    ("dns-tunnel", "a2", "Theft", "Tunnel", "dns_tunnel", 10),
    ("slow-http", "h2", "DoS", "HTTP", "slow_http", 50),
    ("icmp-flood", "h2", "DoS", "ICMP", "icmp_flood", 2000),
])
def test_new_kinds_defaults(tmp_path, kind, target, category, subcategory, technique, rate):
    a = one(tmp_path, f'kind = "{kind}"\nhosts = ["a1"]\ntarget = "{target}"\nstart = 2\nduration = 5')
    assert (a.category, a.subcategory, a.technique, a.rate) == (category, subcategory, technique, rate)
    assert a.port == 0 and a.victim == ""


def test_arp_spoof_needs_a_victim_other_than_attacker_and_target(tmp_path):
    body = 'kind = "arp-spoof"\nhosts = ["a1"]\ntarget = "h2"\nstart = 2\nduration = 4\n'
    a = one(tmp_path, body + 'victim = "d3"')
    assert (a.category, a.subcategory, a.technique, a.victim, a.rate) == ("Theft", "ARP_Spoofing", "arp_spoofing",
                                                                          "d3", 2)
    with pytest.raises(ConfigError, match="victim is required"):
        one(tmp_path, body)
    for bad in ("h2", "a1", "d9"):
        with pytest.raises(ConfigError, match="victim"):
            one(tmp_path, body + f'victim = "{bad}"')
    with pytest.raises(ConfigError, match="only for arp-spoof"):
        one(tmp_path, 'kind = "icmp-flood"\nhosts = ["a1"]\ntarget = "h2"\nstart = 2\nduration = 4\nvictim = "d3"')


def test_dns_tunnel_qtype_and_resolver(tmp_path):
    body = 'kind = "dns-tunnel"\nhosts = ["d2"]\nstart = 2\nduration = 4\n'
    assert one(tmp_path, body + 'target = "a1"').qtype == "NULL"
    assert one(tmp_path, body + 'target = "a1"\nqtype = "TXT"').qtype == "TXT"
    with pytest.raises(ConfigError, match="qtype"):
        one(tmp_path, body + 'target = "a1"\nqtype = "A"')
    with pytest.raises(ConfigError, match="answers DNS for the background"):
        one(tmp_path, body + 'target = "h2"')
    with pytest.raises(ConfigError, match="other than its attacker"):
        one(tmp_path, body + 'target = "d2"')


def test_slow_http_aims_at_host2_web_server(tmp_path):
    body = 'kind = "slow-http"\nhosts = ["a1"]\nstart = 2\nduration = 4\n'
    assert one(tmp_path, body + 'target = "h2"\nconnections = 80').connections == 80
    for bad in ('target = "d1"', 'target = "h2"\nport = 8080'):
        with pytest.raises(ConfigError, match="web server"):
            one(tmp_path, body + bad)
    for bad in (0, 5000, "many"):
        with pytest.raises(ConfigError, match="connections"):
            one(tmp_path, body + f'target = "h2"\nconnections = {bad!r}'.replace("'", '"'))


def test_technique_may_be_overridden_and_unknown_keys_refused(tmp_path):
    body = 'kind = "ssh-guess"\nhosts = ["a1"]\ntarget = "d1"\nstart = 2\nduration = 4\n'
    assert one(tmp_path, body + 'technique = "credential_stuffing"').technique == "credential_stuffing"
    with pytest.raises(ConfigError, match="unknown key"):
        one(tmp_path, body + 'password_list = "rockyou"')


def test_generators_and_listeners(tmp_path):
    sc = load(tmp_path,
              'kind = "ssh-guess"\nhosts = ["a1"]\ntarget = "d1"\nstart = 1\nduration = 6\nrate = 4',
              'kind = "telnet-guess"\nhosts = ["a2"]\ntarget = "d1"\nstart = 1\nduration = 5\nport = 2323',
              'kind = "arp-spoof"\nhosts = ["a3"]\ntarget = "h2"\nvictim = "d3"\nstart = 1\nduration = 4',
              'kind = "dns-tunnel"\nhosts = ["d2"]\ntarget = "a4"\nstart = 1\nduration = 5\nqtype = "TXT"',
              'kind = "slow-http"\nhosts = ["a1"]\ntarget = "h2"\nstart = 10\nduration = 5',
              'kind = "icmp-flood"\nhosts = ["a2"]\ntarget = "h2"\nstart = 10\nduration = 3\nrate = 1500')
    ssh, telnet, arp, dns, slow, icmp = sc.attacks
    argv = [str(x) for x in attack_command(ssh, "a1")]
    assert argv[1].endswith("guess.py") and argv[2] == "guess"
    assert argv[argv.index("--dst") + 1] == "10.0.0.11" and argv[argv.index("--port") + 1] == "22"
    assert argv[argv.index("--service") + 1] == "ssh" and float(argv[argv.index("--rate") + 1]) == 4
    assert listener_command(ssh, 60)[0] == 22 and "listen" in listener_command(ssh, 60)[1]
    assert listener_command(telnet, 60)[0] == 2323
    argv = [str(x) for x in attack_command(arp, "a3")]
    assert argv[1].endswith("arp_spoof.py") and argv[argv.index("--iface") + 1] == "a3-eth0"
    assert argv[argv.index("--claim") + 1] == "10.0.0.2" and argv[argv.index("--victim") + 1] == "10.0.0.13"
    assert argv[argv.index("--victim-mac") + 1] == "00:00:00:00:00:0d"
    assert listener_command(arp, 60) is None
    argv = [str(x) for x in attack_command(dns, "d2")]
    assert argv[2] == "client" and argv[argv.index("--qtype") + 1] == "TXT"
    assert listener_command(dns, 60)[0] == 53 and listener_command(dns, 60)[1][2] == "serve"
    argv = [str(x) for x in attack_command(slow, "a1")]
    assert argv[1].endswith("slow_http.py") and argv[argv.index("--connections") + 1] == "100"
    assert listener_command(slow, 60) is None        # Host2's own web server answers
    argv = [str(x) for x in attack_command(icmp, "a2")]
    assert argv[1].endswith("flood.py") and "--icmp" in argv and float(argv[argv.index("--rate") + 1]) == 1500
    assert set(SERVICE_PORTS) == {"ssh-guess", "telnet-guess", "dns-tunnel", "slow-http"}


def test_demo_scenario_has_the_new_kinds_after_the_first_four():
    sc = load_scenario(str(Path(__file__).resolve().parents[2] / "scenarios" / "demo.toml"))
    kinds = [a.kind for a in sc.attacks]
    assert kinds[:4] == ["syn-flood", "udp-flood", "service-scan", "exfiltration"]
    assert {"arp-spoof", "dns-tunnel", "slow-http", "icmp-flood"} <= set(kinds[4:])
    assert {"ssh-guess", "telnet-guess"} & set(kinds[4:])
    lan = [a for a in sc.attacks if not a.uplink]
    assert len({h for a in lan for h in a.hosts}) == len(lan)   # each LAN attack from its own host
    uplink = [a for a in sc.attacks if a.uplink]                 # the Internet side's floods, from r1
    assert sc.uplink and [a.kind for a in uplink] == ["reflection", "syn-flood"] and "o1" in sc.background_devices
    assert {a.target for a in uplink} == {"h2"} and all(a.src_net for a in uplink)
    assert sc.duration <= 70


def test_a_shaped_link_names_a_lan_host_and_a_rate(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(HEAD.replace('name = "t"', 'name = "t"\nshaped_links = {h2 = 8000, d1 = 512}'))
    assert load_scenario(str(path)).shaped_links == {"h2": 8000, "d1": 512}
    for bad in ("{h9 = 8000}", "{h2 = 10}", '{h2 = "8mbit"}', "{h2 = true}"):
        path.write_text(HEAD.replace('name = "t"', f'name = "t"\nshaped_links = {bad}'))
        with pytest.raises(ConfigError, match="shaped_links"):
            load_scenario(str(path))
