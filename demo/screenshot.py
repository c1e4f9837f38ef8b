"""Screenshot a page in headless Chromium (Debian's ``chromium``), once it has had ``wait`` seconds to draw.

    python demo/screenshot.py http://127.0.0.1:8000/?fontsize=13 demo/screenshots/lrwatch-serve.png 7

``chromium --headless --screenshot`` shoots at the page's load event, before ``lrwatch serve``'s
websocket has drawn anything; this drives the same browser over its DevTools protocol instead
(aiohttp, which textual-serve already brings). How the README's screenshot was taken.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
import urllib.request

import aiohttp

PORT = 9333


async def capture(debugger_url: str, url: str, wait: float) -> bytes:
    async with aiohttp.ClientSession() as session, session.ws_connect(debugger_url, max_msg_size=0) as ws:
        calls = 0

        async def call(method: str, **params: object) -> dict:
            nonlocal calls
            calls += 1
            await ws.send_json({"id": calls, "method": method, "params": params})
            while (message := await ws.receive_json()).get("id") != calls:
                pass
            return message.get("result", {})

        await call("Page.enable")
        await call("Page.navigate", url=url)
        await asyncio.sleep(wait)
        return base64.b64decode((await call("Page.captureScreenshot", format="png"))["data"])


def main() -> None:
    url, out, wait = sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 7.0
    browser = subprocess.Popen(
        ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1180,720", f"--remote-debugging-port={PORT}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{PORT}/json"))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        page = next(target for target in targets if target["type"] == "page")
        with open(out, "wb") as f:
            f.write(asyncio.run(capture(page["webSocketDebuggerUrl"], url, wait)))
    finally:
        browser.terminate()
        browser.wait(10)


if __name__ == "__main__":
    main()
