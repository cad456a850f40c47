"""Instructions per message of FluxMail's everyday paths, counted by callgrind.

``python bench/fluxmail_instructions.py [-n N] [--paths create,create-html,send,bulk,render,pool]``

A figure that does not depend on the machine's load: each path runs in a fresh interpreter
under ``valgrind --tool=callgrind`` twice, sending ``WARMUP`` messages then N more, and
sending ``WARMUP`` only; the difference divided by N is the client's instructions per
message (imports, start-up and the connection's opening cancel out). The connection talks
to an in-process fake socket that answers as Postfix's ``smtp-sink`` does (PIPELINING,
SIZE, 8BITMIME, ENHANCEDSTATUSCODES, DSN), so the kernel is out of it; the fake's own
instructions are counted too, the same in every run (compare paths and commits, not a path
with ``smtp-source``).

Paths (the workload's 2 KB message, :mod:`workload`):

* ``create``: ``create()`` alone, plain text;
* ``create-html``: ``create()`` alone, HTML + plain alternative;
* ``send``: ``create().send()`` in a ``with`` block, one connection;
* ``bulk``: ``BulkSender(m).send_batch([...], progress=False)``, one connection;
* ``render``: ``MessageTemplate.render`` alone (the pool's builder);
* ``pool``: ``MessageTemplate.render`` then ``async_pool(max_connections=20).send_many``, the
  ``fluxmail-pool`` client of ``smtp_throughput.py``. The 20 connections are asyncio
  transports over the same fake sink (:class:`FakeTransport`): the event loop, the tasks,
  futures and the protocol callbacks run as they do on sockets; the selector and the system
  calls are out of it (each ``write`` is answered on the loop's next turn);
* ``pool-uvloop``: the same on uvloop's event loop (``uvloop.run``).

stdout: one line per path, thousands of instructions (kIr) per message. Needs valgrind; the
worker mode (``--worker PATH COUNT``) is what runs under it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from workload import (
    BODY_FORMAT,
    BODY_TEMPLATE,
    SENDER,
    SUBJECT_FORMAT,
    SUBJECT_TEMPLATE,
    name,
    recipient,
)

PATHS = ("create", "create-html", "send", "bulk", "render", "pool", "pool-uvloop")
POOL_CONNECTIONS = 20
#: Enough messages for every one of the pool's connections to open (a batch of 100 each).
POOL_WARMUP = POOL_CONNECTIONS * 100
WARMUP = 20
HTML_FORMAT = "<html><body><pre>{body}</pre></body></html>"
EHLO = (
    b"250-sink.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n250 DSN\r\n"
)


class FakeSink:
    """A socket stand-in answering as smtp-sink: 250 to every command, 354 to DATA, 250 to
    the end of a message's content (found by its ``CRLF.CRLF``), 221 to QUIT."""

    def __init__(self) -> None:
        self._out = bytearray(b"220 sink.example ESMTP\r\n")
        self._in_data = False

    def setsockopt(self, *args: Any) -> None:
        pass

    def settimeout(self, value: float | None) -> None:
        pass

    def gettimeout(self) -> float | None:
        return None

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        start = 0
        if self._in_data:
            end = data.index(b"\r\n.\r\n") + 5 if not data.startswith(b".\r\n") else 3
            self._out += b"250 2.0.0 Ok: queued\r\n"
            self._in_data = False
            start = end
        while start < len(data):
            end = data.index(b"\r\n", start) + 2
            verb = data[start : start + 4].upper()
            if verb == b"DATA":
                self._out += b"354 End data with <CR><LF>.<CR><LF>\r\n"
                self._in_data = True
                rest = data[end:]
                if rest:
                    self.sendall(rest)
                return
            if verb == b"EHLO":
                self._out += EHLO
            elif verb == b"QUIT":
                self._out += b"221 Bye\r\n"
            else:
                self._out += b"250 2.1.0 Ok\r\n"
            start = end

    def send(self, data: bytes) -> int:
        self.sendall(data)
        return len(data)

    def recv(self, size: int) -> bytes:
        chunk = bytes(self._out[:size])
        del self._out[:size]
        return chunk

    def recv_into(self, buffer: Any, size: int = 0) -> int:
        chunk = self.recv(size or len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


class FakeTransport(asyncio.Transport):
    """An asyncio transport over a :class:`FakeSink`: what is written is answered on the
    event loop's next turn, through the protocol's ``data_received``, as a socket's replies
    would be after the selector saw them."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self._protocol = protocol
        self._sink = FakeSink()
        self._loop = asyncio.get_running_loop()
        self._closing = False
        protocol.connection_made(self)
        self._answer()

    def _answer(self) -> None:
        out = self._sink.recv(1 << 20)
        if out:
            self._loop.call_soon(self._deliver, out)

    def _deliver(self, data: bytes) -> None:
        """Hand ``data`` to the protocol as the loop would: into a buffered protocol's own
        buffer (``get_buffer``/``buffer_updated``), or to ``data_received``."""
        protocol = self._protocol
        if not isinstance(protocol, asyncio.BufferedProtocol):
            protocol.data_received(data)
            return
        while data:
            buffer = memoryview(protocol.get_buffer(len(data)))
            size = min(len(buffer), len(data))
            buffer[:size] = data[:size]
            protocol.buffer_updated(size)
            data = data[size:]

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._sink.sendall(bytes(data))
        self._answer()

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._loop.call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


async def fake_create_connection(
    factory: Any, *args: Any, **kwargs: Any
) -> tuple[asyncio.Transport, asyncio.Protocol]:
    """``loop.create_connection`` answered by a :class:`FakeTransport`."""
    protocol = factory()
    return FakeTransport(protocol), protocol


def _args(i: int, html: bool) -> dict[str, Any]:
    text = BODY_FORMAT.format(name=name(i), n=i)
    args: dict[str, Any] = {
        "subject": SUBJECT_FORMAT.format(name=name(i)),
        "recipients": [recipient(i)],
        "body": HTML_FORMAT.format(body=text) if html else text,
    }
    if html:
        args.update(html_body=True, plain_body=text)
    return args


def worker(path: str, count: int) -> None:
    """Send WARMUP + ``count`` messages on ``path`` (run under callgrind by :func:`main`)."""
    import fluxmail.transport.base
    import fluxmail.transport.sync
    from fluxmail import BulkSender, FluxMail

    def fake_connect(settings: object) -> FakeSink:
        return FakeSink()

    # The sync shell looks the connector up in its own module.
    fluxmail.transport.sync.connect_tcp = fake_connect  # type: ignore[assignment]
    fluxmail.transport.base.connect_tcp = fake_connect  # type: ignore[assignment]
    mailer = FluxMail("smtp", "127.0.0.1", port=2525, sender=SENDER, local_hostname="bench")
    total = WARMUP + count
    if path in ("create", "create-html"):
        html = path == "create-html"
        inputs = [_args(i, html) for i in range(total)]
        for args in inputs:
            mailer.create(**args)
    elif path == "send":
        inputs = [_args(i, False) for i in range(total)]
        with mailer:
            for args in inputs:
                mailer.create(**args).send()
                assert mailer.last_result is not None
                assert mailer.last_result.reply.code == 250
    elif path == "bulk":
        sender = BulkSender(mailer)
        with mailer:
            report = sender.send_batch([_args(i, False) for i in range(WARMUP)], progress=False)
            assert report["sent"] == WARMUP, report
            if count:
                batch = [_args(i, False) for i in range(count)]
                report = sender.send_batch(batch, progress=False)
                assert report["sent"] == count, report
    elif path in ("render", "pool", "pool-uvloop"):
        pool_worker(path, count)
    else:
        raise SystemExit(f"unknown path {path!r}")


def pool_worker(path: str, count: int) -> None:
    """The ``render`` path (WARMUP messages, then ``count`` more) and the ``pool`` paths
    (POOL_WARMUP, then ``count``)."""
    from fluxmail import FluxMail, MessageTemplate, SendResult

    tpl = MessageTemplate(sender=SENDER, subject=SUBJECT_TEMPLATE, text=BODY_TEMPLATE)

    def render(start: int, stop: int) -> list[Any]:
        return [tpl.render(recipient(i), name=name(i), n=i) for i in range(start, stop)]

    if path == "render":
        render(0, WARMUP + count)
        return
    mailer = FluxMail("smtp", "127.0.0.1", port=2525, local_hostname="bench")

    async def send(start: int, stop: int) -> None:
        asyncio.get_running_loop().create_connection = fake_create_connection  # type: ignore[method-assign]
        async with mailer.async_pool(max_connections=POOL_CONNECTIONS) as pool:
            results = await pool.send_many(render(start, stop))
        assert all(isinstance(r, SendResult) and r.reply.code == 250 for r in results), results

    # One send_many either way: the base run's first batches already open every connection
    # (each worker takes a batch of 100 before it opens one), so the difference is the
    # messages alone.
    if path == "pool-uvloop":
        import uvloop

        uvloop.run(send(0, POOL_WARMUP + count))
    else:
        asyncio.run(send(0, POOL_WARMUP + count))


_COLLECTED = re.compile(rb"Collected\s*:\s*(\d+)")


def instructions(path: str, count: int) -> int:
    """The instructions callgrind counted for a worker run of ``count`` messages."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not installed")
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    argv = [
        valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, str(Path(__file__)), "--worker", path, str(count),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, env=env, check=False)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(done.stderr.decode(errors="replace")[-2000:])
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=300, help="messages counted (default 300)")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--worker", nargs=2, metavar=("PATH", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]))
        return 0
    for path in args.paths.split(","):
        if path not in PATHS:
            raise SystemExit(f"unknown path {path!r}; choose from {', '.join(PATHS)}")
        base = instructions(path, 0)
        full = instructions(path, args.n)
        print(f"{path:12} {(full - base) / args.n / 1000:8.1f} kIr/message", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
