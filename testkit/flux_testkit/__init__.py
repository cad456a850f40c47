"""Shared test helpers for the Flux workspace.

- :mod:`flux_testkit.smtpd`: a real SMTP server (aiosmtpd) with fault injection.
- :mod:`flux_testkit.certs`: a throwaway CA and TLS contexts for ``localhost``/``127.0.0.1``.
- :mod:`flux_testkit.pytest_fixtures`: pytest fixtures around the two above.
- :mod:`flux_testkit.django_settings`: minimal Django settings for the Django backend tests.
"""
