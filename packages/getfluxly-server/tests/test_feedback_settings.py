"""Feedback's settings (``GETFLUXLY_SOFT_BOUNCE_*``, ``GETFLUXLY_SNS_*``): defaults, values,
and each bad value named at boot; and the SNS host rule they feed."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from getfluxly_server.crypto import Keyring
from getfluxly_server.domain.feedback.config import config_of
from getfluxly_server.domain.feedback.sns import SnsPolicy
from getfluxly_server.settings import SNS_HOSTS, Settings, SettingsError

KEY = {"GETFLUXLY_ENCRYPTION_KEYS": Keyring.generate()}


def test_defaults() -> None:
    config = config_of(Settings.from_env(KEY))
    assert (config.rules.soft_bounce_limit, config.rules.soft_bounce_window) == (
        3, timedelta(days=30),
    )  # fmt: skip
    assert (config.sns.cert_hosts, config.sns.subscribe_hosts, config.sns.ca_file) == (
        SNS_HOSTS, SNS_HOSTS, None,
    )  # fmt: skip


def test_values_are_read(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("x")
    settings = Settings.from_env({
        **KEY, "GETFLUXLY_SOFT_BOUNCE_LIMIT": "5", "GETFLUXLY_SOFT_BOUNCE_WINDOW_DAYS": "7.5",
        "GETFLUXLY_SNS_CERT_HOSTS": r"127\.0\.0\.1:\d+", "GETFLUXLY_SNS_CA_FILE": str(bundle),
    })  # fmt: skip
    config = config_of(settings)
    assert config.rules.soft_bounce_limit == 5
    assert config.rules.soft_bounce_window == timedelta(days=7.5)
    assert config.sns.ca_file == bundle
    assert config.sns.allows("https://127.0.0.1:8443/x.pem", config.sns.cert_hosts)


def test_bad_values_are_each_named() -> None:
    env = {
        "GETFLUXLY_SOFT_BOUNCE_LIMIT": "0", "GETFLUXLY_SOFT_BOUNCE_WINDOW_DAYS": "soon",
        "GETFLUXLY_SNS_CERT_HOSTS": "sns(", "GETFLUXLY_SNS_CA_FILE": "/nowhere/ca.pem",
    }  # fmt: skip
    with pytest.raises(SettingsError) as info:
        Settings.from_env({**KEY, **env})
    assert len(info.value.problems) == 4
    for name in env:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem", True),
        ("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem", True),
        ("http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem", False),
        ("https://sns.us-east-1.amazonaws.com.evil.example/x.pem", False),
        ("https://evil.example/sns.us-east-1.amazonaws.com/x.pem", False),
        ("https://user@sns.us-east-1.amazonaws.com/x.pem", False),
        ("https://sns.us-east-1.amazonaws.com:8443/x.pem", False),
        ("https://s3.amazonaws.com/x.pem", False),
        ("not a url", False),
    ],
)
def test_only_amazon_sns_hosts_are_allowed_by_default(url: str, allowed: bool) -> None:
    policy = SnsPolicy(cert_hosts=SNS_HOSTS, subscribe_hosts=SNS_HOSTS)
    assert policy.allows(url, SNS_HOSTS) is allowed
