"""Reloading rules at run time: on SIGHUP, or when a rule or variables file changes.

The signal handler only sets a flag; the reload happens at the caller's next
`poll()`, between batches, so a batch never sees half a rule set. A file
with errors is reported (every error, with file, line and column) and the
running rules stay; it is not retried until a file changes again.
"""
from __future__ import annotations

import logging
import os
import signal
import time

from iadm.rules.engine import RuleEngine
from iadm.rules.parser import RuleErrors

log = logging.getLogger("iadm.rules")


class RuleWatcher:
    def __init__(self, engine: RuleEngine):
        self.engine = engine
        self.requested = False
        self.stamps = self._stamps()
        self.last_error: str | None = None   # the last refused reload, for the operator API
        self.reloaded_at = time.time()       # when the rules running now were loaded (the console shows it)

    def _files(self) -> list[str]:
        paths, variables = self.engine.ruleset.sources
        return list(paths) + ([variables] if variables else [])

    def _stamps(self) -> dict:
        stamps = {}
        for path in self._files():
            try:
                st = os.stat(path)
                stamps[path] = (st.st_mtime_ns, st.st_size)
            except OSError:
                stamps[path] = None
        return stamps

    def request(self, *_signal_args) -> None:
        self.requested = True

    def install_signal(self, signum: int = signal.SIGHUP) -> None:
        signal.signal(signum, self.request)

    def poll(self) -> bool | None:
        """Reload if asked or changed: True when reloaded, False when refused, None when nothing to do."""
        stamps = self._stamps()
        if not self.requested and stamps == self.stamps:
            return None
        self.requested = False
        self.stamps = stamps
        try:
            ruleset = self.engine.reload()
        except RuleErrors as errs:
            for err in errs.errors:
                log.error("rule reload refused: %s", err)
            log.error("rule reload refused (%d errors); still running the %d rules loaded before",
                      len(errs.errors), len(self.engine.ruleset))
            self.last_error = str(errs.errors[0])
            return False
        self.last_error = None
        self.reloaded_at = time.time()
        log.info("rules reloaded: %d rules from %s", len(ruleset), ", ".join(self._files()))
        return True
