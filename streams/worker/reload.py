"""Hot reload of the rule files, the sharing policy and the areas of responsibility: a changed
file is swapped in only if it loads (and, for rules, passes its own tests); otherwise the one
in force stays."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

from engine.areas import Areas, load_areas
from engine.errors import AreasError, PolicyError, RuleSetError
from engine.policy import Keyring, Policy, load_policy, reload_policy
from engine.routing import Router
from engine.rulefiles import load_rules
from engine.rules import RuleSet
from engine.ruletests import run_all
from streams.keys import keyring_from_sources
from streams.settings import Settings
from streams.worker.metrics import Metrics

log = logging.getLogger("fusion.reload")


def rules_fingerprint(path: Path) -> str:
    """A digest of the rule files' names and bytes (cheap enough to poll)."""
    h = hashlib.sha256()
    files = sorted(f for f in path.glob("*.y*ml") if not f.name.startswith("policy"))
    if not path.is_dir():
        files = [path]
    for f in files:
        try:
            h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
        except OSError:
            h.update(f.name.encode() + b"\0missing\0")
    return h.hexdigest()


class LiveRules:
    """The rule set in force, its router, and its reload."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.ruleset: RuleSet = load_rules([settings.rules_path])
        self.router = Router(self.ruleset)
        self._fingerprint = rules_fingerprint(settings.rules_path)
        self._last_check = time.monotonic()

    def current(self) -> tuple[RuleSet, Router]:
        return self.ruleset, self.router

    def maybe_reload(self) -> RuleSet | None:
        """The new rule set if the files changed and it is sound; else None."""
        every = self.settings.rules_reload_s
        if not every or time.monotonic() - self._last_check < every:
            return None
        self._last_check = time.monotonic()
        fp = rules_fingerprint(self.settings.rules_path)
        if fp == self._fingerprint:
            return None
        self._fingerprint = fp
        try:
            new = load_rules([self.settings.rules_path])
        except RuleSetError as e:
            log.error("rule reload refused, the running rules stay: %s", e)  # noqa: TRY400
            self.metrics.reloads.labels("rules", "refused").inc()
            return None
        outcomes, untested = run_all(new)
        failed = [
            f"{o.rule_id}: {o.name}: {'; '.join(o.problems)}" for o in outcomes if not o.passed
        ]
        if failed or untested:
            problems = failed + [f"{r}: the rule carries no tests" for r in untested]
            log.error(
                "rule reload refused, the running rules stay; failing rule tests:\n  %s",
                "\n  ".join(problems),
            )
            self.metrics.reloads.labels("rules", "refused").inc()
            return None
        self.ruleset = new
        self.router = Router(new)
        log.info("rules reloaded: %d rules (%s)", len(new), ", ".join(r.id for r in new.rules))
        self.metrics.reloads.labels("rules", "success").inc()
        return new


class LivePolicy:
    """The sharing policy in force, with its keys, and its reload."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.policy: Policy = load_policy(settings.policy_path, self.keyring())
        self._last_check = time.monotonic()
        self._last_error = ""
        ref = self.policy.ref
        log.info(
            "sharing policy %s version %s (sha256 %s) from %s",
            ref.id,
            ref.version,
            ref.sha256,
            settings.policy_path,
        )

    def current(self) -> Policy:
        return self.policy

    def keyring(self) -> Keyring:
        """The pseudonymisation keys, read again from where the settings say."""
        return keyring_from_sources(self.settings.pseudonym_keys_file, self.settings.pseudonym_keys)

    def maybe_reload(self) -> None:
        """Swap in a changed policy or keys file if it loads; else keep the policy in force."""
        every = self.settings.policy_reload_s
        if not every or time.monotonic() - self._last_check < every:
            return
        self._last_check = time.monotonic()
        try:
            keys = self.keyring()
        except PolicyError as e:
            log.error("keys reload refused, the policy in force stays: %s", e)  # noqa: TRY400
            self.metrics.reloads.labels("policy", "refused").inc()
            return
        keys_changed = keys != self.policy.keyring
        res = reload_policy(self.policy, self.settings.policy_path, keys if keys_changed else None)
        if res.error is not None:
            if str(res.error) != self._last_error:
                log.error("policy reload refused, the policy in force stays: %s", res.error)
                self.metrics.reloads.labels("policy", "refused").inc()
            self._last_error = str(res.error)
            return
        self._last_error = ""
        if res.changed:
            self.policy = res.policy
            self.metrics.reloads.labels("policy", "success").inc()
            ref = res.policy.ref
            log.info(
                "sharing policy reloaded: %s version %s (sha256 %s)",
                ref.id,
                ref.version,
                ref.sha256,
            )


def file_fingerprint(path: Path) -> str:
    """A digest of one file's bytes ("missing" if it cannot be read)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "missing"


class LiveAreas:
    """The areas of responsibility in force, and their reload."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.areas: Areas = load_areas(settings.areas_path)
        self._fingerprint = file_fingerprint(settings.areas_path)
        self._last_check = time.monotonic()
        log.info(
            "areas of responsibility version %s (%d areas) from %s",
            self.areas.version,
            len(self.areas.areas),
            settings.areas_path,
        )

    def current(self) -> Areas:
        return self.areas

    def maybe_reload(self) -> Areas | None:
        """The new areas if the file changed and it is sound; else None (the old ones stay)."""
        every = self.settings.areas_reload_s
        if not every or time.monotonic() - self._last_check < every:
            return None
        self._last_check = time.monotonic()
        fp = file_fingerprint(self.settings.areas_path)
        if fp == self._fingerprint:
            return None
        self._fingerprint = fp
        try:
            new = load_areas(self.settings.areas_path)
        except AreasError as e:
            log.error("areas reload refused, the running areas stay: %s", e)  # noqa: TRY400
            self.metrics.reloads.labels("areas", "refused").inc()
            return None
        self.areas = new
        log.info("areas reloaded: version %s, %d areas", new.version, len(new.areas))
        self.metrics.reloads.labels("areas", "success").inc()
        return new
