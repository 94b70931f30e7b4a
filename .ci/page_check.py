#!/usr/bin/env python3
"""Drives the playground page (examples/web) in headless Chromium through ChromeDriver's WebDriver
API and checks what it drew, from the state the page exposes (`window.playground`) and its
canvases' pixels. Python's standard library only.

    page_check.py PAGE_URL CHROMEDRIVER_URL OUT_PREFIX

At 1280 x 800:
* both panels drew: the simplex's hard samples (Gumbel-max) agree with softmax(logits) and the
  token panel's 1000 draws with the law it shows, by the chi-square p-value the page computes
  (read back; the test passes at p >= 0.001, with fixed seeds, so a run is reproducible), no draw
  falls outside the kept set, and the kernel's log-probabilities are within 1e-4 of f64;
* tau moved to 0 with the keyboard (Home): the picture changes, every sample is one-hot, and the
  hard samples are the same (the same noise; Gumbel-max does not depend on tau); tau moved to 5
  (End): the samples spread (their mean largest coordinate falls), the hard samples again equal;
  "New noise": other hard samples, still agreeing with softmax;
* top-k moved to 5: the shown law keeps exactly the 5 most likely tokens, the histogram changes,
  every draw is one of those 5 and agrees with the law, and the requests' streams advanced by
  one call; "Draw again": the same law, other draws from the streams' next words;
* the mask switched on (no furniture): the law and the histogram change, the law keeps the 5 most
  likely tokens outside the masked words, the masked words have law 0 and no draw, and the draws
  still agree with the law;
* the presence penalty moved to 1.5: the odds of each kept word of the page's history against a
  kept unseen word fall by exp(-1.5), and the draws agree with the new law.
Every token draw: the law the page shows (the GPU's, `TokenSampler::record_probabilities`) is
within 1e-5 of the library's f64 reference and keeps the same tokens.
Then at 390 x 844 (a phone): nothing wider than the screen, both canvases redrawn. Then with
`navigator.gpu` removed before the page loads: the page says there is no WebGPU.

Screenshots: OUT_PREFIX-1280x800.png (the first draw), OUT_PREFIX-1280x800-moved.png (tau 5,
top-k 5), OUT_PREFIX-1280x800-masked.png (the mask on), OUT_PREFIX-1280x800-penalty.png (and the presence penalty),
OUT_PREFIX-390x844.png (the whole page, after the moves), OUT_PREFIX-no-webgpu.png.
"""
import base64
import json
import math
import sys
import time
import urllib.error
import urllib.request

P_MIN = 1e-3
HOME, END = "\ue011", "\ue010"
# The words the page's mask bans (examples/web/src/lib.rs, MASKED), named here independently.
MASKED = ["sofa", "bed", "chair", "table", "couch", "desk", "shelf", "bench", "bookcase"]


def call(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return json.load(r)["value"]
    except urllib.error.HTTPError as e:
        value = json.load(e).get("value", {})
        sys.exit(f"WebDriver {method} {url}: {value.get('error')}: {value.get('message')}")


class Page:
    def __init__(self, driver):
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu-sandbox",
                     "--disable-dev-shm-usage", "--enable-unsafe-webgpu",
                     "--window-size=1280,800"]}}}}
        self.base = f"{driver}/session/{call('POST', f'{driver}/session', caps)['sessionId']}"

    def close(self):
        call("DELETE", self.base)

    def js(self, script, *args):
        return call("POST", f"{self.base}/execute/sync", {"script": script, "args": list(args)})

    def cdp(self, cmd, params):
        return call("POST", f"{self.base}/goog/cdp/execute", {"cmd": cmd, "params": params})

    def state(self):
        return json.loads(self.js("return JSON.stringify(window.playground ?? null)"))

    def wait(self, what, script, timeout):
        """Polls `script` until it returns true; exits naming `what` after `timeout` s."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.js(script):
                return
            time.sleep(0.25)
        err = self.js("return window.playground?.error ?? document.documentElement.dataset.state")
        sys.exit(f"timed out after {timeout} s waiting for {what} (page: {err!r})")

    def element(self, element_id):
        el = call("POST", f"{self.base}/element",
                  {"using": "css selector", "value": f"#{element_id}"})
        return f"{self.base}/element/{next(iter(el.values()))}"

    def keys(self, element_id, *keys):
        el = self.element(element_id)
        for k in keys:
            call("POST", f"{el}/value", {"text": k})

    def click(self, element_id):
        call("POST", f"{self.element(element_id)}/click", {})

    def size(self, width, height, scale, mobile):
        self.cdp("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile})

    def screenshot(self, path, full=False):
        shot = self.cdp("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": full})
        png = base64.b64decode(shot["data"])
        with open(path, "wb") as f:
            f.write(png)
        w, h = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        print(f"screenshot {path}: {w} x {h}, {len(png) // 1024} KiB")


def check(ok, message):
    if not ok:
        sys.exit("page check failed: " + message)


def idle(panel, condition):
    """A script true once `panel` has drawn, settled, and its state meets `condition`."""
    return (f"const s = window.playground?.{panel}; return !!s && "
            f"document.getElementById('{panel}-panel').getAttribute('aria-busy') === 'false' && "
            f"({condition});")


def check_simplex(s, label):
    print(f"simplex ({label}): tau {s['tau']:.3g}, logits {[round(x, 3) for x in s['logits']]}, "
          f"hard counts {s['hardCounts']} vs softmax {[round(p, 4) for p in s['softmax']]}, "
          f"chi-square {s['chiSquare']:.2f} on {s['dof']} dof, p {s['pValue']:.3g}; mean largest "
          f"coordinate {s['meanMax']:.4f}; {s['ms']:.1f} ms; picture {s['picture']}")
    check(sum(s["hardCounts"]) == s["rows"], f"{label}: hard counts do not sum to the rows")
    check(s["dof"] == 2 and s["pValue"] >= P_MIN,
          f"{label}: hard samples disagree with softmax (p {s['pValue']:.3g} < {P_MIN})")
    check(s["argmaxMismatches"] == 0,
          f"{label}: {s['argmaxMismatches']} hard samples are not their soft sample's argmax")
    check(s["picture"]["inked"] > 2000, f"{label}: the simplex canvas is nearly blank")


def check_tokens(s, label):
    print(f"tokens ({label}): mask {s['mask']}, bias {s['bias']:.3g}, repetition "
          f"{s['repetitionPenalty']:.3g}, presence {s['presencePenalty']:.3g}, top-n-sigma "
          f"{s['topNSigma']:.3g}; law within {s['lawError']:.2g} of f64")
    print(f"tokens ({label}): call {s['step']}, temperature {s['temperature']:.3g}, min-p "
          f"{s['minP']:.3g}, top-k {s['topK']}, top-p {s['topP']:.3g}: {s['kept']} kept, "
          f"chi-square {s['chiSquare']:.1f} on {s['dof']} dof ({s['bins']} bins), p "
          f"{s['pValue']:.3g}, {s['impossible']} impossible draws, log-prob error "
          f"{s['logprobError']:.2g}; {s['ms']:.1f} ms per call; picture {s['picture']}")
    check(s["draws"] == 1000 and sum(s["counts"]) == 1000, f"{label}: not 1000 draws")
    # The law is the GPU's f32 one: it sums to 1 within f32 rounding.
    check(abs(sum(s["law"]) - 1) < 1e-5, f"{label}: the law sums to {sum(s['law'])}")
    check(s["lawError"] < 1e-5, f"{label}: the GPU's law is {s['lawError']} off the f64 one")
    check(s["supportMismatches"] == 0,
          f"{label}: {s['supportMismatches']} tokens kept by only one of the GPU and f64 laws")
    check(s["kept"] == sum(p > 0 for p in s["law"]), f"{label}: kept != the law's support")
    check(s["impossible"] == 0, f"{label}: {s['impossible']} draws outside the kept set")
    check(all(c == 0 for c, p in zip(s["counts"], s["law"]) if p == 0),
          f"{label}: draws of tokens the law gives 0")
    check(s["dof"] >= 1 and s["pValue"] >= P_MIN,
          f"{label}: draws disagree with the law (p {s['pValue']:.3g} < {P_MIN})")
    check(s["logprobError"] < 1e-4, f"{label}: log-probabilities off by {s['logprobError']}")
    check(s["ms"] > 0, f"{label}: no call time")
    check(s["picture"]["inked"] > 2000, f"{label}: the token canvas is nearly blank")


def main():
    url, driver, out = sys.argv[1:4]
    start = time.time()
    page = Page(driver)
    try:
        page.size(1280, 800, 1, False)
        call("POST", f"{page.base}/url", {"url": url})
        page.wait("the page's first draw (kernels compiled on the CPU by SwiftShader)",
                  "return ['ready', 'failed', 'no-webgpu'].includes("
                  "document.documentElement.dataset.state)", 240)
        s0 = page.state()
        check(s0 and s0["ready"], f"the page did not get ready: {s0 and s0['error']!r}")
        print(f"ready after {time.time() - start:.0f} s on {s0['device']}")
        check_simplex(s0["simplex"], "initial")
        check_tokens(s0["tokens"], "initial")
        check(s0["tokens"]["kept"] == 64, "every filter is off at first: all 64 tokens kept")
        sim0, tok0 = s0["simplex"], s0["tokens"]
        page.screenshot(f"{out}-1280x800.png")

        # tau to 0: one-hot samples, the same hard samples.
        page.keys("simplex-tau", HOME)
        page.wait("tau = 0", idle("simplex", f"s.tau === 0 && s.seq > {sim0['seq']}"), 60)
        sim1 = page.state()["simplex"]
        check_simplex(sim1, "tau 0")
        check(sim1["picture"]["digest"] != sim0["picture"]["digest"], "tau 0: the picture is the same")
        check(sim1["meanMax"] == 1.0, f"tau 0: samples not one-hot (mean max {sim1['meanMax']})")
        check(sim1["hardCounts"] == sim0["hardCounts"], "tau 0: the hard samples changed")

        # tau to 5: the samples spread, the hard samples stay.
        page.keys("simplex-tau", END)
        page.wait("tau = 5", idle("simplex", f"s.tau === 5 && s.seq > {sim1['seq']}"), 60)
        sim2 = page.state()["simplex"]
        check_simplex(sim2, "tau 5")
        check(sim2["picture"]["digest"] != sim0["picture"]["digest"], "tau 5: the picture is the same")
        check(sim2["meanMax"] < sim0["meanMax"] - 0.1,
              f"tau 5: samples did not spread (mean max {sim2['meanMax']} vs {sim0['meanMax']})")
        check(sim2["hardCounts"] == sim0["hardCounts"], "tau 5: the hard samples changed")

        # "New noise": the stream's next words, other hard samples, the same law.
        page.click("new-noise")
        page.wait("new noise", idle("simplex", f"s.noise === 1 && s.seq > {sim2['seq']}"), 60)
        sim3 = page.state()["simplex"]
        check_simplex(sim3, "new noise")
        check(sim3["hardCounts"] != sim2["hardCounts"], "new noise: the same hard samples")
        check(sim3["softmax"] == sim2["softmax"], "new noise: the law changed")

        # top-k dragged to 5 (one input event, so exactly one more call: the streams, and so the
        # draws and their p-value, are the same on every run): the law keeps the 5 most likely
        # tokens, the draws follow.
        page.js("const e = document.getElementById('token-top_k'); e.value = 5; "
                "e.dispatchEvent(new Event('input', {bubbles: true}));")
        page.wait("top-k = 5", idle("tokens", f"s.topK === 5 && s.seq > {tok0['seq']}"), 120)
        tok1 = page.state()["tokens"]
        check_tokens(tok1, "top-k 5")
        check(tok1["kept"] == 5 and all(p > 0 for p in tok1["law"][:5]),
              "top-k 5: the law does not keep exactly the 5 most likely tokens")
        check(tok1["counts"] != tok0["counts"], "top-k 5: the histogram is the same")
        check(tok1["picture"]["digest"] != tok0["picture"]["digest"], "top-k 5: the chart is the same")
        check(tok1["step"] == tok0["step"] + 1, "top-k 5: not the requests' next call")

        # "Draw again": the same law, the streams' next words, other draws.
        page.click("draw-again")
        page.wait("the next call", idle("tokens", f"s.seq > {tok1['seq']}"), 120)
        tok2 = page.state()["tokens"]
        check_tokens(tok2, "again")
        check(tok2["law"] == tok1["law"], "again: the law changed")
        check(tok2["step"] == tok1["step"] + 1, "again: the streams did not advance by one call")
        check(tok2["counts"] != tok1["counts"], "again: the same draws from advanced streams")
        check(page.js("return document.documentElement.scrollWidth") <= 1280,
              "1280 x 800: the page is wider than the window")
        page.screenshot(f"{out}-1280x800-moved.png")

        # The mask on (one input event, one more call): the furniture words get law 0 and no
        # draw, top-k 5 now keeps the 5 most likely of the other words, the draws follow.
        page.js("const e = document.getElementById('token-mask'); e.value = 1; "
                "e.dispatchEvent(new Event('input', {bubbles: true}));")
        page.wait("the mask on", idle("tokens", f"s.mask && s.seq > {tok2['seq']}"), 120)
        tok3 = page.state()["tokens"]
        words = page.state()["words"]
        check_tokens(tok3, "mask")
        masked = [words.index(w) for w in MASKED]
        check(all(tok3["law"][j] == 0 and tok3["counts"][j] == 0 for j in masked),
              "mask: a masked word has probability or draws")
        unmasked = [j for j in range(len(words)) if j not in masked][:5]
        check(tok3["kept"] == 5 and all(tok3["law"][j] > 0 for j in unmasked),
              f"mask: the law does not keep the 5 most likely unmasked words {unmasked}")
        check(tok3["law"] != tok2["law"], "mask: the law is the same")
        check(tok3["counts"] != tok2["counts"], "mask: the histogram is the same")
        check(tok3["picture"]["digest"] != tok2["picture"]["digest"], "mask: the chart is the same")
        page.screenshot(f"{out}-1280x800-masked.png")

        # The presence penalty to 1.5 (one event, one call): it subtracts 1.5 from the logits of
        # the words already generated (the page's history), so their odds against an unseen
        # word fall by exp(-1.5) wherever both stay kept.
        page.js("const e = document.getElementById('token-presence_penalty'); e.value = 1.5; "
                "e.dispatchEvent(new Event('input', {bubbles: true}));")
        page.wait("presence penalty 1.5",
                  idle("tokens", f"s.presencePenalty === 1.5 && s.seq > {tok3['seq']}"), 120)
        tok4 = page.state()["tokens"]
        check_tokens(tok4, "presence penalty")
        history = set(page.js("return document.getElementById('token-history').textContent")
                      .split(":")[1].split(".")[0].replace(" ", "").split(","))
        both = [j for j in range(len(words)) if tok3["law"][j] > 0 and tok4["law"][j] > 0]
        seen = [j for j in both if words[j] in history]
        unseen = [j for j in both if words[j] not in history]
        check(seen and unseen, f"presence penalty: no kept history word {history} to compare")
        for j in seen:
            change = (tok4["law"][j] / tok4["law"][unseen[0]]) / (tok3["law"][j] / tok3["law"][unseen[0]])
            check(abs(change / math.exp(-1.5) - 1) < 1e-3,
                  f"presence penalty: the odds of {words[j]} changed by {change}, not exp(-1.5)")
        check(tok4["counts"] != tok3["counts"], "presence penalty: the histogram is the same")
        page.screenshot(f"{out}-1280x800-penalty.png")

        # A phone: one column, nothing wider than the screen, the canvases redrawn to fit.
        page.size(390, 844, 2, True)
        fits = ("[['simplex', 'simplex-canvas'], ['tokens', 'token-canvas']].every(([p, id]) => {"
                "const c = document.getElementById(id); return devicePixelRatio === 2 && "
                "c.width === Math.round(c.getBoundingClientRect().width * 2) && "
                "window.playground[p].picture.width === c.width; })")
        page.wait("the redraw at 390 x 844", idle("simplex", fits), 30)
        width = page.js("return document.documentElement.scrollWidth")
        check(width <= 390, f"390 x 844: the page is {width} px wide")
        phone = page.state()
        check(phone["simplex"]["picture"]["inked"] > 2000 and
              phone["tokens"]["picture"]["inked"] > 2000, "390 x 844: a canvas is blank")
        page.screenshot(f"{out}-390x844.png", full=True)

        # No WebGPU: the page says so.
        page.size(1280, 800, 1, False)
        page.cdp("Page.addScriptToEvaluateOnNewDocument", {"source":
                 "Object.defineProperty(Navigator.prototype, 'gpu', {get: () => undefined});"})
        call("POST", f"{page.base}/url", {"url": url})
        page.wait("the no-WebGPU message",
                  "return document.documentElement.dataset.state === 'no-webgpu'", 30)
        text = page.js("const e = document.getElementById('no-webgpu'); "
                       "return e.offsetParent ? e.textContent : ''")
        check("no WebGPU" in text, f"no WebGPU: the message is not shown ({text!r})")
        page.screenshot(f"{out}-no-webgpu.png")
    finally:
        page.close()
    print(f"page check passed in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
