"""The sharing policy: what of whose data each partner receives, field by field.

A policy file (`rules/policy.yaml`) decides, for each origin country (whose agency reported
the event), destination country, event type, zone and field, one action:

- `release`: the value as is;
- `pseudonymize`: keyed pseudonyms of the normalised identifier (see "Pseudonyms" below);
- `generalize`: the location snapped to the centre of a grid cell `location_precision_m` wide;
- `redact`: withheld; the alert's `redactions` says so;
- `drop` (written `event: drop`): the whole event is not shown.

Rules are tried in order; the first rule that matches the event and names the field (or has
`other_fields`) decides. A field no matching rule names is withheld (`redact`); an event no
matching rule says `event:` of is shown. The zone is `inside` within `border_zone_km` of the
US-Mexico boundary, else `outside`, taken where the event is (for the alert's own location:
where the alert is); when the release step cannot say where, the strictest answer any zone
would get applies. An alert always has a location, so for it any action but `release` means
`generalize`.

Pseudonyms read `pn:<kind>:<key id>:<32 hex digits>`: HMAC-SHA256 under the key of that kind
over `pn-v1 NUL <destination> NUL <kind> NUL <normalised value>`, cut to 128 bits. Plates are
normalised to upper-case letters and digits, other identifiers stripped and upper-cased, so
the same identifier reported by any country gives the same pseudonym for one destination
(and different ones for different destinations). The kind is the field name (`plate`,
`person_ref`, `serial`, ...). A released identifier is a list of pseudonyms, one per active
key of its kind, primary first: at most two keys are active, so during a rotation window
alerts carry the pseudonym under the new and under the old key, and two released identifiers
denote the same value exactly when their lists share an element (`same_subject`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretBytes,
    ValidationError,
    field_validator,
)

from engine.border import BorderLine, default_border
from engine.errors import PolicyError
from engine.geo import KM_PER_DEG_LAT
from engine.selectors import EventTypeName
from schemas.alerts import PolicyRef, Severity, Tlp
from schemas.events import COMMON_FIELDS, EVENT_MODELS, normalize_plate

ActionName = Literal["release", "pseudonymize", "generalize", "redact", "drop"]
ZoneName = Literal["inside", "outside"]

# Stricter answers win when the zone is not known.
STRICTNESS: dict[str, int] = {
    "release": 0,
    "generalize": 1,
    "pseudonymize": 2,
    "redact": 3,
    "drop": 4,
}
SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")
EVENT_FIELDS: dict[str, frozenset[str]] = {
    etype: frozenset(model.model_fields) - COMMON_FIELDS for etype, model in EVENT_MODELS.items()
}
DEFAULT_WITHHOLD = "default-withhold-unnamed-fields"
DEFAULT_SHOW = "default-show-events"
PSEUDONYM_PREFIX = "pn"
PSEUDONYM_HEX = 32
MIN_KEY_BYTES = 32
MAX_ACTIVE_KEYS = 2


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


# -- pseudonymisation keys -----------------------------------------------------------------


def _base64_bytes(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(
                "must be base64 text, e.g. the output of `openssl rand -base64 32`"
            ) from None
    return value


class PseudonymKey(_Frozen):
    """One HMAC key of one identifier kind; the secret never prints."""

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")] = Field(
        description="Key id, written into every pseudonym made with the key."
    )
    secret: Annotated[SecretBytes, BeforeValidator(_base64_bytes)] = Field(
        description=f"Key material, base64 in files; at least {MIN_KEY_BYTES} bytes."
    )

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, v: SecretBytes) -> SecretBytes:
        n = len(v.get_secret_value())
        if n < MIN_KEY_BYTES:
            raise ValueError(f"must hold at least {MIN_KEY_BYTES} bytes of key material, got {n}")
        return v


KindName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
ActiveKeys = Annotated[list[PseudonymKey], Field(min_length=1, max_length=MAX_ACTIVE_KEYS)]


def normalize_identifier(kind: str, value: Any) -> str:
    """The form an identifier is pseudonymised in: plates as matched, others stripped and
    upper-cased."""
    text = value if isinstance(value, str) else str(value)
    if kind == "plate":
        return normalize_plate(text)
    return text.strip().upper()


def pseudonym(key: PseudonymKey, kind: str, value: Any, destination: str) -> str:
    """`pn:<kind>:<key id>:<hex>`, the pseudonym of `value` for `destination` under `key`."""
    msg = b"\x00".join(
        (b"pn-v1", destination.encode(), kind.encode(), normalize_identifier(kind, value).encode())
    )
    digest = hmac.new(key.secret.get_secret_value(), msg, hashlib.sha256).hexdigest()
    return f"{PSEUDONYM_PREFIX}:{kind}:{key.id}:{digest[:PSEUDONYM_HEX]}"


def same_subject(a: Sequence[str] | str, b: Sequence[str] | str) -> bool:
    """Whether two released identifiers (pseudonym lists, or single pseudonyms) denote the
    same value: they share a pseudonym."""
    sa = {a} if isinstance(a, str) else set(a)
    sb = {b} if isinstance(b, str) else set(b)
    return bool(sa & sb)


class Keyring(_Frozen):
    """Pseudonymisation keys per identifier kind. The first key of a kind is the primary; a
    second one is the previous key, still active during a rotation window."""

    keys: dict[KindName, ActiveKeys] = Field(default_factory=dict)
    source: str = Field(default="<keyring>", description="Where the keys came from, for errors.")

    @field_validator("keys")
    @classmethod
    def _distinct_ids(cls, v: dict[str, list[PseudonymKey]]) -> dict[str, list[PseudonymKey]]:
        for kind, keys in v.items():
            ids = [k.id for k in keys]
            if len(set(ids)) != len(ids):
                raise ValueError(f"kind {kind!r} lists key id {ids[0]!r} twice")
        return v

    @classmethod
    def parse(cls, doc: Any, *, source: str) -> Keyring:
        """A keyring from `{kind: [{id, secret}, ...]}` (primary first); errors name the
        source and the field but never echo key material."""
        if not isinstance(doc, Mapping):
            raise PolicyError(
                "a keys file must map identifier kinds to lists of {id, secret}, e.g. "
                '{"plate": [{"id": "k2026a", "secret": "<base64>"}]}',
                file=source,
            )
        try:
            return cls.model_validate({"keys": doc, "source": source})
        except ValidationError as e:
            first = e.errors()[0]
            loc = [str(p) for p in first["loc"][1:]]
            more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
            # `from None`: the validation error holds the input, which is key material.
            raise PolicyError(
                f"{_clean(first['msg'])}{more}", file=source, field=".".join(loc) or None
            ) from None

    @classmethod
    def from_text(cls, text: str, *, source: str) -> Keyring:
        """A keyring from JSON or YAML text."""
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            raise PolicyError("the keys are not valid JSON or YAML", file=source) from None
        return cls.parse(doc if doc is not None else {}, source=source)

    def kinds(self) -> frozenset[str]:
        """The identifier kinds that have keys."""
        return frozenset(self.keys)

    def active(self, kind: str) -> tuple[PseudonymKey, ...]:
        """The active keys of a kind, primary first."""
        return tuple(self.keys.get(kind, ()))

    def pseudonyms(self, kind: str, value: Any, destination: str) -> list[str]:
        """The value's pseudonyms for `destination` under every active key, primary first."""
        keys = self.keys.get(kind)
        if not keys:
            raise PolicyError(f"no pseudonymisation key of kind {kind!r}", file=self.source)
        return [pseudonym(k, kind, value, destination) for k in keys]

    def matches(self, pn: str, value: Any, destination: str) -> bool:
        """Whether `pn` is the pseudonym of `value` for `destination` under a key still active:
        a pseudonym made under the previous key matches until that key is retired."""
        parts = pn.split(":")
        if len(parts) != 4 or parts[0] != PSEUDONYM_PREFIX:
            return False
        kind, key_id = parts[1], parts[2]
        for k in self.keys.get(kind, ()):
            if k.id == key_id:
                return hmac.compare_digest(pseudonym(k, kind, value, destination), pn)
        return False


# -- the policy file -----------------------------------------------------------------------

Country = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]
Cites = Annotated[str, Field(min_length=1, max_length=120)]


def _star(value: Any) -> Any:
    """`"*"` (or nothing) means any; a single value means a list of one."""
    if value is None or value == "*":
        return None
    if isinstance(value, str):
        return [value]
    return value


def _text(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError(f'must be text: quote it, e.g. version: "{value}"')
    return value


AnyOf = BeforeValidator(_star)


class PolicyRule(_Frozen):
    """Which events it applies to, and what it decides for them."""

    name: Name = Field(description="Rule name; the `policy_rule` of what it decides.")
    cites: Cites | None = Field(
        default=None, description="The article of the agreement the rule rests on."
    )
    description: str = ""
    from_: Annotated[list[Country] | None, AnyOf] = Field(
        default=None, alias="from", description="Origin countries; `*` for any."
    )
    to: Annotated[list[Country] | None, AnyOf] = Field(
        default=None, description="Destination countries; `*` for any."
    )
    direction: Literal["domestic", "cross-border", "any"] = Field(
        default="any", description="`domestic`: origin is the destination; `cross-border`: not."
    )
    event_types: Annotated[list[EventTypeName] | None, AnyOf] = Field(
        default=None, description="Event types; `*` for any (and for the alert's own location)."
    )
    zone: Literal["inside", "outside", "anywhere"] = Field(
        default="anywhere", description="Inside or outside the border zone, or anywhere."
    )
    event: Literal["show", "drop"] | None = Field(
        default=None, description="Whether the event is shown at all."
    )
    fields: dict[str, ActionName] = Field(default_factory=dict, description="Field name -> action.")
    other_fields: Literal["release", "redact"] | None = Field(
        default=None, description="The action on every field `fields` does not name."
    )

    @property
    def label(self) -> str:
        """What alerts and audit records name as the `policy_rule`."""
        return f"{self.name} ({self.cites})" if self.cites else self.name


class ZoneRecipients(_Frozen):
    """Partners who receive every alert in a zone (besides those the contract names)."""

    name: Name
    cites: Cites | None = None
    description: str = ""
    zone: Literal["inside", "outside", "anywhere"] = "inside"
    partners: Annotated[list[Country], Field(min_length=1)]
    rules: Annotated[list[str] | None, AnyOf] = Field(
        default=None, description="Alert rule ids this applies to; `*` for every rule."
    )


class TlpSpec(_Frozen):
    """The TLP 2.0 label of an alert: by rule id if named, else by severity."""

    by_severity: dict[Severity, Tlp]
    by_rule: dict[str, Tlp] = Field(default_factory=dict)


class PolicyDoc(_Frozen):
    """A sharing policy file."""

    id: Name
    version: Annotated[str, BeforeValidator(_text), Field(min_length=1, max_length=64)]
    description: str = ""
    agreement: str = ""
    border_zone_km: float = Field(gt=0, le=500, description="Width of the border zone, km.")
    location_precision_m: int = Field(
        ge=100, le=100_000, description="Grid size `generalize` coarsens locations to, metres."
    )
    tlp: TlpSpec
    recipients: list[ZoneRecipients] = Field(default_factory=list)
    rules: Annotated[list[PolicyRule], Field(min_length=1)]


# -- generalisation ------------------------------------------------------------------------


def generalize_location(value: Mapping[str, Any], precision_m: int) -> dict[str, Any]:
    """The centre of the `precision_m` grid cell holding the point (at most ~0.71 x precision
    away from it), and the precision."""
    lat, lon = float(value["lat"]), float(value["lon"])
    step_km = precision_m / 1000.0
    dlat = step_km / KM_PER_DEG_LAT
    clat = min(90.0, max(-90.0, (math.floor(lat / dlat) + 0.5) * dlat))
    dlon = step_km / (KM_PER_DEG_LAT * max(math.cos(math.radians(clat)), 0.01))
    clon = min(180.0, max(-180.0, (math.floor(lon / dlon) + 0.5) * dlon))
    return {"lat": round(clat, 6), "lon": round(clon, 6), "precision_m": precision_m}


@lru_cache(maxsize=65536)
def _border_km(border: BorderLine, lat: float, lon: float) -> float:
    return border.distance_km(lat, lon)


# -- the policy as the release step sees it ------------------------------------------------


class Policy:
    """A loaded sharing policy and its keyring: the release step's `SharingPolicy`."""

    def __init__(
        self,
        doc: PolicyDoc,
        *,
        sha256: str,
        keyring: Keyring,
        file: str,
        border: BorderLine | None = None,
    ) -> None:
        self.doc = doc
        self.file = file
        self.keyring = keyring
        self.border = border or default_border()
        self._ref = PolicyRef(id=doc.id, version=doc.version, sha256=sha256)
        self._tlp_rule: dict[str, str] = dict(doc.tlp.by_rule)
        self._tlp_severity: dict[str, str] = {k: v for k, v in doc.tlp.by_severity.items()}
        self._decisions: dict[tuple[str, str, str, str, str], tuple[str, str]] = {}

    def __repr__(self) -> str:
        return f"Policy({self._ref.id} v{self._ref.version} from {self.file})"

    @property
    def ref(self) -> PolicyRef:
        return self._ref

    def zone_at(self, lat: float, lon: float) -> ZoneName:
        """`inside` within `border_zone_km` of the border, else `outside`."""
        km = _border_km(self.border, lat, lon)
        return "inside" if km <= self.doc.border_zone_km else "outside"

    def action(
        self,
        origin: str,
        destination: str,
        event_type: str,
        field: str,
        at: tuple[float, float] | None = None,
    ) -> tuple[str, str]:
        """(action, policy rule) for one field (`*`: the whole event) of an event from `origin`
        going to `destination`; `at` is where the event is (for the alert's own location,
        asked with event type `*`: where the alert is), None if unknown."""
        zones: tuple[ZoneName, ...] = (
            (self.zone_at(*at),) if at is not None else ("inside", "outside")
        )
        act, rule = max(
            (self._decide(origin, destination, event_type, field, z) for z in zones),
            key=lambda d: STRICTNESS[d[0]],
        )
        if event_type == "*" and field == "location" and act != "release":
            if act != "generalize":
                rule = f"{rule}; an alert's location is generalized, never withheld"
            return "generalize", rule
        return act, rule

    def _decide(
        self, origin: str, destination: str, event_type: str, field: str, zone: ZoneName
    ) -> tuple[str, str]:
        key = (origin, destination, event_type, field, zone)
        hit = self._decisions.get(key)
        if hit is not None:
            return hit
        out = self._first_match(origin, destination, event_type, field, zone)
        if len(self._decisions) < 100_000:
            self._decisions[key] = out
        return out

    def _first_match(
        self, origin: str, destination: str, event_type: str, field: str, zone: ZoneName
    ) -> tuple[str, str]:
        for r in self.doc.rules:
            if not _applies(r, origin, destination, event_type, zone):
                continue
            if field == "*":
                if r.event is not None:
                    return ("drop" if r.event == "drop" else "release"), r.label
                continue
            act = r.fields.get(field) or r.other_fields
            if act is not None:
                return act, r.label
        if field == "*":
            return "release", DEFAULT_SHOW
        return "redact", DEFAULT_WITHHOLD

    def transform(self, action: str, field: str, value: Any, destination: str) -> Any:
        """The released value under `pseudonymize` (a list of pseudonyms, primary first) or
        `generalize` (a grid-cell centre with its `precision_m`)."""
        if action == "pseudonymize":
            return self.keyring.pseudonyms(field, value, destination)
        if action == "generalize":
            return generalize_location(value, self.doc.location_precision_m)
        raise ValueError(f"transform applies to pseudonymize and generalize, not {action!r}")

    def tlp(self, rule_id: str, severity: str) -> str:
        """The TLP label named for the rule, else for the severity."""
        return self._tlp_rule.get(rule_id) or self._tlp_severity[severity]

    def zone_recipients(self, lat: float, lon: float, rule_id: str) -> set[str]:
        """Partners the policy names for alerts of this rule at this place."""
        zone = self.zone_at(lat, lon)
        out: set[str] = set()
        for r in self.doc.recipients:
            if r.zone not in ("anywhere", zone):
                continue
            if r.rules is not None and rule_id not in r.rules:
                continue
            out.update(r.partners)
        return out


def _applies(r: PolicyRule, origin: str, destination: str, event_type: str, zone: str) -> bool:
    if r.from_ is not None and origin not in r.from_:
        return False
    if r.to is not None and destination not in r.to:
        return False
    if r.direction == "domestic" and origin != destination:
        return False
    if r.direction == "cross-border" and origin == destination:
        return False
    # Event type `*` (the alert's own location) matches only rules for every event type.
    if r.event_types is not None and event_type not in r.event_types:
        return False
    return r.zone in ("anywhere", zone)


# -- loading -------------------------------------------------------------------------------


def _clean(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def _named(doc: Any, section: str, index: int) -> str:
    items = doc.get(section) if isinstance(doc, Mapping) else None
    if isinstance(items, list) and index < len(items):
        item = items[index]
        if isinstance(item, Mapping) and isinstance(item.get("name"), str):
            return str(item["name"])
    return f"#{index + 1}"


def _from_validation(e: ValidationError, doc: Any, file: str) -> PolicyError:
    problems: list[PolicyError] = []
    for err in e.errors():
        loc = list(err["loc"])
        rule: str | None = None
        if len(loc) >= 2 and loc[0] in ("rules", "recipients") and isinstance(loc[1], int):
            rule = _named(doc, str(loc[0]), loc[1])
            loc = loc[2:] if loc[0] == "rules" else ["recipients", *loc[2:]]
        msg = _clean(err["msg"])
        value = err.get("input")
        if err["type"] in ("literal_error", "enum", "string_pattern_mismatch") and isinstance(
            value, str | int | float
        ):
            msg = f"{msg}; got {value!r}"
        if err["type"] == "missing":
            msg = "required, but missing"
        problems.append(
            PolicyError(msg, file=file, rule=rule, field=".".join(map(str, loc)) or None)
        )
    return _combine(problems)


def _combine(problems: list[PolicyError]) -> PolicyError:
    first, rest = problems[0], problems[1:]
    if not rest:
        return first
    err = PolicyError(first.detail, file=first.file, rule=first.rule, field=first.field, more=rest)
    err.problems = [first, *rest]
    return err


def _semantic_problems(doc: PolicyDoc, keyring: Keyring, file: str) -> list[PolicyError]:
    out: list[PolicyError] = []

    def bad(msg: str, rule: str | None, field: str | None) -> None:
        out.append(PolicyError(msg, file=file, rule=rule, field=field))

    seen: dict[str, int] = {}
    for i, r in enumerate(doc.rules):
        if r.name in seen:
            bad(f"the name is already used by rule #{seen[r.name] + 1}", r.name, "name")
        seen.setdefault(r.name, i)
        if r.event is None and not r.fields and r.other_fields is None:
            bad("the rule decides nothing: give `event`, `fields` or `other_fields`", r.name, None)
        types: list[str] = list(r.event_types) if r.event_types else sorted(EVENT_FIELDS)
        known = frozenset[str]().union(*(EVENT_FIELDS[t] for t in types))
        for name, act in r.fields.items():
            where = f"fields.{name}"
            if name not in known:
                bad(
                    f"unknown field {name!r} for event types {sorted(types)}; "
                    f"valid fields are {sorted(known)}",
                    r.name,
                    where,
                )
            elif act == "drop":
                bad(
                    "`drop` withholds a whole event, not one field: write `event: drop`, "
                    "or `redact` to withhold the field",
                    r.name,
                    where,
                )
            elif act == "generalize" and name != "location":
                bad("only `location` can be generalized", r.name, where)
            elif act == "pseudonymize" and name == "location":
                bad("a location cannot be pseudonymized: generalize or redact it", r.name, where)
            elif act == "pseudonymize" and name not in keyring.kinds():
                have = sorted(keyring.kinds())
                bad(
                    f"no pseudonymisation key of kind {name!r} in {keyring.source}"
                    + (f" (it has keys for {have})" if have else ""),
                    r.name,
                    where,
                )
    missing = [s for s in SEVERITIES if s not in doc.tlp.by_severity]
    if missing:
        bad(f"no TLP label for severity {missing[0]!r}", None, f"tlp.by_severity.{missing[0]}")
    names: set[str] = set()
    for z in doc.recipients:
        if z.name in names:
            bad("the name is already used by another recipients entry", z.name, "name")
        names.add(z.name)
    return out


def parse_policy(
    data: bytes | str,
    keyring: Keyring,
    *,
    file: str = "<inline>",
    border: BorderLine | None = None,
) -> Policy:
    """A policy from the bytes of a policy file (hashed as given); PolicyError names the file,
    the policy rule and the field of every problem."""
    raw = data.encode() if isinstance(data, str) else data
    sha = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError("not UTF-8 text", file=file) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PolicyError(f"not valid YAML{where}: {getattr(e, 'problem', e)}", file=file) from e
    if not isinstance(doc, dict):
        raise PolicyError(
            "a policy file must be a mapping with id, version, border_zone_km, "
            f"location_precision_m, tlp and rules; got {type(doc).__name__}",
            file=file,
        )
    try:
        model = PolicyDoc.model_validate(doc)
    except ValidationError as e:
        raise _from_validation(e, doc, file) from None
    problems = _semantic_problems(model, keyring, file)
    if problems:
        raise _combine(problems)
    return Policy(model, sha256=sha, keyring=keyring, file=file, border=border)


def load_policy(path: Path | str, keys: Keyring) -> Policy:
    """The policy in a file, hashed (SHA-256 of its bytes) into every alert and audit record."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise PolicyError(f"cannot read the policy file: {e.strerror or e}", file=str(p)) from e
    return parse_policy(raw, keys, file=str(p))


@dataclass(frozen=True, slots=True)
class Reload:
    """The outcome of a reload: the policy in force, whether it changed, and why a new file
    was refused (the old policy then stays in force)."""

    policy: Policy
    changed: bool
    error: PolicyError | None = None


def reload_policy(current: Policy, path: Path | str, keys: Keyring | None = None) -> Reload:
    """Load the file again if its bytes changed; a refused file leaves `current` in force."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        err = PolicyError(f"cannot read the policy file: {e.strerror or e}", file=str(p))
        return Reload(current, False, err)
    if hashlib.sha256(raw).hexdigest() == current.ref.sha256 and keys is None:
        return Reload(current, False)
    try:
        new = parse_policy(raw, keys or current.keyring, file=str(p), border=current.border)
    except PolicyError as e:
        return Reload(current, False, e)
    changed = new.ref != current.ref or new.keyring != current.keyring
    return Reload(new, changed)


def check_policy(paths: Iterable[Path | str], keys: Keyring) -> list[PolicyError]:
    """Every problem of every policy file, for a CI check."""
    out: list[PolicyError] = []
    for p in paths:
        try:
            load_policy(p, keys)
        except PolicyError as e:
            out.extend(e.problems)
    return out
