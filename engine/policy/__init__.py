"""The sharing policy: what of whose data each partner receives, field by field.

- `keys`: pseudonymisation keys (`Keyring`) and the pseudonyms made with them;
- `model`: the policy file (`rules/policy.yaml`) as pydantic models;
- `decisions`: `Policy`, the action on a field of an event from one origin for one destination;
- `loading`: `load_policy`, `reload_policy`, and errors naming the file, policy rule and field.
"""

from engine.policy.decisions import DEFAULT_SHOW, DEFAULT_WITHHOLD, Policy, generalize_location
from engine.policy.keys import (
    MIN_KEY_BYTES,
    Keyring,
    PseudonymKey,
    normalize_identifier,
    pseudonym,
    same_subject,
)
from engine.policy.loading import Reload, check_policy, load_policy, parse_policy, reload_policy
from engine.policy.model import PolicyDoc, PolicyRule

__all__ = [
    "DEFAULT_SHOW",
    "DEFAULT_WITHHOLD",
    "MIN_KEY_BYTES",
    "Keyring",
    "Policy",
    "PolicyDoc",
    "PolicyRule",
    "PseudonymKey",
    "Reload",
    "check_policy",
    "generalize_location",
    "load_policy",
    "normalize_identifier",
    "parse_policy",
    "pseudonym",
    "reload_policy",
    "same_subject",
]
