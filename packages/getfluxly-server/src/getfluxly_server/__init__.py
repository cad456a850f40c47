"""GetFluxly server: the self-hosted lifecycle email platform (arrives with the server issues)."""

__version__ = "0.1.0"
