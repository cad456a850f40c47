"""The package version, where FluxMail 0.3.x kept it (``fluxmail._version``)."""

from __future__ import annotations

__all__ = [
    "__commit_id__",
    "__version__",
    "__version_tuple__",
    "commit_id",
    "version",
    "version_tuple",
]

__version__ = version = "1.0.0"
__version_tuple__ = version_tuple = (1, 0, 0)
#: 0.3.x recorded the git commit here; a release built from the sdist has none.
__commit_id__ = commit_id = None
