"""A process-wide throwaway certificate authority for TLS tests.

One trustme CA and one server certificate (valid for ``localhost`` and ``127.0.0.1``) are
created lazily on first use and shared by every test in the process, because generating keys
is the slow part. Each helper returns a *new* :class:`ssl.SSLContext`, so a test may mutate
its context without affecting others.
"""

from __future__ import annotations

import atexit
import shutil
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import trustme

__all__ = ["SERVER_NAMES", "ca", "ca_pem_path", "client_ssl_context", "server_ssl_context"]

#: Names the server certificate is valid for (DNS name and IP address SAN).
SERVER_NAMES = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class _Bundle:
    ca: trustme.CA
    server_cert: trustme.LeafCert


_lock = threading.Lock()
_bundle: _Bundle | None = None
_ca_pem: Path | None = None


def _get_bundle() -> _Bundle:
    global _bundle
    with _lock:  # servers start from several threads; create the CA exactly once
        if _bundle is None:
            authority = trustme.CA()
            _bundle = _Bundle(authority, authority.issue_cert(*SERVER_NAMES))
        return _bundle


def ca() -> trustme.CA:
    """The shared trustme CA, for tests that need to issue extra certificates."""
    return _get_bundle().ca


def server_ssl_context() -> ssl.SSLContext:
    """A new server-side context presenting the ``localhost``/``127.0.0.1`` certificate.

    It does not request client certificates (``verify_mode == CERT_NONE``).
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _get_bundle().server_cert.configure_cert(ctx)
    return ctx


def client_ssl_context() -> ssl.SSLContext:
    """A new client-side context that trusts only the test CA.

    Certificate and hostname verification stay on (``CERT_REQUIRED``, ``check_hostname``), so
    connecting as ``127.0.0.1`` or ``localhost`` succeeds and any other name fails.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    _get_bundle().ca.configure_trust(ctx)
    return ctx


def ca_pem_path() -> Path:
    """Path of a PEM file holding the CA certificate (e.g. for a ``--cafile`` option).

    Written once per process into a private temporary directory that is removed at exit.
    Treat it as read-only.
    """
    global _ca_pem
    bundle = _get_bundle()
    with _lock:
        if _ca_pem is None:
            directory = Path(tempfile.mkdtemp(prefix="flux-testkit-ca-"))
            atexit.register(shutil.rmtree, directory, ignore_errors=True)
            path = directory / "ca.pem"
            bundle.ca.cert_pem.write_to_path(path)
            _ca_pem = path
        return _ca_pem
