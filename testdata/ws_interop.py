"""Interop peer for sluice's WebSocket tests (python3-websockets).

  ws_interop.py server   prints the port of an echo server on 127.0.0.1,
                         then echoes until stdin closes.
  ws_interop.py client URL
                         runs a fixed conversation through URL and prints
                         one JSON line per result.
"""
import asyncio
import json
import sys

import websockets


async def echo(ws, path=None):
    try:
        async for msg in ws:
            await ws.send(msg)
    except websockets.ConnectionClosed:
        pass


async def server():
    srv = await websockets.serve(echo, "127.0.0.1", 0, compression="deflate")
    port = srv.sockets[0].getsockname()[1]
    print(port, flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    srv.close()
    await srv.wait_closed()


async def client(url):
    out = []
    async with websockets.connect(url, compression="deflate", subprotocols=["chat"]) as ws:
        out.append({"subprotocol": ws.subprotocol, "extensions": [e.name for e in ws.extensions]})
        await ws.send("hello")
        out.append({"text": await ws.recv()})
        await ws.send(b"\x00\x01binary")
        got = await ws.recv()
        out.append({"binary": got.hex()})
        await ws.send(["frag", "mented ", "text " * 40])
        out.append({"text": await ws.recv()})
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 10)
        out.append({"pong": True})
        await ws.close(code=1000, reason="done")
        out.append({"close": ws.close_code})
    for o in out:
        print(json.dumps(o), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        asyncio.run(server())
    else:
        asyncio.run(asyncio.wait_for(client(sys.argv[2]), 30))
