"""Settings from GETFLUXLY_* variables: defaults, and every problem reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from getfluxly_server.crypto import Keyring
from getfluxly_server.settings import Settings, SettingsError


def test_defaults_with_a_key() -> None:
    settings = Settings.from_env({"GETFLUXLY_ENCRYPTION_KEYS": Keyring.generate("a")})
    assert settings.database_url == "sqlite:///.getfluxly/getfluxly.db"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.multi_tenant_guard is False
    assert settings.keyring.primary == "a"


def test_postgres_urls_use_psycopg() -> None:
    env = {
        "GETFLUXLY_ENCRYPTION_KEYS": Keyring.generate(),
        "GETFLUXLY_DATABASE_URL": "postgres://u:p@h/db",
    }
    assert Settings.from_env(env).database_url == "postgresql+psycopg://u:p@h/db"


def test_every_problem_is_reported_together() -> None:
    env = {
        "GETFLUXLY_PORT": "eighty",
        "GETFLUXLY_PUBLIC_URL": "ftp://x",
        "GETFLUXLY_MULTI_TENANT_GUARD": "maybe",
        "GETFLUXLY_JOB_LEASE_SECONDS": "-3",
        "GETFLUXLY_LOG_LEVEL": "LOUD",
    }
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    text = str(info.value)
    for name in (*env, "GETFLUXLY_ENCRYPTION_KEYS"):
        assert name in text
    assert len(info.value.problems) == 6


def test_bad_key_is_named_without_echoing_it() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"GETFLUXLY_ENCRYPTION_KEYS": "a:c2hvcnQ="})
    assert "GETFLUXLY_ENCRYPTION_KEYS" in str(info.value)
    assert "c2hvcnQ=" not in str(info.value)


def test_dev_mode_makes_its_own_key(tmp_path: Path) -> None:
    settings = Settings.from_env({}, dev=True, data_dir=tmp_path)
    assert settings.dev
    assert (tmp_path / "encryption.key").exists()
    assert settings.database_url == f"sqlite:///{tmp_path.as_posix()}/getfluxly.db"


def test_limit_settings_are_read_and_checked() -> None:
    """The request-limit settings of issue 10 (findings 1 and 5): read, and refused at boot
    when they make no sense, each naming its variable."""
    key = Keyring.generate()
    settings = Settings.from_env(
        {
            "GETFLUXLY_ENCRYPTION_KEYS": key,
            "GETFLUXLY_MAX_BODY_BYTES": "2097152",
            "GETFLUXLY_PUBLISHABLE_RATE_LIMIT_PER_SECOND": "5",
            "GETFLUXLY_PUBLISHABLE_RATE_LIMIT_BURST": "20",
            "GETFLUXLY_AUTH_FAILURE_RATE_LIMIT_PER_SECOND": "0.5",
            "GETFLUXLY_AUTH_FAILURE_RATE_LIMIT_BURST": "10",
            "GETFLUXLY_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.7,::1",
        }
    )
    assert settings.max_body_bytes == 2 * 1024 * 1024
    assert (settings.publishable_rate_per_second, settings.publishable_rate_burst) == (5.0, 20)
    assert (settings.auth_failure_rate_per_second, settings.auth_failure_rate_burst) == (0.5, 10)
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "192.168.1.7/32", "::1/128"]
    assert Settings.from_env({"GETFLUXLY_ENCRYPTION_KEYS": key}).trusted_proxies == ()

    bad = {
        "GETFLUXLY_ENCRYPTION_KEYS": key,
        "GETFLUXLY_MAX_BODY_BYTES": "1000",  # below the ingest batch's own 256 KB
        "GETFLUXLY_PUBLISHABLE_RATE_LIMIT_PER_SECOND": "0",
        "GETFLUXLY_PUBLISHABLE_RATE_LIMIT_BURST": "many",
        "GETFLUXLY_AUTH_FAILURE_RATE_LIMIT_PER_SECOND": "-1",
        "GETFLUXLY_AUTH_FAILURE_RATE_LIMIT_BURST": "0",
        "GETFLUXLY_TRUSTED_PROXIES": "10.0.0.0/8, proxy.internal",
    }
    with pytest.raises(SettingsError) as info:
        Settings.from_env(bad)
    assert len(info.value.problems) == 6
    for name in bad:
        if name != "GETFLUXLY_ENCRYPTION_KEYS":
            assert name in str(info.value)
    assert "proxy.internal" in str(info.value)


def test_job_backoff_cap_and_retention() -> None:
    key = {"GETFLUXLY_ENCRYPTION_KEYS": Keyring.generate()}
    defaults = Settings.from_env(key)
    assert (defaults.job_backoff_cap_seconds, defaults.job_retention_days) == (600.0, 7.0)
    chosen = Settings.from_env(
        {**key, "GETFLUXLY_JOB_BACKOFF_CAP_SECONDS": "30", "GETFLUXLY_JOB_RETENTION_DAYS": "0.5"}
    )
    assert (chosen.job_backoff_cap_seconds, chosen.job_retention_days) == (30.0, 0.5)
    bad = {**key, "GETFLUXLY_JOB_BACKOFF_CAP_SECONDS": "0", "GETFLUXLY_JOB_RETENTION_DAYS": "-1"}
    with pytest.raises(SettingsError) as info:
        Settings.from_env(bad)
    assert len(info.value.problems) == 2
    assert "GETFLUXLY_JOB_BACKOFF_CAP_SECONDS" in str(info.value)
    assert "GETFLUXLY_JOB_RETENTION_DAYS" in str(info.value)


ENV = {"GETFLUXLY_ENCRYPTION_KEYS": Keyring.generate("a")}


def test_tracking_and_dns_resolver_settings() -> None:
    defaults = Settings.from_env(ENV)
    assert (defaults.tracking_scanner_seconds, defaults.dns_resolver) == (5.0, None)
    for raw, expected in (
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("10.0.0.2", ("10.0.0.2", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("::1", ("::1", 53)),
    ):
        settings = Settings.from_env({**ENV, "GETFLUXLY_DNS_RESOLVER": raw})
        assert settings.dns_resolver == expected, raw
    seconds = Settings.from_env({**ENV, "GETFLUXLY_TRACKING_SCANNER_SECONDS": "0"})
    assert seconds.tracking_scanner_seconds == 0.0
    for raw in ("dns.example.com", "127.0.0.1:0", "127.0.0.1:99999", "[::1", "1.2.3.4:x"):
        with pytest.raises(SettingsError) as raised:
            Settings.from_env({**ENV, "GETFLUXLY_DNS_RESOLVER": raw})
        assert "GETFLUXLY_DNS_RESOLVER" in str(raised.value), raw
    with pytest.raises(SettingsError, match="GETFLUXLY_TRACKING_SCANNER_SECONDS"):
        Settings.from_env({**ENV, "GETFLUXLY_TRACKING_SCANNER_SECONDS": "-1"})


def test_bounce_listen_takes_host_and_port() -> None:
    for raw, expected in (
        ("127.0.0.1:25", ("127.0.0.1", 25)),
        ("[::]:2525", ("::", 2525)),
        ("bounces.internal:25", ("bounces.internal", 25)),
    ):
        settings = Settings.from_env({**ENV, "GETFLUXLY_BOUNCE_LISTEN": raw})
        assert settings.bounce_listen == expected, raw
    for raw in ("127.0.0.1", "[::]", ":25", "host:x", "[::1]x", "a:b:c:25", "h:70000"):
        with pytest.raises(SettingsError) as raised:
            Settings.from_env({**ENV, "GETFLUXLY_BOUNCE_LISTEN": raw})
        assert "GETFLUXLY_BOUNCE_LISTEN" in str(raised.value), raw
