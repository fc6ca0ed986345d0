#!/usr/bin/env python3
"""The web chat in real browsers: two headless Chromium sessions and one TCP client of
chat_server's protocol talk in one room of examples/web_chat.

    python3 tests/web_chat_browser.py target/release/examples/web_chat

Needs Debian's chromium and chromium-driver, and selenium (pip). It starts the example on
free ports, opens the page twice, joins both sessions and the TCP client to one room; each
of the three says something, and each must see all three messages in the same order (the
browsers in the page's #log list, the TCP client as MESSAGE packets). A browser that
reloads and joins again must get the three back from the room's history. It checks the
page's text, saves a screenshot to target/web_chat.png, and reads /metrics. Every wait is
bounded; any failure exits non-zero with a message saying what went wrong.
"""

import os
import queue
import shutil
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

WAIT = 20  # seconds: the bound on every single expectation
ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "target" / "web_chat.png"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

# chat_server's protocol (examples/chat/rooms.rs): u32 LE length, u8 opcode, strings as
# u32 LE length (counting a trailing NUL), bytes, NUL.
JOIN, SAY, LEAVE = 1, 2, 3
JOINED, MESSAGE, LEFT, ERROR = 1, 2, 3, 4


class Failure(Exception):
    pass


def fail(msg):
    raise Failure(msg)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----- the server -----


class Server:
    def __init__(self, binary, http_port, tcp_port):
        self.proc = subprocess.Popen(
            [binary, "--addr", f"127.0.0.1:{http_port}", "--tcp-port", str(tcp_port),
             "--metrics", "--secs", "600"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = queue.Queue()
        self.log = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for_addresses(self):
        deadline = time.monotonic() + WAIT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                fail(f"the server printed no address line in {WAIT} s: {self.log}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                fail(f"the server exited ({self.proc.wait()}) before listening: {self.log}")
            self.log.append(line)
            m = re.search(r"listening on http://([\d.:]+)/ .*chat_server clients on ([\d.:]+)",
                          line)
            if m:
                return m.group(1), m.group(2)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


# ----- a TCP client of chat_server's protocol -----


def packet(op, *fields):
    body = bytes([op])
    for f in fields:
        b = f.encode() + b"\0"
        body += struct.pack("<I", len(b)) + b
    return struct.pack("<I", len(body)) + body


class TcpClient:
    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=WAIT)
        self.buf = b""

    def send(self, op, *fields):
        self.sock.sendall(packet(op, *fields))

    def _read(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                fail("the TCP client's connection was closed by the server")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self, timeout=WAIT):
        """The next packet as (op, [strings]); fails after `timeout`."""
        deadline = time.monotonic() + timeout
        try:
            (length,) = struct.unpack("<I", self._read(4, deadline))
            body = self._read(length, deadline)
        except socket.timeout:
            fail(f"the TCP client received nothing in {timeout} s")
        op, fields, i = body[0], [], 1
        while i < len(body):
            (n,) = struct.unpack_from("<I", body, i)
            fields.append(body[i + 4:i + 4 + n].rstrip(b"\0").decode())
            i += 4 + n
        return op, fields

    def close(self):
        self.sock.close()


# ----- the browsers -----


def start_browser(profile_dir):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # The browser and its driver are Debian's: nothing is to be downloaded.
    os.environ["SE_OFFLINE"] = "true"

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1000,700",
                 f"--user-data-dir={profile_dir}"]:
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER),
                                  options=options)
    except Exception as e:  # noqa: BLE001: any reason at all is fatal, and said
        fail(f"the browser could not start ({CHROMIUM} via {CHROMEDRIVER}): {e}")
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    return driver


def wait_until(driver, what, cond):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.05).until(lambda d: cond(d))
    except TimeoutException:
        fail(f"timed out after {WAIT} s waiting for {what}; the page says:\n"
             f"{driver.find_element('tag name', 'body').text}")


def texts(driver, css):
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), e => e.textContent)", css)


def join(driver, url, nick, room):
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait_until(driver, f"{nick}'s page to connect",
               lambda d: d.find_element(By.ID, "join").is_enabled())
    for field, value in (("nick", nick), ("room", room)):
        box = driver.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    driver.find_element(By.ID, "join").click()
    wait_until(driver, f"{nick} in the members of {room}",
               lambda d: nick in texts(d, "#members li"))


def say(driver, text):
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "text").send_keys(text)
    driver.find_element(By.ID, "send").click()


# ----- the test -----


def run(binary):
    http_port, tcp_port = free_port(), free_port()
    while tcp_port == http_port:
        tcp_port = free_port()
    server = Server(binary, http_port, tcp_port)
    drivers, tcp, profiles = [], None, []
    try:
        http_addr, tcp_addr = server.wait_for_addresses()
        url = f"http://{http_addr}/"
        print(f"server: page at {url}, chat_server clients at {tcp_addr}")

        profiles += [tempfile.mkdtemp(prefix="web_chat_chromium_") for _ in range(2)]
        alice, bob = start_browser(profiles[0]), start_browser(profiles[1])
        drivers += [alice, bob]
        join(alice, url, "alice", "lobby")
        join(bob, url, "bob", "lobby")
        wait_until(alice, "bob in alice's members",
                   lambda d: texts(d, "#members li") == ["alice", "bob"])

        tcp = TcpClient(tcp_addr)
        tcp.send(JOIN, "lobby", "carol")
        got = tcp.recv()
        if got != (JOINED, ["lobby", "carol"]):
            fail(f"carol (TCP): expected her own JOINED first, got {got}")
        for d, who in ((alice, "alice"), (bob, "bob")):
            wait_until(d, f"carol in {who}'s members",
                       lambda d: texts(d, "#members li") == ["alice", "bob", "carol"])
        print("joined: alice and bob (browsers), carol (TCP)")

        # All three speak at once: the room's order is theirs to pick, but it must be one.
        said = {"alice": "hello from alice's browser", "bob": "bob says hi",
                "carol": "carol over TCP"}
        say(alice, said["alice"])
        say(bob, said["bob"])
        tcp.send(SAY, said["carol"])
        want = sorted(f"{n}: {t}" for n, t in said.items())

        tcp_seen = []
        while len(tcp_seen) < 3:
            op, fields = tcp.recv()
            if op == MESSAGE:
                if fields[0] != "lobby":
                    fail(f"carol (TCP): a message of another room: {fields}")
                tcp_seen.append(f"{fields[1]}: {fields[2]}")
            elif op == ERROR:
                fail(f"carol (TCP): refused: {fields}")
        if sorted(tcp_seen) != want:
            fail(f"carol (TCP) saw {tcp_seen}, expected {want}")
        for d, who in ((alice, "alice"), (bob, "bob")):
            wait_until(d, f"three messages in {who}'s log",
                       lambda d: len(texts(d, "#log li.msg")) >= 3)
            seen = texts(d, "#log li.msg")
            if seen != tcp_seen:
                fail(f"{who} saw {seen}, carol (TCP) saw {tcp_seen}: not the same order")
        print(f"all three saw, in one order: {tcp_seen}")

        body = alice.find_element("tag name", "body").text
        for line in tcp_seen + ["kendynet web chat", "bob joined", "carol joined"]:
            if line not in body:
                fail(f"the page's text lacks {line!r}:\n{body}")
        if alice.title != "kendynet web chat":
            fail(f"the page's title is {alice.title!r}")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        if not alice.save_screenshot(str(SCREENSHOT)):
            fail(f"could not save the screenshot to {SCREENSHOT}")
        print(f"screenshot: {SCREENSHOT}")

        # Bob reloads (his connection drops) and joins again: the history comes back.
        join(bob, url, "bob", "lobby")
        wait_until(bob, "the replay of three messages in bob's log",
                   lambda d: texts(d, "#log li.msg") == tcp_seen)
        wait_until(bob, "the members after bob's return",
                   lambda d: sorted(texts(d, "#members li")) == ["alice", "bob", "carol"])
        expect_tcp = [(LEFT, ["lobby", "bob", "dropped"]), (JOINED, ["lobby", "bob"])]
        got = [tcp.recv(), tcp.recv()]
        # The old page's connection ends as the new one loads: in either order.
        if sorted(got) != sorted(expect_tcp):
            fail(f"carol (TCP): expected {expect_tcp} after bob's reload, got {got}")
        print("bob reloaded and got the history back")

        # The metrics page, in Prometheus' text format.
        with urllib.request.urlopen(f"http://{http_addr}/metrics", timeout=WAIT) as r:
            ctype = r.headers.get("Content-Type", "")
            metrics = r.read().decode()
        if r.status != 200 or not ctype.startswith("text/plain"):
            fail(f"/metrics: status {r.status}, content type {ctype!r}")
        sample = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [-+0-9.eE]+(inf|NaN)?$")
        bad = [l for l in metrics.splitlines() if l and not l.startswith("#")
               and not sample.match(l)]
        if bad or "# TYPE " not in metrics:
            fail(f"/metrics does not look like Prometheus text (bad lines {bad}):\n{metrics}")
        for name, value in (("web_chat_members", "3"), ("web_chat_messages_total", "3")):
            if f"\n{name} {value}\n" not in f"\n{metrics}":
                fail(f"/metrics: expected {name} {value} in\n{metrics}")
        print("metrics: ok")
    finally:
        for d in drivers:
            try:
                d.quit()
            except Exception:  # noqa: BLE001: best effort at the end
                pass
        if tcp:
            tcp.close()
        server.stop()
        for p in profiles:
            shutil.rmtree(p, ignore_errors=True)


def main():
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} PATH/TO/web_chat", file=sys.stderr)
        return 2
    binary = sys.argv[1]
    if not os.access(binary, os.X_OK):
        print(f"web_chat_browser: FAILED: {binary} is not an executable", file=sys.stderr)
        return 1
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            print(f"web_chat_browser: FAILED: {path} is missing "
                  "(apt-get install chromium chromium-driver)", file=sys.stderr)
            return 1
    try:
        import selenium  # noqa: F401
    except ImportError:
        print("web_chat_browser: FAILED: selenium is not installed (pip install selenium)",
              file=sys.stderr)
        return 1
    try:
        run(binary)
    except Failure as e:
        print(f"web_chat_browser: FAILED: {e}", file=sys.stderr)
        return 1
    print("web_chat_browser: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
