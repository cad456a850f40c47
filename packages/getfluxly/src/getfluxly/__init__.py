"""GetFluxly Python SDK: send product events to a GetFluxly server.

Arrives with the ingest issue; this is a placeholder package.
"""

__version__ = "0.1.0"
