#!/usr/bin/env python3
"""Loads the web page (examples/web) in headless Chromium through ChromeDriver's WebDriver API,
waits until it has drawn (document.title "done"), saves a screenshot and checks it: each of the
four simplex panels holds a triangle (black edges); at tau = 0 every sample is one-hot (red
corner discs, no blue), at tau = 1/2, 1, 2 the samples cover the inside (blue) as well. Python's standard library only.

    page_check.py PAGE_URL CHROMEDRIVER_URL OUT.png
"""
import base64
import json
import sys
import time
import urllib.request
import zlib

PANEL = 320


def call(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)["value"]


def decode_png(png):
    """RGBA rows of an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height, ctype = 8, b"", 0, 0, 0
    while pos < len(png):
        n = int.from_bytes(png[pos:pos + 4], "big")
        kind, chunk = png[pos + 4:pos + 8], png[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height = int.from_bytes(chunk[0:4], "big"), int.from_bytes(chunk[4:8], "big")
            depth, ctype, interlace = chunk[8], chunk[9], chunk[12]
            assert depth == 8 and ctype in (2, 6) and interlace == 0, "unsupported PNG"
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    bpp = 4 if ctype == 6 else 3
    raw, stride = zlib.decompress(idat), width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append([tuple(line[x * bpp:x * bpp + 3]) for x in range(width)])
        prev = line
    return width, height, rows


def main():
    page, driver, out = sys.argv[1:4]
    caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu-sandbox",
                 "--disable-dev-shm-usage", "--enable-unsafe-webgpu", "--window-size=1400,480"]}}}}
    session = call("POST", f"{driver}/session", caps)["sessionId"]
    base = f"{driver}/session/{session}"
    try:
        call("POST", f"{base}/url", {"url": page})
        deadline, title = time.time() + 120, ""
        while time.time() < deadline:
            title = call("GET", f"{base}/title")
            if title in ("done", "failed"):
                break
            time.sleep(0.5)
        status = call("POST", f"{base}/execute/sync",
                      {"script": "return document.getElementById('status').textContent", "args": []})
        png = base64.b64decode(call("GET", f"{base}/screenshot"))
    finally:
        call("DELETE", base)
    with open(out, "wb") as f:
        f.write(png)
    print(f"page status: {status!r}; screenshot {out}")
    if title != "done":
        sys.exit(f"the page did not finish drawing (title {title!r})")
    width, height, rows = decode_png(png)
    assert width >= 4 * PANEL and height >= PANEL, f"screenshot is {width}x{height}"
    for p in range(4):
        blue = black = red = 0
        for y in range(PANEL):
            for x in range(p * PANEL, (p + 1) * PANEL):
                r, g, b = rows[y][x]
                if r < 40 and g < 40 and b < 40:
                    black += 1
                elif r > 150 and g < 80 and b < 80:
                    red += 1
                elif b > r + 30:
                    blue += 1
        print(f"panel {p}: {blue} sample (blue), {red} corner (red), {black} edge (black) pixels")
        if black < 500:
            sys.exit(f"panel {p}: no triangle drawn ({black} black pixels)")
        if p == 0 and red < 100:
            sys.exit(f"panel {p}: no corner mass drawn ({red} red pixels)")
        if p == 0 and blue > 200:
            sys.exit(f"panel 0 (tau = 0, one-hot samples): {blue} blue pixels inside the triangle")
        if p > 0 and blue < 5000:
            sys.exit(f"panel {p}: samples cover only {blue} pixels")
    print("four panels drawn")


if __name__ == "__main__":
    main()
