"""What endpoints get from the composition root (stored on ``app.state`` at start-up)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from getfluxly_server.crypto import Keyring
from getfluxly_server.delivery.base import BuildContext
from getfluxly_server.settings import Settings
from getfluxly_server.storage.db import Database


def database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def settings(request: Request) -> Settings:
    value: Settings = request.app.state.settings
    return value


def keyring(request: Request) -> Keyring:
    return settings(request).keyring


def build_context(request: Request) -> BuildContext:
    value: BuildContext = request.app.state.build_context
    return value


#: The database, as an endpoint parameter: ``db: DB``.
DB = Annotated[Database, Depends(database)]
