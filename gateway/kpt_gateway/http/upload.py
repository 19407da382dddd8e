"""The `file` part of a multipart/form-data upload as an async stream of chunks.

The body is parsed while it arrives (python-multipart's push parser), so Api.upload enforces the
size limit and hashes as bytes come in: nothing is spooled whole before the checks run.
"""

from __future__ import annotations

from typing import AsyncIterator

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from kpt.errors import InvalidArgument

FIELD = b"file"


class FilePart:
    """Feed the request body to the parser until the `file` part's headers are read; then stream its data."""

    def __init__(self, request: Request) -> None:
        ctype, params = parse_options_header(request.headers.get("content-type", ""))
        if ctype != b"multipart/form-data" or not params.get(b"boundary"):
            raise InvalidArgument("send the model as multipart/form-data with a 'file' part")
        self._body = request.stream().__aiter__()
        self._parser = MultipartParser(params[b"boundary"], {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._data,
            "on_part_end": self._part_end})
        self.filename = ""
        self._headers: dict[bytes, bytes] = {}
        self._field = self._value = b""
        self._found = self._in_file = self._file_done = False
        self._pending: list[bytes] = []

    # -- parser callbacks -----------------------------------------------------------------
    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        if params.get(b"name") == FIELD and not self._found:
            self._found = self._in_file = True
            self.filename = params.get(b"filename", b"").decode("utf-8", "replace")

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._pending.append(bytes(data[start:end]))

    def _part_end(self) -> None:
        if self._in_file:
            self._in_file, self._file_done = False, True

    # -- driving --------------------------------------------------------------------------
    async def _feed(self) -> bool:
        try:
            chunk = await self._body.__anext__()
        except StopAsyncIteration:
            return False
        except ClientDisconnect:
            raise InvalidArgument("the client went away during the upload") from None
        try:
            self._parser.write(chunk)
        except MultipartParseError as e:
            raise InvalidArgument(f"malformed multipart body: {e}") from None
        return True

    async def open(self) -> "FilePart":
        while not self._found:
            if not await self._feed():
                raise InvalidArgument("the multipart body has no 'file' part")
        return self

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            if self._pending:
                data, self._pending = b"".join(self._pending), []
                yield data
            if self._file_done:
                return
            if not await self._feed():
                raise InvalidArgument("the multipart body ended inside the 'file' part")
