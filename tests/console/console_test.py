#!/usr/bin/env python3
"""Browser test of Neo's web console (issue 21).

Starts 3 real `neo-node` processes on loopback, opens the console of node 1 in headless
Chromium (selenium + chromedriver) and checks: the overview shows 3 nodes, all alive;
a topic created through the console's form (with its confirmation dialog) appears;
records produced with the `neo` CLI show up in the topic's message browser and as a
message rate; attacker-controlled keys, values and headers (`<script>`, `<img onerror>`)
are shown literally and never run; a refused topic name's error shows literally; the
consumer-group and queue pages render; and the browser logged no error (SEVERE).
Then, on one node with security on (`--auth jwt`): the console asks for a token by
itself, shows a 403 for a principal without grants, works with the superuser's token
and keeps it in sessionStorage.

Usage: console_test.py --bin-dir target/debug [--screenshots docs/console]
Needs: python3 with selenium, /usr/bin/chromium and /usr/bin/chromedriver.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import (
    NoAlertPresentException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

WAIT_S = 20
READY_TIMEOUT_S = 60
XSS_KEY = '<script>window.__neo_xss = "key"</script>'
XSS_VALUE = '<img src=x onerror="window.__neo_xss=\'value\'">'
XSS_HEADER = '<img src=x onerror="window.__neo_xss=\'header\'"><b>bold</b>'
XSS_TOPIC = '<script>alert(1)</script>'
TOPIC = "console-orders"
SECRET = "neo-console-browser-test-hs256-secret-32-bytes-at-least"


def free_port():
    """A loopback port below the ephemeral range when possible (see tests/src/ports.rs)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except OSError:
        low = 0
    for _ in range(200):
        port = random.randrange(20000, low) if low > 21000 else 0
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


class Cluster:
    def __init__(self, bin_dir, n=3, extra_args=()):
        self.extra_args = list(extra_args)
        self.bin = os.path.join(bin_dir, "neo-node")
        self.cli = os.path.join(bin_dir, "neo")
        for b in (self.bin, self.cli):
            if not os.access(b, os.X_OK):
                raise SystemExit(f"{b} is missing: cargo build -p neo-node -p neo-client --bins")
        self.root = tempfile.mkdtemp(prefix="neo-console-")
        used = set()

        def port():
            while True:
                p = free_port()
                if p not in used:
                    used.add(p)
                    return p

        self.nodes = [
            {"id": i, "client": port(), "cluster": port(), "http": port(), "proc": None}
            for i in range(1, n + 1)
        ]
        self.peers = ",".join(f"{n['id']}=127.0.0.1:{n['cluster']}" for n in self.nodes)

    def log(self, node):
        return os.path.join(self.root, f"node-{node['id']}.log")

    def start(self):
        for node in self.nodes:
            data = os.path.join(self.root, f"node-{node['id']}")
            os.makedirs(data)
            out = open(self.log(node), "ab")
            node["proc"] = subprocess.Popen(
                [
                    self.bin,
                    "--id", str(node["id"]),
                    "--data-dir", data,
                    "--listen", f"127.0.0.1:{node['client']}",
                    "--cluster-listen", f"127.0.0.1:{node['cluster']}",
                    "--http-listen", f"127.0.0.1:{node['http']}",
                    "--peers", self.peers,
                    *self.extra_args,
                ],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                env={**os.environ, "NEO_LOG": os.environ.get("NEO_E2E_LOG", "warn")},
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        for node in self.nodes:
            while True:
                if node["proc"].poll() is not None:
                    raise RuntimeError(f"node {node['id']} exited while starting")
                try:
                    if http_get(f"http://127.0.0.1:{node['http']}/ready", 2)[0] == 200:
                        break
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"node {node['id']} not ready in {READY_TIMEOUT_S} s")
                time.sleep(0.2)

    def servers(self):
        return ",".join(f"127.0.0.1:{n['client']}" for n in self.nodes)

    def neo(self, *args, stdin=None, timeout=30):
        r = subprocess.run(
            [self.cli, "--server", self.servers(), *args],
            input=stdin, capture_output=True, text=True, timeout=timeout,
        )
        if r.returncode != 0:
            raise RuntimeError(f"neo {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r.stdout

    def tails(self, lines=40):
        out = []
        for node in self.nodes:
            try:
                with open(self.log(node), errors="replace") as f:
                    text = f.read().splitlines()[-lines:]
            except OSError:
                text = []
            out.append(f"--- node {node['id']} log ---\n" + "\n".join(text))
        return "\n".join(out)

    def stop(self):
        for node in self.nodes:
            p = node["proc"]
            if p is not None and p.poll() is None:
                p.kill()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        shutil.rmtree(self.root, ignore_errors=True)


class Console:
    def __init__(self, base, shots):
        self.base = base
        self.shots = shots
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1400,1000"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        self.driver.set_page_load_timeout(WAIT_S)
        self.driver.set_script_timeout(WAIT_S)
        self.logs = []

    def wait(self, what, cond, timeout=WAIT_S):
        try:
            return WebDriverWait(
                self.driver, timeout, poll_frequency=0.2,
                ignored_exceptions=[StaleElementReferenceException],
            ).until(lambda d: cond())
        except TimeoutException:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None

    def click(self, what, by, value):
        """Click an element that the page may re-render meanwhile (retried until then)."""

        def attempt():
            try:
                els = self.driver.find_elements(by, value)
                if not els:
                    return False
                els[0].click()
                return True
            except StaleElementReferenceException:
                return False

        self.wait(what, attempt)

    def open(self, route):
        self.driver.get(f"{self.base}/#/{route}")

    def text(self, css):
        els = self.driver.find_elements(By.CSS_SELECTOR, css)
        return els[0].text if els else ""

    def shot(self, name):
        if self.shots:
            os.makedirs(self.shots, exist_ok=True)
            self.driver.save_screenshot(os.path.join(self.shots, f"{name}.png"))

    def no_alert(self):
        try:
            alert = self.driver.switch_to.alert
            raise AssertionError(f"a JavaScript alert opened: {alert.text!r}")
        except NoAlertPresentException:
            pass

    def xss_ran(self):
        return self.driver.execute_script("return window.__neo_xss || null")

    def collect_logs(self):
        self.logs.extend(self.driver.get_log("browser"))

    def close(self):
        self.driver.quit()


def confirm_dialog(c, typed=None):
    c.wait("the confirmation dialog", lambda: c.driver.find_element(By.ID, "confirm").is_displayed())
    if typed is not None:
        c.driver.find_element(By.ID, "confirm-input").send_keys(typed)
    c.driver.find_element(By.ID, "confirm-ok").click()
    c.wait("the dialog to close", lambda: not c.driver.find_element(By.ID, "confirm").is_displayed())


def create_topic(c, name, partitions, rf):
    d = c.driver
    field = d.find_element(By.ID, "topic-name")
    field.clear()
    field.send_keys(name)
    for id_, v in (("topic-partitions", partitions), ("topic-rf", rf)):
        f = d.find_element(By.ID, id_)
        f.clear()
        f.send_keys(str(v))
    d.find_element(By.ID, "topic-create").click()
    confirm_dialog(c)


def run(cluster, c):
    d = c.driver
    # Overview: 3 nodes, all alive, a controller.
    c.open("overview")
    c.wait("3 nodes on the overview", lambda: c.text("#nodes-count") == "3 nodes")
    c.wait("3 alive", lambda: c.text("#nodes-alive") == "3 alive")
    assert c.text("#controller").startswith("node "), c.text("#controller")

    # Topics: a refused (attacker-controlled) name shows its error literally.
    c.open("topics")
    c.wait("the create form", lambda: d.find_elements(By.ID, "topic-name"))
    create_topic(c, XSS_TOPIC, 1, 1)
    c.wait("the refusal", lambda: "Could not create topic" in c.text(".message.error"))
    assert XSS_TOPIC in c.text(".message.error"), c.text(".message.error")
    c.no_alert()

    # A topic created through the form appears with its partitions.
    create_topic(c, TOPIC, 3, 3)
    c.wait("the topic in the table", lambda: TOPIC in c.text("#topics-table"))
    c.wait("the success message", lambda: f"Topic {TOPIC} created." in c.text(".message.success"))

    # Records with hostile keys, values and headers, produced with the CLI.
    lines = "\n".join([XSS_VALUE] + [f"order {i}" for i in range(1, 20)]) + "\n"
    cluster.neo("produce", TOPIC, "--partition", "0", "--key", XSS_KEY,
                "--header", f"x-evil={XSS_HEADER}", "--header", "trace=abc", stdin=lines)

    # Keep producing for a while, so the topics page sees a rate.
    stop = threading.Event()

    def keep_producing():
        i = 0
        while not stop.is_set() and i < 60:
            try:
                cluster.neo("produce", TOPIC, stdin="".join(f"tick {i} {j}\n" for j in range(50)))
            except Exception as e:  # the assertion below reports the missing rate
                print(f"background produce: {e}", file=sys.stderr)
            i += 1
            stop.wait(0.5)

    producer = threading.Thread(target=keep_producing, daemon=True)
    producer.start()
    try:
        def rate_seen():
            cells = d.find_elements(By.CSS_SELECTOR, "#topics-table tbody tr")
            for row in cells:
                if TOPIC in row.text:
                    r = row.find_element(By.CSS_SELECTOR, "td.rate").text
                    return r.endswith("msg/s") and float(r.split()[0].replace(",", "")) > 0
            return False

        c.wait("a message rate above 0 for the topic", rate_seen, timeout=30)
        # Right after creation leadership may still move (balance to the preferred
        # replicas): the page says so until every partition has its leader.
        c.wait("every partition with a leader and all in sync", lambda: all(
            "leaderless" not in r.text and "all in sync" in r.text
            for r in d.find_elements(By.CSS_SELECTOR, "#topics-table tbody tr")
            if TOPIC in r.text), timeout=30)
        c.shot("topics")
        # The overview's live charts while records flow (a few polls).
        c.open("overview")
        c.wait("3 nodes", lambda: c.text("#nodes-count") == "3 nodes")
        # The charts are this node's: it may lead none of the topic's partitions, so
        # this wait is for the screenshot only (the rate was checked above).
        try:
            c.wait("a rate on the chart", lambda: c.driver.execute_script(
                "return [...document.querySelectorAll('.chart-value')]"
                ".some(e => /^[1-9]/.test(e.textContent))"), timeout=10)
        except AssertionError as e:
            print(f"note: {e}", file=sys.stderr)
        time.sleep(4)
        c.shot("overview")
    finally:
        stop.set()
        producer.join(timeout=60)

    # The message browser: partition 0, the first page shows the records literally.
    c.open("topics")
    c.click("the topic's link", By.LINK_TEXT, TOPIC)
    c.wait("the records table", lambda: d.find_elements(By.ID, "records-table"))
    Select(d.find_element(By.ID, "msg-partition")).select_by_value("0")
    off = d.find_element(By.ID, "msg-offset")
    off.clear()
    off.send_keys("0")
    d.find_element(By.ID, "msg-load").click()
    c.wait("the hostile value shown as text",
           lambda: XSS_VALUE in c.text("#records-table"))
    table = c.text("#records-table")
    for payload in (XSS_KEY, XSS_VALUE, XSS_HEADER, "order 19", "trace: abc"):
        assert payload in table, f"{payload!r} not shown literally in:\n{table}"
    # Nothing of it became markup: no <img>/<script>/<b> inside the table.
    for tag in ("img", "script", "b"):
        assert not d.find_elements(By.CSS_SELECTOR, f"#records-table {tag}"), f"<{tag}> rendered"
    assert c.xss_ran() is None, f"a payload ran: {c.xss_ran()}"
    c.no_alert()
    c.shot("messages")
    # Hex view of the same page.
    Select(d.find_element(By.ID, "msg-mode")).select_by_value("hex")
    hex_value = XSS_VALUE.encode().hex()
    c.wait("the value in hex", lambda: hex_value in c.text("#records-table"))

    # Consumer groups: a group that read the topic, with its lag.
    cluster.neo("consume", TOPIC, "--group", "console-readers", "--from-beginning", "--max", "10",
                timeout=60)
    c.open("groups")
    c.wait("the group listed", lambda: "console-readers" in c.text("#groups-table"))
    c.shot("groups")
    c.click("the group's link", By.LINK_TEXT, "console-readers")
    c.wait("the group's offsets", lambda: TOPIC in c.text("main"))
    time.sleep(2.5)  # a second poll draws the lag chart's line
    c.shot("group")

    # Queues: a queue with its dead-letter queue.
    cluster.neo("queue", "create", "console-jobs", "--partitions", "2")
    cluster.neo("queue", "send", "console-jobs", stdin="job-1\njob-2\njob-3\n")
    c.open("queues")
    c.wait("the queue and its dead-letter queue listed",
           lambda: "console-jobs.dlq" in c.text("#queues-table"))

    def depth(name):
        for row in d.find_elements(By.CSS_SELECTOR, "#queues-table tbody tr"):
            cells = row.find_elements(By.TAG_NAME, "td")
            if cells and cells[0].text.split("\n")[0].split(" ")[0] == name:
                return cells[2].text
        return None

    c.wait("its depth of 3", lambda: depth("console-jobs") == "3")
    c.shot("queues")

    # Delete the topic through the console (type the name).
    c.open("topics")
    c.wait("the topic", lambda: TOPIC in c.text("#topics-table"))
    c.click("the topic's delete button", By.CSS_SELECTOR, f'button[data-topic="{TOPIC}"]')
    confirm_dialog(c, typed=TOPIC)
    c.wait("the topic gone", lambda: TOPIC not in c.text("#topics-table"), timeout=30)

    assert c.xss_ran() is None, f"a payload ran: {c.xss_ran()}"
    c.collect_logs()
    # The one expected failed request: the refused topic name's 400.
    severe = [
        e for e in c.logs
        if e.get("level") == "SEVERE"
        and not ("/v1/topics" in e.get("message", "") and " 400 " in e.get("message", ""))
    ]
    assert not severe, "browser console errors:\n" + "\n".join(json.dumps(e) for e in severe)


def jwt(sub):
    """An HS256 JWT for `sub` under SECRET, valid for an hour."""
    def b64(obj):
        raw = json.dumps(obj, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    claims = {"sub": sub, "iss": "neo-e2e", "exp": int(time.time()) + 3600}
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(claims)}"
    tag = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(tag).rstrip(b'=').decode()}"


def run_secure(cluster, c):
    """One node with security on: the console asks for a token, shows a 403 for a
    principal without grants, and works with the superuser's token."""
    d = c.driver
    c.open("overview")
    c.wait("the token dialog", lambda: d.find_element(By.ID, "token-dialog").is_displayed())
    assert "Authentication needed (401)" in c.text("#banner"), c.text("#banner")
    d.find_element(By.ID, "token-input").send_keys(jwt("bob"))
    d.find_element(By.ID, "token-save").click()
    c.wait("the 403 shown", lambda: "Not allowed (403)" in c.text("#banner"))
    c.shot("security")
    c.click("the token button", By.ID, "token-button")
    c.wait("the token dialog", lambda: d.find_element(By.ID, "token-dialog").is_displayed())
    field = d.find_element(By.ID, "token-input")
    field.clear()
    field.send_keys(jwt("admin"))
    d.find_element(By.ID, "token-save").click()
    c.wait("1 node on the overview", lambda: c.text("#nodes-count") == "1 nodes")
    c.wait("the banner gone", lambda: not d.find_element(By.ID, "banner").is_displayed())
    stored = d.execute_script("return sessionStorage.getItem('neo-console-token')")
    assert stored and stored.count(".") == 2, "the token is kept in sessionStorage"
    c.collect_logs()
    # The expected refusals (401 before the token, 403 for bob) aside, no error.
    severe = [
        e for e in c.logs
        if e.get("level") == "SEVERE"
        and not (" 401 " in e.get("message", "") or " 403 " in e.get("message", ""))
    ]
    assert not severe, "browser console errors:\n" + "\n".join(json.dumps(e) for e in severe)


def phase(name, cluster, shots, body):
    """Run `body(cluster, console)` on a started cluster; True when it passed."""
    console = None
    try:
        cluster.start()
        console = Console(f"http://127.0.0.1:{cluster.nodes[0]['http']}", shots)
        body(cluster, console)
        return True
    except Exception as e:
        print(f"FAILED ({name}): {type(e).__name__}: {e}", file=sys.stderr)
        if console is not None:
            try:
                console.collect_logs()
                for entry in console.logs:
                    print(f"browser: {entry.get('level')} {entry.get('message')}", file=sys.stderr)
            except Exception:
                pass
        print(cluster.tails(), file=sys.stderr)
        return False
    finally:
        if console is not None:
            try:
                console.close()
            except Exception:
                pass
        cluster.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin-dir", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "debug"))
    ap.add_argument("--screenshots", metavar="DIR", help="save a PNG of each page here")
    args = ap.parse_args()
    started = time.monotonic()
    ok = phase("3 nodes", Cluster(args.bin_dir), args.screenshots, run)
    if ok:
        secret = tempfile.NamedTemporaryFile("w", prefix="neo-console-secret-", delete=False)
        try:
            secret.write(SECRET + "\n")
            secret.close()
            secure = Cluster(args.bin_dir, n=1, extra_args=[
                "--auth", "jwt", "--jwt-hs256-secret-file", secret.name,
                "--jwt-issuer", "neo-e2e", "--superuser", "admin"])
            ok = phase("security on", secure, args.screenshots, run_secure)
        finally:
            os.unlink(secret.name)
    print(f"console test {'passed' if ok else 'FAILED'} in {time.monotonic() - started:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
