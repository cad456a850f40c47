"""GetFluxly Python SDK: send product events to a GetFluxly server.

::

    from getfluxly import Client

    client = Client("gflux_secret_...", api_host="http://127.0.0.1:8000")
    client.identify(external_id="user_42", traits={"email": "ada@example.com"})
    client.track("signed_up", external_id="user_42", properties={"plan": "pro"})
    client.shutdown()  # also runs at exit

:class:`Client` (threads) and :class:`AsyncClient` (asyncio) queue events and send them in
batches from the background; every failure is a :class:`GFluxError`.
"""

from getfluxly._version import __version__
from getfluxly.aclient import AsyncClient
from getfluxly.client import Client
from getfluxly.errors import GFluxError

__all__ = ["AsyncClient", "Client", "GFluxError", "__version__"]
