"""Minimal Django settings for FluxMail's Django backend tests and django-stubs' mypy plugin.

Use with ``DJANGO_SETTINGS_MODULE=flux_testkit.django_settings`` (``testkit`` must be importable).
No apps and no databases: the backend only needs ``django.conf.settings`` and ``django.core.mail``.
Tests point the backend at an :class:`flux_testkit.smtpd.SMTPTestServer` by overriding the
``EMAIL_*`` settings (``django.test.override_settings``).
"""

from __future__ import annotations

# Never used outside tests; Django refuses to start without one.
SECRET_KEY = "flux-testkit-insecure-secret-key-for-tests-only"

EMAIL_BACKEND = "fluxmail.backends.django.FluxMailBackend"

USE_TZ = True

INSTALLED_APPS: list[str] = []

DATABASES: dict[str, dict[str, str]] = {}
