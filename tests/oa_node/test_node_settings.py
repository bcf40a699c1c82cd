"""Configuration of an OA node from MCN_OA_* variables, validated at start."""

from __future__ import annotations

import pytest

from mycarenet_core.config import load
from oa_node.settings import OaSettings


def test_defaults_derive_the_database_from_the_insurer_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCN_OA_INSURER_CODE", "300")
    monkeypatch.setenv("MCN_OA_INSECURE", "true")
    settings = load(OaSettings)
    assert settings.database_url == "sqlite+aiosqlite:///var/oa-300.db"
    assert settings.hub_intake_target is None
    assert settings.ehealth_target is None  # no cadastre follower: reference data from the back office only
    assert settings.relay_interval == 30.0  # a safety timeout: every commit of outbox rows wakes the relay


def test_the_cadastre_follower_is_configured_by_mcn_oa_ehealth_target(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MCN_OA_INSURER_CODE", "300")
    monkeypatch.setenv("MCN_OA_INSECURE", "true")
    monkeypatch.setenv("MCN_OA_EHEALTH_TARGET", "ehealth:7401")
    assert load(OaSettings).ehealth_target == "ehealth:7401"


@pytest.mark.parametrize("code", ["", "123", "750"])
def test_an_unknown_or_missing_insurer_code_fails_fast(monkeypatch: pytest.MonkeyPatch, code: str) -> None:
    monkeypatch.setenv("MCN_OA_INSECURE", "true")
    if code:
        monkeypatch.setenv("MCN_OA_INSURER_CODE", code)
    else:
        monkeypatch.delenv("MCN_OA_INSURER_CODE", raising=False)
    with pytest.raises(SystemExit) as stopped:
        load(OaSettings)
    assert stopped.value.code == 2


def test_the_166_limit_is_each_insurers_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCN_OA_INSURER_CODE", "300")
    monkeypatch.setenv("MCN_OA_INSECURE", "true")
    assert load(OaSettings).max_notification_delay_days == 7  # the production service's rule
    monkeypatch.setenv("MCN_OA_MAX_NOTIFICATION_DELAY_DAYS", "30")
    assert load(OaSettings).max_notification_delay_days == 30
    monkeypatch.setenv("MCN_OA_MAX_NOTIFICATION_DELAY_DAYS", "-1")
    with pytest.raises(SystemExit):
        load(OaSettings)
