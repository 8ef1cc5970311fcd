"""Pseudonymisation keys from files and environment text, the keys CLI (generate, rotate,
retire), and the ACL plan. No broker."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from engine.errors import PolicyError
from engine.policy import same_subject
from streams import keys as K
from streams.settings import Settings
from streams.tools.acls import acl_plan


def test_keys_come_from_a_file_or_environment_text(tmp_path: Path):
    f = tmp_path / "keys.json"
    K.write_keys(f, K.generate(("plate",), key_id="k1"))
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    from_file = K.keyring_from_sources(f, None)
    from_env = K.keyring_from_sources(None, SecretStr(f.read_text()))
    assert from_file.pseudonyms("plate", "AB-1", "MX") == from_env.pseudonyms("plate", "ab1", "MX")
    assert from_env.source == "environment variable FUSION_PSEUDONYM_KEYS"
    assert K.keyring_from_sources(None, None).kinds() == frozenset()
    with pytest.raises(PolicyError, match="given twice"):
        K.keyring_from_sources(f, "{}")
    with pytest.raises(PolicyError, match=r"missing\.json: cannot read the keys file"):
        K.keyring_from_sources(tmp_path / "missing.json", None)


def test_keys_cli_rotates_with_a_window_and_retires(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    f = tmp_path / "keys.json"
    assert K.main(["generate", str(f), "--key-id", "k2026a", "--kinds", "plate,person_ref"]) == 0
    assert K.main(["generate", str(f)]) == 1  # refuses to overwrite
    assert K.main(["generate", str(f), "--if-missing"]) == 0
    old = K.keyring_from_sources(f, None)
    assert K.main(["rotate", str(f), "--key-id", "k2026b"]) == 0
    window = K.keyring_from_sources(f, None)
    assert [k.id for k in window.active("plate")] == ["k2026b", "k2026a"]
    assert K.main(["retire", str(f)]) == 0
    after = K.keyring_from_sources(f, None)
    assert [k.id for k in after.active("person_ref")] == ["k2026b"]
    p_old, p_win, p_new = (r.pseudonyms("plate", "XKZ-481", "US") for r in (old, window, after))
    assert same_subject(p_old, p_win) and same_subject(p_win, p_new)
    assert not same_subject(p_old, p_new)
    out = capsys.readouterr().out
    assert "plate        primary k2026b (previous: k2026a)" in out
    assert json.loads(f.read_text())["plate"][0]["id"] == "k2026b"
    assert "secret" not in out


def test_new_key_ids_are_valid_and_distinct():
    ids = {K.new_key_id() for _ in range(20)}
    assert len(ids) > 1 and all(i.startswith("k") and len(i) == 14 for i in ids)
    K.generate(key_id=K.new_key_id())  # loads: write_keys would refuse otherwise


def test_acl_plan_gives_each_country_its_own_alerts_and_producers_the_inputs():
    s = Settings(partners=["US", "MX"])
    plan = {str(g) for g in acl_plan(s)}
    assert "User:ops-us READ topic alerts.us" in plan
    assert "User:ops-mx READ topic alerts.mx" in plan
    assert "User:ops-mx READ group ops-mx*" in plan
    assert "User:producer-us WRITE topic events.detections" in plan
    assert not any(g.startswith("User:ops-mx") and "alerts.us" in g for g in plan)
    assert not any(g.startswith("User:producer") and "alerts." in g for g in plan)
    assert not any(g.startswith("User:fusion") for g in plan)  # a super user
    # its triage: reads its own two topics, writes only its own actions
    assert {
        "User:ops-mx READ topic triage.mx",
        "User:ops-mx WRITE topic triage.mx",
        "User:ops-mx READ topic triage.mx.inbound",
    } <= plan
    assert not any(g.startswith("User:ops-mx") and ".us" in g for g in plan)
    assert not any(g.startswith("User:ops-us WRITE") and "inbound" in g for g in plan)
    assert "User:witness-mx READ topic audit.log.checkpoints" in plan
    assert "User:witness-mx WRITE topic audit.log.cosignatures" in plan
    assert not any(g.startswith("User:witness") and "audit.sharing" in g for g in plan)
    assert "User:ops-us READ topic audit.log.cosignatures" in plan
    assert not any(g.startswith("User:ops") and "audit.sharing" in g for g in plan)
    assert len(plan) == 2 * (5 + len(s.input_topics) + 3 + 4)
    assert "User:producer-mx WRITE topic events.tips" in plan
