"""GetFluxly Python SDK: send product events to a GetFluxly server (arrives with the ingest issue)."""

__version__ = "0.1.0"
