"""A loopback TCP relay that counts round trips, and names the SQL of each on PostgreSQL connections.

A round trip ("turn") starts when the client sends after the server last spoke: everything a client
pipelines before it waits for an answer is one turn, whatever the protocol. On PostgreSQL the relay
also reads the client's messages (simple Query, Parse, Bind) to list which statements each turn ran,
and answers an SSLRequest itself with "N" so the rest of the conversation stays readable (the
server here has ssl=off anyway). Used only for the short round-trip pass, never under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_QUERY_MESSAGES = frozenset(b"QPBEDSHCF")  # anything that asks the server for work


@dataclass
class Turn:
    at: float  # perf_counter() when the client started this turn
    connection: int
    statements: list[str] = field(default_factory=list)  # SQL executed (Query text or Bind's prepared text)
    messages: set[int] = field(default_factory=set)  # PostgreSQL message types sent in this turn

    @property
    def is_query(self) -> bool:
        """A turn that asked the server for work (not connection setup or authentication)."""
        return bool(self.messages & _QUERY_MESSAGES)


@dataclass
class _Connection:
    id: int
    server_spoke: bool = True
    turn: Turn | None = None
    started: bool = False  # past the startup packet (PostgreSQL)
    buffer: bytearray = field(default_factory=bytearray)
    prepared: dict[bytes, str] = field(default_factory=dict)


class TurnProxy:
    """Relay 127.0.0.1:<port> -> 127.0.0.1:`upstream_port`; `turns` lists every round trip."""

    def __init__(self, upstream_port: int, *, postgres: bool) -> None:
        self.upstream_port = upstream_port
        self.postgres = postgres
        self.turns: list[Turn] = []
        self.connections = 0
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = _Connection(next(self._ids))
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_writer.close()
            return
        upward = asyncio.current_task()
        downward = asyncio.create_task(self._server_to_client(connection, server_reader, client_writer))
        self._tasks.add(downward)
        if upward is not None:
            self._tasks.add(upward)
        try:
            await self._client_to_server(connection, client_reader, server_writer, client_writer)
        finally:
            downward.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await downward
            for writer in (server_writer, client_writer):
                writer.close()
            self._tasks.discard(downward)
            if upward is not None:
                self._tasks.discard(upward)

    async def _server_to_client(self, connection: _Connection, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            connection.server_spoke = True
            writer.write(data)
            await writer.drain()
        writer.close()

    async def _client_to_server(self, connection: _Connection, reader: asyncio.StreamReader,
                                server: asyncio.StreamWriter, client: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if connection.server_spoke or connection.turn is None:
                    connection.turn = Turn(time.perf_counter(), connection.id)
                    self.turns.append(connection.turn)
                    connection.server_spoke = False
                if not self.postgres:
                    server.write(data)
                else:
                    self._postgres(connection, data, server, client)
                await server.drain()

    def _postgres(self, connection: _Connection, data: bytes, server: asyncio.StreamWriter,
                  client: asyncio.StreamWriter) -> None:
        buffer = connection.buffer
        buffer += data
        if not connection.started:
            while len(buffer) >= 8 and not connection.started:
                length = int.from_bytes(buffer[:4], "big")
                if len(buffer) < length:
                    return
                packet, code = bytes(buffer[:length]), int.from_bytes(buffer[4:8], "big")
                del buffer[:length]
                if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                    client.write(b"N")  # no encryption: the server would refuse it here anyway
                    connection.server_spoke = True
                else:
                    server.write(packet)
                    connection.started = True
            if not connection.started:
                return
            if buffer:
                server.write(bytes(buffer))
        else:
            server.write(data)
        self._parse(connection)

    @staticmethod
    def _parse(connection: _Connection) -> None:
        buffer, turn = connection.buffer, connection.turn
        while len(buffer) >= 5:
            length = int.from_bytes(buffer[1:5], "big")
            if len(buffer) < 1 + length:
                return
            kind, payload = buffer[0], bytes(buffer[5:1 + length])
            del buffer[:1 + length]
            if turn is None:
                continue
            turn.messages.add(kind)
            if kind == ord("Q"):
                turn.statements.append(payload.rstrip(b"\0").decode(errors="replace"))
            elif kind == ord("P"):
                name, _, rest = payload.partition(b"\0")
                connection.prepared[name] = rest.partition(b"\0")[0].decode(errors="replace")
            elif kind == ord("B"):
                statement = payload.split(b"\0", 2)[1]
                turn.statements.append(connection.prepared.get(statement, "<unknown prepared statement>"))
