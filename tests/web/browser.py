"""The reviewer's page in a real browser (tests/web.rs starts the daemon).

Headless chromium through Debian's chromedriver (never a driver selenium
would fetch), one browser session:

  browser.py URL ROOT_TOKEN AGENT_TOKEN BATCH PROJECT SCREENSHOTS

1. The agent logs in: its own pending batch shows no approve button, and a
   POST of the approval with its session and CSRF token is refused (403).
2. The reviewer logs in, sees the batch first with its review badge,
   approves the held entry with the keyboard (Tab to the button, Enter),
   runs it and watches its live output (text only, trimmed), then the
   finished page (the head and tail of a 50 MB output, hostile text shown
   as text).
3. The review: the git hook flagged, the hostile file name as text, 10,000
   paths in pages; the host changes b.txt: committing a.txt and b.txt is
   refused with the conflict shown; a.txt alone is committed.
4. No alert opened, no element the agent's text would have made exists;
   in a narrow window no page is wider than the window.

Prints timings; exits non-zero with the reason on the first failure.
"""

import os
import shutil
import sys
import tempfile
import time

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

URL, ROOT_TOKEN, AGENT_TOKEN, BATCH, PROJECT, SHOTS = sys.argv[1:7]
URL = URL.rstrip("/")
T0 = time.monotonic()
PROFILES = []  # chromium's profile directories, removed at the end


def say(msg):
    print(f"[{time.monotonic() - T0:6.2f}s] {msg}", flush=True)


def fail(msg):
    print(f"FAILED: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="cloche-web-chromium-")
    PROFILES.append(profile)
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1200,900", "--no-first-run", "--disable-extensions",
              "--disable-background-networking", f"--user-data-dir={profile}"]:
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def no_script_ran(d, where):
    try:
        alert = d.switch_to.alert
        fail(f"{where}: an alert opened: {alert.text!r}")
    except NoAlertPresentException:
        pass
    imgs = d.execute_script("return document.querySelectorAll('img').length")
    scripts = d.execute_script("return Array.from(document.scripts).map(s => s.src)")
    check(imgs == 0, f"{where}: {imgs} img elements on the page")
    check(scripts == [URL + "/static/app.js"], f"{where}: scripts {scripts}")
    injected = d.execute_script("return window.__injected === undefined")
    check(injected, f"{where}: a global set by injected script")


def shot(d, name):
    d.save_screenshot(os.path.join(SHOTS, name))


def login(d, token):
    d.get(URL + "/login")
    box = d.find_element(By.ID, "token")
    box.send_keys(token)
    box.send_keys(Keys.ENTER)
    WebDriverWait(d, 10).until(lambda d: d.current_url.rstrip("/") == URL)


def logout(d):
    d.find_element(By.CSS_SELECTOR, "form[action='/logout'] button").click()
    WebDriverWait(d, 10).until(lambda d: d.current_url.endswith("/login"))


def post_status(d, path, fields):
    """A same-origin fetch POST with the page's CSRF token: its status."""
    return d.execute_async_script(
        """const [path, fields, done] = arguments;
        const body = new URLSearchParams(fields);
        body.set('csrf', document.querySelector('input[name=csrf]').value);
        fetch(path, {method: 'POST', body, redirect: 'manual'}).then(r => done(r.status), e => done(String(e)));""",
        path, fields)


def main():
    d = browser()
    d.set_script_timeout(30)
    try:
        run(d)
    finally:
        d.quit()
        for p in PROFILES:
            shutil.rmtree(p, ignore_errors=True)


def run(d):
    batch_url = f"{URL}/batches/{BATCH}"
    # 1. The agent: no approve button on its own batch; the POST refused.
    login(d, AGENT_TOKEN)
    d.get(batch_url)
    check(not d.find_elements(By.CSS_SELECTOR, "form[action$='/approve']"), "the agent sees an approve button")
    status = post_status(d, f"/batches/{BATCH}/approve", {})
    check(status == 403, f"the agent's approval answered {status}, not 403")
    check("pending" in d.find_element(By.CSS_SELECTOR, ".state").text, "the batch is no longer pending")
    logout(d)
    say("the agent cannot approve its own batch")

    # 2. The reviewer: the list, pending first with its badge.
    login(d, ROOT_TOKEN)
    nav = d.execute_script("return performance.getEntriesByType('navigation')[0].toJSON()")
    say(f"batch list rendered ({nav['domContentLoadedEventEnd']:.0f} ms to DOMContentLoaded)")
    first = d.find_element(By.CSS_SELECTOR, "table.batches tbody tr")
    check(BATCH in first.text, f"the first row is not the pending batch: {first.text!r}")
    check(first.find_element(By.CSS_SELECTOR, ".badge.review"), "no review badge")
    check("pending" in first.get_attribute("class"), "the row is not marked pending")
    shot(d, "batches.png")
    first.find_element(By.TAG_NAME, "a").click()
    WebDriverWait(d, 10).until(lambda d: d.current_url == batch_url)
    entries = d.find_elements(By.CSS_SELECTOR, "li.entry")
    check(len(entries) == 2, f"{len(entries)} entries shown")
    check("<img src=x onerror=alert(1)>" in entries[1].find_element(By.CSS_SELECTOR, "pre.command").text,
          "the command is not shown as text")
    check(entries[0].find_elements(By.CSS_SELECTOR, ".badge.allow"), "the allowed entry has no allow badge")
    no_script_ran(d, "batch page")
    shot(d, "batch.png")
    # Approve the held entry alone, with the keyboard: focus, Tab to its button, Enter.
    forms = entries[1].find_elements(By.CSS_SELECTOR, "form.approve-one button")
    check(len(forms) == 1, "no approve button on the held entry")
    d.execute_script("arguments[0].focus()", entries[1])
    d.switch_to.active_element.send_keys(Keys.TAB)
    check(d.switch_to.active_element == forms[0], "Tab does not reach the approve button")
    d.switch_to.active_element.send_keys(Keys.ENTER)
    WebDriverWait(d, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "form#run"))
    say("one entry approved (keyboard)")
    d.find_element(By.CSS_SELECTOR, "form#run button").click()
    # Live output: the text arrives through the event stream, as text.
    t = time.monotonic()
    live_text = "return Array.from(document.querySelectorAll('pre.live')).map(x => x.textContent).join('')"
    WebDriverWait(d, 60, poll_frequency=0.1).until(lambda d: "0123456789abcdefghij" in d.execute_script(live_text))
    live_len = d.execute_script(
        "return Math.max(...Array.from(document.querySelectorAll('pre.live')).map(x => x.textContent.length))")
    say(f"live output seen after {time.monotonic() - t:.1f} s (at most {live_len} characters on the page)")
    check(live_len <= 64 * 1024 + 64, f"{live_len} characters of live output kept on the page")
    d.execute_script("const p = document.querySelector('pre.live:not([hidden])'); if (p) p.scrollIntoView()")
    shot(d, "live.png")
    no_script_ran(d, "live output")
    WebDriverWait(d, 120, poll_frequency=0.2).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".state.s-completed"))
    say("the run ended")
    out = d.find_elements(By.CSS_SELECTOR, "li.entry")[1].find_elements(By.CSS_SELECTOR, "pre.out")
    check(len(out) == 2, f"{len(out)} output excerpts (head and tail of 50 MB expected)")
    head, tail = out[0].text, out[1].text
    check("</script><script>alert(2)</script>" in head and "\u241b[31mred" in head, f"head: {head[:200]!r}")
    check(tail.rstrip().endswith("the-end"), f"tail: {tail[-200:]!r}")
    check("52428" in d.find_elements(By.CSS_SELECTOR, "li.entry")[1].text, "the output's size is not shown")
    # The whole output: a text/plain download, never rendered.
    link = d.find_elements(By.CSS_SELECTOR, "li.entry")[1].find_element(By.CSS_SELECTOR, "a[download]")
    h = d.execute_async_script(
        """const done = arguments[1];
        fetch(arguments[0]).then(r => { done([r.status, r.headers.get('content-type'),
          r.headers.get('x-content-type-options'), r.headers.get('content-disposition'),
          r.headers.get('content-length')]); r.body.cancel(); }, e => done(String(e)));""",
        link.get_attribute("href"))
    check(h[0] == 200 and h[1].startswith("text/plain") and h[2] == "nosniff" and h[3].startswith("attachment")
          and int(h[4]) > 50_000_000, f"the download: {h}")
    no_script_ran(d, "finished batch")
    shot(d, "batch-done.png")

    # 3. The review: flags first, pages of paths, the hostile name as text.
    d.find_element(By.LINK_TEXT, "Review the world's changes").click()
    WebDriverWait(d, 60).until(lambda d: d.find_elements(By.ID, "flags"))
    nav = d.execute_script("return performance.getEntriesByType('navigation')[0].toJSON()")
    say(f"review page 1 of a 10,000-path diff ({nav['responseEnd'] - nav['requestStart']:.0f} ms response)")
    flags = [li.text for li in d.find_elements(By.CSS_SELECTOR, "ul.flags li")]
    hook = [f for f in flags if "git hook" in f and f.endswith("/.git/hooks/pre-commit")]
    check(hook, f"no git hook flag: {flags[:10]}")
    check(d.find_element(By.TAG_NAME, "h2").get_attribute("id") == "flags", "the flags are not first")
    check("page 1 of 101" in d.find_element(By.CSS_SELECTOR, "nav.pager").text, "not paged by 100")
    rows = d.find_elements(By.CSS_SELECTOR, "table.paths tbody tr")
    check(len(rows) == 100, f"{len(rows)} paths on a page")
    names = [r.find_elements(By.TAG_NAME, "td")[2].text for r in rows]
    check(any(n.endswith("/<img src=x onerror=alert(1)>") for n in names), f"the hostile name: {names[:6]}")
    check("+echo owned" in d.find_element(By.CSS_SELECTOR, "pre.diff").text, "the hook's diff is not shown")
    no_script_ran(d, "review")
    shot(d, "review.png")
    d.find_element(By.CSS_SELECTOR, "a[rel=next]").click()
    WebDriverWait(d, 60).until(lambda d: "page 2 of 101" in d.find_element(By.CSS_SELECTOR, "nav.pager").text)
    d.back()
    WebDriverWait(d, 60).until(lambda d: d.find_elements(By.ID, "flags"))

    # The host changes b.txt; a.txt and b.txt selected: refused, the conflict shown.
    with open(os.path.join(PROJECT, "b.txt"), "w") as f:
        f.write("host\n")

    def select(names):
        for box in d.find_elements(By.CSS_SELECTOR, "input[name=path]"):
            if any(box.get_attribute("value").endswith("/" + n) for n in names):
                box.click()
    select(["a.txt", "b.txt"])
    d.find_element(By.CSS_SELECTOR, "button[value=selected]").click()
    WebDriverWait(d, 30).until(lambda d: "Commit of" in d.execute_script(
        "return (document.querySelector('h1') || {}).textContent || ''"))
    page = d.find_element(By.TAG_NAME, "main").text
    check("Conflicts" in page and "b.txt" in page, f"no conflict shown: {page[:500]}")
    check(not os.path.exists(os.path.join(PROJECT, "a.txt")), "a refused commit wrote a.txt")
    shot(d, "conflict.png")
    say("the conflict is shown")
    d.find_element(By.LINK_TEXT, "back to the review").click()
    WebDriverWait(d, 60).until(lambda d: d.find_elements(By.ID, "flags"))
    select(["a.txt"])
    d.find_element(By.CSS_SELECTOR, "button[value=selected]").click()
    h1 = "return (document.querySelector('h1') || {}).textContent || ''"
    try:
        WebDriverWait(d, 30).until(lambda d: "applied" in d.execute_script(h1))
    except Exception:
        fail("the commit of a.txt: " + d.find_element(By.TAG_NAME, "main").text[:800])
    check(open(os.path.join(PROJECT, "a.txt")).read() == "a\n", "a.txt is not on the host")
    say("a.txt committed")
    no_script_ran(d, "commit")
    # Whatever the page logged: no CSP violation (nothing tried to run).
    logs = [e["message"] for e in d.get_log("browser") if "Content Security Policy" in e["message"]]
    check(not logs, f"CSP violations: {logs[:3]}")
    # A narrow window: no page wider than it (tables scroll on their own).
    d.set_window_size(400, 800)
    for path in ["/", f"/batches/{BATCH}", f"/batches/{BATCH}/diff"]:
        d.get(URL + path)
        wide = d.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        check(wide[0] <= wide[1], f"{path} is {wide[0]} px wide in a {wide[1]} px window")
    d.get(URL + f"/batches/{BATCH}")
    shot(d, "narrow.png")
    say("done")


if __name__ == "__main__":
    main()
