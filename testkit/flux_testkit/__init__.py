"""Shared test helpers for the Flux workspace (real peers on loopback, never mocks inside).

- :mod:`flux_testkit.smtpd`: a real SMTP server (aiosmtpd) with fault injection.
- :mod:`flux_testkit.certs`: a throwaway CA and TLS contexts for ``localhost``/``127.0.0.1``.
- :mod:`flux_testkit.gfserver`: the GetFluxly server as a subprocess, on SQLite or PostgreSQL.
- :mod:`flux_testkit.provider_fakes`: local stand-ins for the email providers' HTTP APIs.
- :mod:`flux_testkit.ingest_fake`: a local stand-in for the ingest API, for the SDK's tests.
- :mod:`flux_testkit.netguard`: name resolution that fails locally (no query leaves the host).
- :mod:`flux_testkit.pytest_fixtures`: pytest fixtures around the above (a global plugin).
- :mod:`flux_testkit.django_settings`: minimal Django settings for the Django backend tests.
"""
