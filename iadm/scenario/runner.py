"""Runs a scenario on the reference topology: background, attacks in their windows, capture, detection.

Everything runs for real: the controller as its own process, OVS and Mininet
hosts, generators inside the hosts (scripts/traffic/*, hping3, nmap), tcpdump
on the monitor port (the dataset's pcap) and on each attack target (what
reached the victim), and, with `detect`, `iadm monitor` on the monitor host
sending verdicts to the controller over the management link.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from iadm.scenario.label import Window
from iadm.scenario.spec import QUEUE_MS, SERVICE_PORTS, Attack, Scenario, host_ip, host_mac
from iadm.testbed import (MGMT_CONTROLLER, MGMT_MONITOR, ROOT, ControllerProcess, gateway_network, load_topology,
                          management_link, switch_counters)

TRAFFIC = ROOT / "scripts" / "traffic"
TOKEN = "iadm-scenario-token"
STATUS_INTERVAL = 0.1   # the live monitor's; offline records of the run use the same
OPERATOR_PORT = 8282    # the monitor's operator API, on its end of the management link


@dataclass
class RunResult:
    outdir: Path
    t0: float
    windows: list
    devices: dict = field(default_factory=dict)       # host -> the device role's counters
    generators: dict = field(default_factory=dict)    # window name -> output lines
    blocks: list = field(default_factory=list)
    pcap: Path | None = None
    victim_pcaps: dict = field(default_factory=dict)  # target host -> pcap of what came from attackers
    alert_log: Path | None = None
    detect: bool = False
    switch: dict = field(default_factory=dict)        # block id -> its entry's (and meter's) counters, at the end
    uplink_port: str = ""                             # the router r1's switch port ("" without an uplink)
    queued: dict = field(default_factory=dict)        # host -> seconds its shaped link's queue may hold

    def save(self) -> None:
        doc = {"t0": self.t0, "windows": [w.as_json() for w in self.windows], "devices": self.devices,
               "generators": self.generators, "blocks": self.blocks, "detect": self.detect,
               "switch": self.switch, "uplink_port": self.uplink_port, "queued": self.queued,
               "pcap": str(self.pcap), "victim_pcaps": {k: str(v) for k, v in self.victim_pcaps.items()},
               "alert_log": str(self.alert_log) if self.alert_log else None}
        (self.outdir / "run.json").write_text(json.dumps(doc, indent=2))

    @classmethod
    def load(cls, outdir: Path) -> "RunResult":
        doc = json.loads((Path(outdir) / "run.json").read_text())
        return cls(outdir=Path(outdir), t0=doc["t0"], windows=[Window(**w) for w in doc["windows"]],
                   devices=doc["devices"], generators=doc["generators"], blocks=doc["blocks"],
                   pcap=Path(doc["pcap"]), victim_pcaps={k: Path(v) for k, v in doc["victim_pcaps"].items()},
                   alert_log=Path(doc["alert_log"]) if doc["alert_log"] else None, detect=doc["detect"],
                   switch={int(k): v for k, v in doc.get("switch", {}).items()},
                   uplink_port=doc.get("uplink_port", ""), queued=doc.get("queued", {}))


def _py(script: str, *args) -> list[str]:
    return [sys.executable, str(TRAFFIC / script), *map(str, args)]


def attack_command(attack: Attack, host: str) -> list[str]:
    """The generator of one attacking host; a DDoS shares the rate among its hosts."""
    target, rate, seconds = host_ip(attack.target), attack.rate / len(attack.hosts), attack.duration
    kind = attack.kind
    if kind == "reflection":   # from r1: answers of many reflectors, from their service port to random ports
        return _py("flood.py", "--iface", f"{host}-eth0", "--dst", target, "--dst-mac", host_mac(attack.target),
                   "--udp", "--src-net", attack.src_net, "--sources", attack.sources, "--sport", attack.port or 161,
                   "--dport", 0, "--payload", attack.payload, "--rate", int(rate), "--duration", seconds)
    if kind in ("syn-flood", "udp-flood") and attack.uplink:   # forged outside sources, through r1
        return _py("flood.py", "--iface", f"{host}-eth0", "--dst", target, "--dst-mac", host_mac(attack.target),
                   "--dport", attack.port or (80 if kind == "syn-flood" else 9), "--rate", int(rate),
                   "--duration", seconds, "--src-net", attack.src_net) + (["--udp"] if kind == "udp-flood" else [])
    if kind in ("syn-flood", "udp-flood"):
        port = attack.port or (80 if kind == "syn-flood" else 9)   # UDP 9 (discard) is closed: no answers
        return _py("flood.py", "--iface", f"{host}-eth0", "--dst", target, "--dst-mac", host_mac(attack.target),
                   "--dport", port, "--rate", int(rate), "--duration", seconds) \
            + (["--udp"] if kind == "udp-flood" else []) + (["--spoof"] if attack.spoof else []) \
            + (["--spoof-as", attack.spoof_as] if attack.spoof_as else [])
    if kind == "hping3-syn":   # bounded by count and interval
        return ["hping3", "-q", "-S", "-p", str(attack.port or 80), "-i", f"u{max(1, int(1e6 / rate))}",
                "-c", str(int(rate * seconds)), *(["--rand-source"] if attack.spoof else []), target]
    if kind == "http-flood":
        return _py("http_flood.py", "--dst", target, "--port", attack.port or 80, "--rate", rate,
                   "--duration", seconds)
    if kind == "service-scan":
        return ["nmap", "-sS", "-Pn", "-n", "-p", "1-1024", "--max-rate", str(int(rate)),
                "--host-timeout", f"{int(seconds)}s", target]
    if kind == "os-fingerprint":
        return ["nmap", "-O", "-Pn", "-n", "--max-rate", str(int(rate)), "--host-timeout", f"{int(seconds)}s",
                target]
    if kind == "exfiltration":
        return _py("exfil.py", "upload", "--dst", target, "--port", attack.port or 8443, "--bytes", attack.bytes,
                   "--rate", rate, "--duration", seconds)
    if kind == "keylogging":
        return _py("exfil.py", "trickle", "--dst", target, "--port", attack.port or 7777, "--rate", rate,
                   "--duration", seconds)
    if kind in ("ssh-guess", "telnet-guess"):
        return _py("guess.py", "guess", "--dst", target, "--port", service_port(attack), "--service",
                   kind.split("-")[0], "--rate", rate, "--duration", seconds)
    if kind == "arp-spoof":
        return _py("arp_spoof.py", "--iface", f"{host}-eth0", "--claim", target, "--owner-mac",
                   host_mac(attack.target), "--victim", host_ip(attack.victim), "--victim-mac",
                   host_mac(attack.victim), "--rate", rate, "--duration", seconds)
    if kind == "dns-tunnel":
        return _py("dns_tunnel.py", "client", "--dst", target, "--port", service_port(attack), "--qtype",
                   attack.qtype, "--rate", rate, "--duration", seconds)
    if kind == "slow-http":
        return _py("slow_http.py", "--dst", target, "--port", service_port(attack), "--connections",
                   attack.connections, "--rate", rate, "--duration", seconds)
    if kind == "icmp-flood":
        return _py("flood.py", "--iface", f"{host}-eth0", "--dst", target, "--dst-mac", host_mac(attack.target),
                   "--icmp", "--rate", int(rate), "--duration", seconds)
    raise ValueError(f"no generator for {kind!r}")


def service_port(attack: Attack) -> int:
    return attack.port or SERVICE_PORTS[attack.kind]


def _sink_port(attack: Attack) -> int | None:
    return {"exfiltration": attack.port or 8443, "keylogging": attack.port or 7777}.get(attack.kind)


def listener_command(attack: Attack, serve_seconds: float) -> tuple[int, list[str]] | None:
    """(port, argv) of the listener an attack needs on its target; None when the target's own
    services answer it (slow-http: Host2's web server, started with the background)."""
    bind, port = host_ip(attack.target), _sink_port(attack)
    if port:
        return port, _py("exfil.py", "sink", "--bind", bind, "--port", port, "--duration", serve_seconds)
    if attack.kind in ("ssh-guess", "telnet-guess"):
        port = service_port(attack)
        return port, _py("guess.py", "listen", "--bind", bind, "--port", port, "--service",
                         attack.kind.split("-")[0], "--duration", serve_seconds)
    if attack.kind == "dns-tunnel":
        port = service_port(attack)
        return port, _py("dns_tunnel.py", "serve", "--bind", bind, "--port", port, "--duration", serve_seconds)
    return None


def _wait_for(path: Path, text: str, proc, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready within {timeout}s; see {path}")


def monitor_config(outdir: Path, api_url: str | None, uplink: bool = False, shaped_rate_pps: int = 0) -> Path:
    path = outdir / "monitor.toml"
    verdicts = f'url = "{api_url}"\ntoken = "{TOKEN}"\n' if api_url else ""
    if shaped_rate_pps:
        verdicts += f"shaped_rate_pps = {shaped_rate_pps}\n"
    # The reference topology has no router unless the scenario asks for the uplink; with it, r1's
    # MAC is a router's from the start (the monitor would also learn it from Host2's answers).
    router = f'uplink_macs = ["{host_mac("r1")}"]\n' if uplink else 'no_uplink = true\n'

    path.write_text(
        f'[rules]\nfiles = ["{ROOT / "rules" / "iot.rules"}"]\nvariables = "{ROOT / "topology" / "variables.conf"}"\n'
        f'[model]\npath = "{ROOT / "models" / "default"}"\n'
        f'[flows]\nstatus_interval = {STATUS_INTERVAL}\n'
        f'[verdicts]\n{verdicts}block_seconds = 300\n'
        f'{router}'
        f'[alerts]\nlog = "{outdir / "alerts.json"}"\n'
        f'[zscore]\ndb = "{outdir / "zscore.sqlite"}"\n'
        f'[api]\nhost = "{MGMT_MONITOR}"\nport = {OPERATOR_PORT}\ntoken = "{TOKEN}"\n'
        f'[console]\nstore = "{outdir / "alerts.sqlite"}"\n')
    return path


class _Procs:
    """Processes started in hosts, with their output files; stopped together."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.procs = []

    def start(self, host, argv: list[str], name: str):
        out = open(self.logdir / f"{name}.log", "wb")
        proc = host.popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=str(ROOT))
        self.procs.append((proc, out))
        return proc

    def stop(self, proc, sig=signal.SIGINT, timeout: float = 10) -> None:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        for proc, out in self.procs:
            self.stop(proc, signal.SIGTERM, 5)
            out.close()


def _json_lines(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def run_scenario(scenario: Scenario, outdir: Path, detect: bool = True, alert_only: bool = False,
                 say=print, before_teardown=None) -> RunResult:
    """`before_teardown(net, controller)` runs once the schedule is done, with everything still up."""
    outdir = Path(outdir).resolve()
    logs = outdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for stale in ("blocks.sqlite", "alerts.json", "monitor.pcap", "zscore.sqlite"):
        (outdir / stale).unlink(missing_ok=True)
    result = RunResult(outdir=outdir, t0=0.0, windows=[], detect=detect, pcap=outdir / "monitor.pcap",
                       alert_log=outdir / "alerts.json" if detect else None)
    uplink = {}
    if scenario.uplink:   # the router's port is the uplink; the router itself is a critical host
        result.uplink_port = load_topology().uplink_port(scenario.devices, scenario.attackers)
        uplink = {"uplink_port": result.uplink_port, "allowlist": ("10.0.0.253", host_ip("r1"))}
    with management_link(), ControllerProcess(outdir, token=TOKEN, api_host=MGMT_CONTROLLER,
                                              alert_only=alert_only, **uplink) as controller:
        say(f"controller up: OpenFlow 127.0.0.1:{controller.ofp_port}, verdict API {controller.url}"
            f"{' (alert-only)' if alert_only else ''}")
        with gateway_network(controller.ofp_port, devices=scenario.devices, attackers=scenario.attackers,
                             management=True, uplink=scenario.uplink) as net:
            procs = _Procs(logs)
            try:
                _run(scenario, net, controller, procs, result, detect, say, before_teardown)
            finally:
                procs.stop_all()
            result.blocks = controller.client().blocks()
    result.save()
    return result


def _shape_link(net, host: str, kbit: int, say) -> None:
    """The switch's port toward `host` (in the root namespace) behind a token bucket: what the
    switch sends there waits in a queue of at most QUEUE_MS, and a flood fills it."""
    port = net.get(host).connectionsTo(net.get("s1"))[0][1]   # (the host's end, the switch's end)
    burst = max(2, kbit // 8 // 100)   # kbytes: a hundredth of a second at the rate
    done = subprocess.run(["tc", "qdisc", "replace", "dev", port.name, "root", "tbf", "rate", f"{kbit}kbit",
                           "burst", f"{burst}kb", "latency", f"{QUEUE_MS}ms"], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"tc on {port.name}: {done.stderr.strip()}")
    say(f"link toward {host} shaped: {port.name} {kbit:,} kbit/s, a {QUEUE_MS} ms queue")


def _run(scenario: Scenario, net, controller, procs: _Procs, result: RunResult, detect: bool, say,
         before_teardown) -> None:
    outdir = result.outdir
    names = [h.name for h in net.hosts]
    say(f"topology up: {', '.join(names)}; switch s1 (userspace OVS, OpenFlow 1.3)")
    for name, kbit in scenario.shaped_links.items():
        _shape_link(net, name, kbit, say)
        result.queued[name] = QUEUE_MS / 1000.0
    monitor = net.get("monitor")
    tcpdump = procs.start(monitor, ["tcpdump", "-i", "monitor-eth0", "-n", "-B", "65536", "-w",
                                    str(result.pcap)], "tcpdump-monitor")
    _wait_for(procs.logdir / "tcpdump-monitor.log", "listening on", tcpdump, 10, "tcpdump on the monitor port")
    # Every host talks once, so the switch has learned them all before the run; captured, so
    # that every host has Normal records before any attack window.
    for host in net.hosts:
        if host.name != "monitor":
            host.cmd("ping -n -c1 -W1 10.0.0.2 >/dev/null 2>&1 || true")
    captures = [tcpdump]
    for target in sorted({a.target for a in scenario.attacks}):
        # what came from the attackers: by MAC on the LAN; through the uplink, by r1's MAC and the
        # forged prefix (o1's benign traffic carries r1's MAC too)
        wanted = sorted({f"ether src {host_mac(h)}" if not a.src_net else
                         f"(ether src {host_mac(h)} and src net {a.src_net})"
                         for a in scenario.attacks if a.target == target for h in a.hosts})
        pcap = outdir / f"victim-{target}.pcap"
        proc = procs.start(net.get(target), ["tcpdump", "-i", f"{target}-eth0", "-n", "-B", "65536", "-w",
                                             str(pcap), " or ".join(wanted)],
                           f"tcpdump-{target}")
        _wait_for(procs.logdir / f"tcpdump-{target}.log", "listening on", proc, 10, f"tcpdump on {target}")
        result.victim_pcaps[target] = pcap
        captures.append(proc)
    live = None
    if detect:
        config = monitor_config(outdir, controller.url, scenario.uplink, scenario.shaped_rate_pps)
        live = procs.start(monitor, [sys.executable, "-m", "iadm.cli", "monitor", "--iface", "monitor-eth0",
                                     "--config", str(config)], "monitor")
        _wait_for(procs.logdir / "monitor.log", "] packets", live, 60, "iadm monitor")
        say(f"monitor up on the monitor host: rules + model, verdicts to {controller.url}")
    server = procs.start(net.get("h2"), _py("iot.py", "server", "--bind", "10.0.0.2",
                                            "--duration", scenario.duration + 30), "server-h2")
    _wait_for(procs.logdir / "server-h2.log", '"ready"', server, 10, "the IoT server on h2")
    listening = set()
    for attack in scenario.attacks:
        listener = listener_command(attack, scenario.duration + 30)
        if listener and (attack.target, listener[0]) not in listening:   # one per host and port
            port, argv = listener
            listening.add((attack.target, port))
            name = f"listen-{attack.target}-{port}"
            proc = procs.start(net.get(attack.target), argv, name)
            _wait_for(procs.logdir / f"{name}.log", '"ready"', proc, 10, f"the listener {name}")
    devices = {name: procs.start(net.get(name), _py("iot.py", "device", "--server", "10.0.0.2", "--duration",
                                                     scenario.duration, "--scale", scenario.scale, "--seed", i),
                                 f"device-{name}")
               for i, name in enumerate(scenario.background_devices)}
    result.t0 = t0 = time.time()
    say(f"background traffic from {', '.join(devices)} to h2; {len(scenario.attacks)} attack(s) scheduled")
    pending = sorted(scenario.attacks, key=lambda a: a.start)
    running = []
    while pending or running or time.time() < t0 + scenario.duration:
        now = time.time()
        while pending and now >= t0 + pending[0].start:
            attack = pending.pop(0)
            start = time.time()
            started = [procs.start(net.get(h), attack_command(attack, h), f"attack-{len(result.windows) + len(running)}-{h}")
                       for h in attack.hosts]
            running.append((attack, started, start))
            say(f"  t+{start - t0:5.1f}s  {attack.name}: started ({attack.category}/{attack.subcategory})")
        for item in list(running):
            attack, started, start = item
            overdue = time.time() > start + attack.duration + 20
            if overdue:
                for proc in started:
                    procs.stop(proc, signal.SIGKILL)
            if all(p.poll() is not None for p in started):
                end = time.time()
                running.remove(item)
                window = Window(attack.name, attack.kind, attack.hosts, [host_mac(h) for h in attack.hosts],
                                attack.target, start, end, attack.category, attack.subcategory, attack.technique,
                                attack.src_net)
                result.windows.append(window)
                say(f"  t+{end - t0:5.1f}s  {attack.name}: ended{' (killed: overran)' if overdue else ''}")
        time.sleep(0.02)
    result.windows.sort(key=lambda w: w.start)
    for name, proc in devices.items():
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            procs.stop(proc)
        lines = _json_lines(procs.logdir / f"device-{name}.log")
        result.devices[name] = lines[-1] if lines else {}
    for path in sorted(procs.logdir.glob("attack-*.log")):
        result.generators[path.stem] = path.read_text(errors="replace")[-400:]
    time.sleep(0.5)   # the last packets reach the captures
    result.switch = switch_counters()   # the verdicts' entries and meters, before anything expires
    if before_teardown is not None:
        before_teardown(net, controller)
    if live is not None:
        procs.stop(live)
    for proc in captures:
        procs.stop(proc)
