"""Edge cases of the web page, driven in Debian's headless Chromium against a small fake of the HTTP API
(a threading HTTP/1.1 server serving the real page files): server text is never HTML, a lost event
stream is re-opened until the job ends, event streams leave connections for the API calls, degenerate
latency samples still draw."""

import json
import os
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.browser.conftest import CHROMIUM

pytestmark = [pytest.mark.timeout(120)]
sync_api = pytest.importorskip("playwright.sync_api")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no {CHROMIUM}: apt-get install -y chromium", allow_module_level=True)

WEB = Path(__file__).resolve().parents[2] / "gateway" / "kpt_gateway" / "web"
EVIL = '<img src=x onerror="window.__pwned=1">'


def job(jid, state="JOB_STATE_RUNNING", group="g1", target="TARGET_CPU", model="mlp", **kw):
    return {"id": jid, "group_id": group, "target": target, "state": state, "created_at": "2024-01-01T00:00:00Z",
            "spec": {"kind": "JOB_KIND_OPTIMIZE", "model": {"name": model}, "level": "LEVEL_O2"}, **kw}


class Fake:
    """What the fake API answers; `streams[id]` says what one events request of that job does."""

    def __init__(self):
        self.jobs: dict[str, dict] = {}
        self.streams: dict[str, object] = {}
        self.connects: dict[str, int] = {}
        self.posts = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()


def handler(fake: Fake):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def send(self, code, body, ctype="application/json"):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with fake.lock:
                fake.posts += 1
            self.send(400, {"error": {"code": "INVALID_ARGUMENT", "message": "fake"}})

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            parts, q = url.path.strip("/").split("/"), urllib.parse.parse_qs(url.query)
            if url.path == "/":
                return self.send(200, (WEB / "index.html").read_bytes(), "text/html")
            if parts[0] == "static":
                ctype = {"js": "text/javascript", "css": "text/css"}[parts[1].rsplit(".", 1)[1]]
                return self.send(200, (WEB / parts[1]).read_bytes(), ctype)
            if url.path == "/v1/targets":
                return self.send(200, {"targets": []})
            if url.path == "/v1/zoo":
                return self.send(200, {"models": [{"name": "mlp", "description": "d"}]})
            if url.path == "/v1/jobs":
                g = q.get("group_id", [""])[0]
                return self.send(200, {"jobs": [j for j in fake.jobs.values() if not g or j["group_id"] == g]})
            if len(parts) == 3 and parts[:2] == ["v1", "jobs"]:
                return self.send(200, {"job": fake.jobs[parts[2]]})
            if len(parts) == 4 and parts[3] == "events":
                return self.events(parts[2])
            self.send(404, {"error": {"code": "NOT_FOUND", "message": url.path}})

        def events(self, jid):
            with fake.lock:
                fake.connects[jid] = fake.connects.get(jid, 0) + 1
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            how = fake.streams.get(jid, "hang")
            if how == "hang":
                while not fake.stop.wait(0.5):
                    self.wfile.write(b": keepalive\n\n")
                    self.wfile.flush()
            else:
                for event, data in how:
                    self.wfile.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
                    self.wfile.flush()
            self.close_connection = True

    return H


@pytest.fixture
def fake():
    f = Fake()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler(f))
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    f.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield f
    f.stop.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert not errors, errors


def test_server_text_is_never_html(fake, page):
    expect = sync_api.expect
    bad = job("bad", state="JOB_STATE_FAILED", model=EVIL, error={"code": "INVALID_MODEL", "message": EVIL})
    bad["result"] = {"device": EVIL, "variants": [{"variant": EVIL, "error": EVIL}],
                     "passes": [{"name": EVIL, "reason": EVIL, "level": "LEVEL_O1"}]}
    fake.jobs = {bad["id"]: bad, "ok": job("ok", state="JOB_STATE_FAILED", model=EVIL)}
    fake.streams["ok"] = [("event", {"phase": EVIL, "message": EVIL, "progress": 0.5}),
                          ("error", {"code": "INTERNAL", "message": EVIL})]
    page.goto(fake.url + "/")
    expect(page.locator("#jobs tbody tr")).to_have_count(2)
    page.goto(fake.url + "/#/job/bad")
    expect(page.locator("#job-view")).to_contain_text(f"INVALID_MODEL: {EVIL}")
    page.goto(fake.url + "/#/group/g1")
    expect(page.locator("#side-by-side")).to_contain_text("INVALID_MODEL")
    assert page.locator("#job-view img, #group-view img, #jobs img, #error img").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_lost_event_stream_is_reopened_until_the_job_ends(fake, page):
    expect = sync_api.expect
    fake.jobs = {"j1": job("j1")}
    # the first stream drops after one progress event (a gateway restart, a proxy timeout)
    fake.streams["j1"] = [("event", {"phase": "compile", "message": "m", "progress": 0.4,
                                     "state": "JOB_STATE_RUNNING"})]
    page.goto(fake.url + "/#/job/j1")
    expect(page.locator("#job-state")).to_have_text("running")
    deadline = time.time() + 10
    while fake.connects.get("j1", 0) < 1 and time.time() < deadline:
        time.sleep(0.1)
    done = job("j1", state="JOB_STATE_SUCCEEDED")
    fake.jobs["j1"] = done
    fake.streams["j1"] = [("job", done)]
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=20_000)
    n = fake.connects["j1"]
    time.sleep(4)
    assert fake.connects["j1"] == n  # a terminal job is not watched again


def test_many_running_jobs_leave_connections_for_api_calls(fake, page):
    expect = sync_api.expect
    fake.jobs = {f"r{i}": job(f"r{i}", group=f"g{i}") for i in range(8)}  # streams that never end
    page.goto(fake.url + "/")
    expect(page.locator("#jobs tbody tr")).to_have_count(8)
    time.sleep(1)
    page.click("#submit")  # a POST /v1/jobs: it must reach the server, not queue behind event streams
    deadline = time.time() + 10
    while fake.posts == 0 and time.time() < deadline:
        time.sleep(0.1)
    assert fake.posts == 1
    expect(page.locator("#error")).to_contain_text("INVALID_ARGUMENT: fake")


@pytest.mark.parametrize("samples", [[0.30000000000000004, 0.3, 0.3], [1.0, "NaN", 2.0], ["NaN"]])
def test_degenerate_latency_samples_still_draw(fake, page, samples):
    expect = sync_api.expect
    lat = {"p50_ms": 0.3, "p99_ms": 0.3, "samples_ms": samples}
    j = job("p1", state="JOB_STATE_SUCCEEDED")
    j["result"] = {"achieved_level": "LEVEL_O2", "variants": [{"variant": "kpt_O0", "latency": lat},
                                                              {"variant": "kpt_O2", "latency": {"p50_ms": 0.2}}]}
    fake.jobs = {"p1": j}
    page.goto(fake.url + "/#/job/p1")
    expect(page.locator("#latency-plot")).to_be_visible(timeout=10_000)
    expect(page.locator("#latency-plot")).not_to_contain_text("NaN")
