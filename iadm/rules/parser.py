"""Parser for Snort/Suricata-shaped rules over packets and flow records.

    action proto src sport dir dst dport (option; option; ...)

The space before the options is optional: the reference report writes
`... any 80(msg:"..."; stime > 1526876545; stime <= 1528099368)`, and
that parses. Every error names file, line, column, the offending token and
what was expected; `parse_rules` collects them all instead of stopping at
the first, so `iadm rules check` reports a whole file at once.
"""
from __future__ import annotations

import ipaddress
import os
import re

from iadm.flows.records import BASE_COLUMNS, WINDOW_COLUMNS
from iadm.rules.model import (ACTIONS, CLASSTYPES, OPERATORS, PROTOCOLS, TCP_FLAG_BITS, AddressSet, PortSet,
                              Predicate, Rule, RuleError, Threshold)

_TEXT_COLUMNS = {"flgs", "proto", "saddr", "daddr", "state"}
FEATURES = [c for c in BASE_COLUMNS + WINDOW_COLUMNS if c not in _TEXT_COLUMNS]
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")
_KNOWN_OPTIONS = {"msg", "sid", "rev", "classtype", "priority", "reference", "metadata", "flags", "threshold",
                  "detection_filter"}


class Variables:
    """ipvar/portvar definitions (`ipvar HOME_NET [10.0.0.0/24,192.168.1.0/24]`)."""

    def __init__(self):
        self.ip: dict[str, AddressSet] = {}
        self.port: dict[str, PortSet] = {}

    @classmethod
    def load(cls, path: str) -> "Variables":
        vars_ = cls()
        errors = []
        with open(path, encoding="utf-8") as fh:
            for lineno, raw in enumerate(fh, 1):
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                parts = line.split(None, 2)
                col = raw.index(parts[0]) + 1
                if len(parts) != 3 or parts[0] not in ("ipvar", "portvar", "var"):
                    errors.append(RuleError(path, lineno, col, parts[0],
                                            "expected `ipvar NAME VALUE` or `portvar NAME VALUE`"))
                    continue
                kind, name, value = parts
                if not _NAME.fullmatch(name):
                    errors.append(RuleError(path, lineno, raw.index(name) + 1, name, "expected a variable name"))
                    continue
                scanner = _Scanner(value, path, lineno, vars_, base_col=raw.index(value) + 1)
                try:
                    if kind == "portvar":
                        vars_.port[name] = scanner.port_set(value, 0)
                    else:
                        vars_.ip[name] = scanner.address_set(value, 0)
                except RuleError as err:
                    errors.append(err)
        if errors:
            raise RuleErrors(errors)
        return vars_


class RuleErrors(ValueError):
    def __init__(self, errors: list):
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


class _Scanner:
    def __init__(self, text: str, path: str, line: int, variables: Variables, base_col: int = 1):
        self.text, self.path, self.line, self.vars, self.base_col = text, path, line, variables, base_col
        self.pos = 0

    def error(self, message: str, token: str = "", pos: int | None = None) -> RuleError:
        return RuleError(self.path, self.line, (self.pos if pos is None else pos) + self.base_col, token, message)

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def field(self, what: str) -> tuple[str, int]:
        """One header field: a bracketed list (may hold spaces) or a run of non-space characters."""
        self.skip_ws()
        start = self.pos
        if self.pos >= len(self.text) or self.text[self.pos] == "(":
            raise self.error(f"expected {what}", self.text[self.pos:self.pos + 1] or "end of line")
        depth = 0
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "[":
                depth += 1
            elif ch == "]":
                depth -= 1
            elif depth == 0 and (ch in " \t" or ch == "("):
                break
            self.pos += 1
        if depth:
            raise self.error("unbalanced [ in list", self.text[start:self.pos], start)
        return self.text[start:self.pos], start

    # --- addresses and ports -----------------------------------------------
    def _items(self, text: str, start: int) -> list[tuple[str, int]]:
        inner, offset = text[1:-1], start + 1
        items, depth, begin = [], 0, 0
        for i, ch in enumerate(inner + ","):
            if ch == "[":
                depth += 1
            elif ch == "]":
                depth -= 1
            elif ch == "," and depth == 0:
                item = inner[begin:i]
                stripped = item.strip()
                if not stripped:
                    raise self.error("empty element in list", text, start)
                items.append((stripped, offset + begin + (len(item) - len(item.lstrip()))))
                begin = i + 1
        return items

    def address_set(self, text: str, start: int) -> AddressSet:
        return self._set(text, start, "address", AddressSet, self.vars.ip, self._network)

    def port_set(self, text: str, start: int) -> PortSet:
        return self._set(text, start, "port", PortSet, self.vars.port, self._port_range)

    def _set(self, text: str, start: int, kind: str, cls, variables: dict, leaf):
        """any, a leaf (network or port range), [list], !negation or $VARIABLE, nested."""
        negate = text.startswith("!")
        body, at = (text[1:], start + 1) if negate else (text, start)
        if body == "any":
            if negate:
                raise self.error("!any matches nothing", text, start)
            return cls()
        if body.startswith("$"):
            if body[1:] not in variables:
                raise self.error(f"unknown {kind} variable {body}", text, start)
            value = variables[body[1:]]
        elif body.startswith("["):
            if not body.endswith("]"):
                raise self.error("expected ] to close the list", text, start)
            include, exclude = [], []
            for item, pos in self._items(body, at):
                sub = self._set(item, pos, kind, cls, variables, leaf)
                if sub.include and sub.exclude:
                    raise self.error(f"a {kind} list element cannot mix included and excluded entries", item, pos)
                include += sub.include
                exclude += sub.exclude
            value = cls(tuple(include), tuple(exclude))
        else:
            value = cls((leaf(body, text, start),))
        if negate:
            if value.exclude:
                raise self.error(f"cannot negate a {kind} set that already excludes entries", text, start)
            return cls((), value.include)
        return value

    def _network(self, body: str, text: str, start: int):
        try:
            net = ipaddress.ip_network(body, strict=False)
        except ValueError:
            raise self.error("expected an address: any, IPv4, CIDR, [list], !negation or $VARIABLE",
                             text, start) from None
        if "/" in body and net.network_address != ipaddress.ip_address(body.split("/")[0]):
            raise self.error(f"bad CIDR: host bits set (did you mean {net}?)", text, start)
        return net

    def _port_range(self, body: str, text: str, start: int) -> tuple:
        match = re.fullmatch(r"(\d*)(:?)(\d*)", body)
        if not match or not (match.group(1) or match.group(3)):
            raise self.error("expected a port: any, N, LO:HI, LO:, :HI, [list], !negation or $VARIABLE",
                             text, start)
        lo = int(match.group(1)) if match.group(1) else 0
        hi = int(match.group(3)) if match.group(3) else (65535 if match.group(2) else lo)
        if hi > 65535 or lo > 65535:
            raise self.error("port out of range 0-65535", text, start)
        if lo > hi:
            raise self.error(f"empty port range {lo}:{hi}", text, start)
        return (lo, hi)

    # --- options ---------------------------------------------------------
    def string(self) -> str:
        start = self.pos
        self.pos += 1
        out = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            if ch == '"':
                self.pos += 1
                return "".join(out)
            out.append(ch)
            self.pos += 1
        raise self.error("unterminated string", self.text[start:start + 20], start)

    def value(self) -> tuple[str, int]:
        self.skip_ws()
        start = self.pos
        if self.text.startswith('"', self.pos):
            return self.string(), start
        while self.pos < len(self.text) and self.text[self.pos] not in ";)":
            if self.text[self.pos] == '"':
                self.string()
                continue
            self.pos += 1
        return self.text[start:self.pos].strip(), start


def _int(scanner, text, pos, name, lo=0, hi=2**31 - 1) -> int:
    if not re.fullmatch(r"\d+", text):
        raise scanner.error(f"{name} expects a whole number", text, pos)
    value = int(text)
    if not lo <= value <= hi:
        raise scanner.error(f"{name} must be between {lo} and {hi}", text, pos)
    return value


def parse_rule(text: str, path: str = "<rule>", line: int = 1, variables: Variables | None = None) -> Rule:
    s = _Scanner(text, path, line, variables or Variables())
    action, pos = s.field("an action (alert, drop, pass)")
    if action not in ACTIONS:
        raise s.error("expected an action: alert, drop or pass", action, pos)
    proto, pos = s.field("a protocol")
    if proto not in PROTOCOLS:
        raise s.error(f"expected a protocol: {', '.join(PROTOCOLS)}", proto, pos)
    src = s.address_set(*s.field("a source address"))
    sport = s.port_set(*s.field("a source port"))
    direction, pos = s.field("a direction (-> or <>)")
    if direction not in ("->", "<>"):
        raise s.error("expected a direction: -> or <>", direction, pos)
    dst = s.address_set(*s.field("a destination address"))
    dport = s.port_set(*s.field("a destination port"))
    s.skip_ws()
    if not s.text.startswith("(", s.pos):
        raise s.error("expected ( to open the options", s.text[s.pos:s.pos + 10] or "end of line")
    s.pos += 1
    options: dict = {"predicates": [], "references": [], "metadata": []}
    seen = set()
    while True:
        s.skip_ws()
        if s.pos >= len(s.text):
            raise s.error("expected ) to close the options", "end of line")
        if s.text[s.pos] == ")":
            s.pos += 1
            break
        start = s.pos
        name_match = _NAME.match(s.text, s.pos)
        if not name_match:
            raise s.error("expected an option name or a feature", s.text[s.pos:s.pos + 10])
        name = name_match.group()
        s.pos = name_match.end()
        s.skip_ws()
        op = next((o for o in OPERATORS if s.text.startswith(o, s.pos)), None)
        if op:
            if name not in FEATURES:
                raise s.error(f"unknown feature {name!r}; features are the numeric flow-record columns",
                              name, start)
            s.pos += len(op)
            s.skip_ws()
            num = _NUMBER.match(s.text, s.pos)
            if not num:
                raise s.error(f"expected a number after {op}", s.text[s.pos:s.pos + 10] or "end of line")
            options["predicates"].append(Predicate(name, op, float(num.group())))
            s.pos = num.end()
        elif s.text.startswith(":", s.pos):
            if name not in _KNOWN_OPTIONS:
                raise s.error(f"unknown option {name!r}; known: {', '.join(sorted(_KNOWN_OPTIONS))}", name, start)
            if name in seen and name not in ("reference", "metadata"):
                raise s.error(f"option {name} given twice", name, start)
            if name in ("threshold", "detection_filter") and options.get("threshold") is not None:
                raise s.error("a rule takes one threshold or detection_filter", name, start)
            seen.add(name)
            s.pos += 1
            value, vpos = s.value()
            _option(s, options, name, value, vpos)
        else:
            if name in _KNOWN_OPTIONS:
                raise s.error(f"option {name} needs a value (`{name}: ...`)", name, start)
            if name in FEATURES:
                raise s.error(f"expected an operator ({' '.join(OPERATORS)}) after feature {name}",
                              s.text[s.pos:s.pos + 5] or "end of line")
            raise s.error(f"unknown option {name!r}", name, start)
        s.skip_ws()
        if s.text.startswith(";", s.pos):
            s.pos += 1
        elif not s.text.startswith(")", s.pos):
            raise s.error("expected ; or ) after an option", s.text[s.pos:s.pos + 10] or "end of line")
    s.skip_ws()
    if s.pos < len(s.text) and not s.text.startswith("#", s.pos):
        raise s.error("unexpected text after the options", s.text[s.pos:s.pos + 10])
    options.setdefault("sid", 0)   # the reference report's example has none: 0 is "unassigned"
    return Rule(action=action, proto=proto, src=src, sport=sport, direction=direction, dst=dst, dport=dport,
                path=path, line=line, text=text.strip(), **options)


def _option(s: _Scanner, options: dict, name: str, value: str, pos: int) -> None:
    if name == "msg":
        options["msg"] = value
    elif name == "sid":
        options["sid"] = _int(s, value, pos, "sid", 1)
    elif name == "rev":
        options["rev"] = _int(s, value, pos, "rev", 1)
    elif name == "priority":
        options["priority"] = _int(s, value, pos, "priority", 1, 255)
    elif name == "classtype":
        if value not in CLASSTYPES:
            raise s.error(f"unknown classtype; known: {', '.join(CLASSTYPES)}", value, pos)
        options["classtype"] = value
    elif name == "reference":
        options["references"].append(value)
    elif name == "metadata":
        options["metadata"] += [v.strip() for v in value.split(",") if v.strip()]
    elif name == "flags":
        # Snort's form: [modifier]FLAGS[modifier][,IGNORED]; modifiers + (these and maybe others),
        # * (any of these), ! (none of these); 1 and 2 are Snort 2's names for CWR and ECE.
        match = re.fullmatch(r"([+*!]?)([FSRPAUEC120]+)([+*!]?)(?:,([FSRPAUEC12]+))?", value.replace(" ", ""))
        if (not match or (match.group(1) and match.group(3))
                or ("0" in match.group(2) and (len(match.group(2)) > 1 or match.group(1) or match.group(3)))):
            raise s.error("flags expects TCP flag letters F S R P A U C E (or 1 2 for CWR ECE, or 0 for none), "
                          "optionally + (all of), * (any of) or ! (none of), and ,LETTERS to ignore", value, pos)
        letters = {"1": "C", "2": "E"}
        bits = sum(TCP_FLAG_BITS.get(letters.get(ch, ch), 0) for ch in match.group(2))
        ignored = sum(TCP_FLAG_BITS[letters.get(ch, ch)] for ch in match.group(4) or "")
        modifier = match.group(1) or match.group(3)
        options["flags"] = ({"": "exact", "+": "all", "*": "any", "!": "none"}[modifier], bits, ignored)
    elif name in ("threshold", "detection_filter"):
        usage = f"{name} expects `{'type limit|threshold|both, ' if name == 'threshold' else ''}" \
                f"track by_src|by_dst, count N, seconds S`"
        fields = {}   # key -> (value, column of the value)
        offset = 0
        for part in value.split(","):
            lead = len(part) - len(part.lstrip())
            key, _, val = part.strip().partition(" ")
            val_at = pos + offset + lead + len(key) + (len(val) - len(val.lstrip())) + 1
            if not key or not val.strip() or key in fields:
                raise s.error(usage, part.strip() or value, pos + offset + lead)
            fields[key] = (val.strip(), val_at)
            offset += len(part) + 1
        wanted = {"track", "count", "seconds"} | ({"type"} if name == "threshold" else set())
        if set(fields) != wanted:
            raise s.error(f"{name} needs exactly: {', '.join(sorted(wanted))}", value, pos)
        kind, kind_at = fields.get("type", ("detection_filter", pos))
        if kind not in ("limit", "threshold", "both", "detection_filter"):
            raise s.error("threshold type must be limit, threshold or both", kind, kind_at)
        track, track_at = fields["track"]
        if track not in ("by_src", "by_dst"):
            raise s.error("track must be by_src or by_dst", track, track_at)
        count = _int(s, *fields["count"], "count", 1)
        seconds, seconds_at = fields["seconds"]
        if not _NUMBER.fullmatch(seconds) or float(seconds) <= 0:
            raise s.error("seconds must be a positive number", seconds, seconds_at)
        options["threshold"] = Threshold(kind, track, count, float(seconds))


def parse_rules(text: str, path: str = "<rules>", variables: Variables | None = None) -> list[Rule]:
    """Every rule of a file; raises RuleErrors with all the errors found (duplicate sids included)."""
    rules, errors, sids = [], [], {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            rule = parse_rule(raw, path, lineno, variables)
        except RuleError as err:
            errors.append(err)
            continue
        if rule.sid and rule.sid in sids:
            col = raw.find("sid") + 1
            errors.append(RuleError(path, lineno, col, f"sid:{rule.sid}",
                                    f"duplicate sid {rule.sid} (first at line {sids[rule.sid]})"))
            continue
        sids[rule.sid] = lineno
        rules.append(rule)
    if errors:
        raise RuleErrors(errors)
    return rules


def default_variables(rule_paths: list[str]) -> str | None:
    for path in rule_paths[:1]:
        beside = os.path.join(os.path.dirname(os.path.abspath(path)), "variables.conf")
        if os.path.isfile(beside):
            return beside
    return None


def load_rules(paths: list[str], variables_path: str | None = None) -> list[Rule]:
    """Rules from several files; sids must be unique across them. Without a variables file, the
    `variables.conf` beside the first rules file is used when there is one (as the CLI's help says)."""
    variables_path = variables_path or default_variables(paths)
    variables = Variables.load(variables_path) if variables_path else Variables()
    rules, errors, sids = [], [], {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            errors.append(RuleError(path, 0, 0, "", f"cannot read: {exc.strerror}"))
            continue
        except UnicodeDecodeError as exc:
            errors.append(RuleError(path, 0, 0, "", f"not UTF-8 text: {exc.reason} at byte {exc.start}"))
            continue
        try:
            file_rules = parse_rules(text, path, variables)
        except RuleErrors as errs:
            errors += errs.errors
            continue
        for rule in file_rules:
            if rule.sid and rule.sid in sids:
                errors.append(RuleError(path, rule.line, 1, f"sid:{rule.sid}",
                                        f"duplicate sid {rule.sid} (first in {sids[rule.sid]})"))
            else:
                sids[rule.sid] = f"{path}:{rule.line}"
                rules.append(rule)
    if errors:
        raise RuleErrors(errors)
    return rules
