"""GetFluxly server: the self-hosted lifecycle email platform.

Arrives with the server issues; this is a placeholder package.
"""

__version__ = "0.1.0"
