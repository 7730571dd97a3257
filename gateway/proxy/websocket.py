"""Websocket relay: message by message between the client and upstream legs, close codes passed on."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import WSMsgType, web

__all__ = ["splice"]

_SENDABLE_CLOSE_ABNORMAL = 1011  # RFC 6455 §7.4.1: 1005/1006/1015 must never be sent in a frame


def _close_code(code: int | None) -> int:
    """A close code that may be sent on: 1005 (no code) → 1000; 1006/1015/None → 1011."""
    if code is None or code in (1006, 1015) or not 1000 <= code <= 4999:
        return _SENDABLE_CLOSE_ABNORMAL
    return 1000 if code == 1005 else code


async def _pump(src: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
                dst: web.WebSocketResponse | aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage | None:
    """Relay data messages from `src` to `dst`; return the message that ended `src`."""
    while True:
        msg = await src.receive()
        try:
            if msg.type is WSMsgType.TEXT:
                await dst.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
            else:  # CLOSE, CLOSING, CLOSED, ERROR; pings are answered by autoping on each leg
                return msg
        except ConnectionError:
            return None  # dst is gone; its own pump reports how


async def splice(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Pump both ways until one side closes, then close the other with the same code."""
    to_upstream = asyncio.create_task(_pump(client, upstream))
    to_client = asyncio.create_task(_pump(upstream, client))
    try:
        done, _ = await asyncio.wait((to_upstream, to_client), return_when=asyncio.FIRST_COMPLETED)
        first, other = (to_client, client) if to_client in done else (to_upstream, upstream)
        ended = upstream if first is to_client else client
        msg = first.result()
        reason = msg.extra.encode() if msg is not None and msg.type is WSMsgType.CLOSE and msg.extra else b""
        code = _close_code(ended.close_code)
        # Closing `other` first also wakes the pump still blocked in other.receive().
        await other.close(code=code, message=reason)
        await ended.close(code=code, message=reason)
    finally:
        for task in (to_upstream, to_client):
            task.cancel()
        await asyncio.gather(to_upstream, to_client, return_exceptions=True)
