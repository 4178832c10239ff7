#!/usr/bin/python3
# Dragonfly manager Open API stand-in for p2p_preheat's tests and benchmarks.
# The extension talks to Dragonfly over real HTTP (libcurl), so tests need a real
# HTTP peer that follows the Open API exactly as described in SPEC.md section 3
# (routes, bodies, auth, status codes, job states), plus per-URL fault injection
# and a few /_standin/ control endpoints.  Python 3 standard library only.
#
# Usage: dragonfly_standin.py --port 0 --port-file F [--token T]... [--log-file L]
#        (run with --help for every option; fault markers are listed in FAULTS_HELP)

import argparse
import base64
import binascii
import email.utils
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS_HELP = """\
fault markers (matched anywhere in args.url of POST /oapi/v1/jobs):
  fail500          500 {"message":"failed to get manifest: unexpected status 500"} every time
  flaky500x<N>     500 for the first N POSTs of that exact url, then normal
  ratelimit        429 text/plain "rate limit exceeded" (no Retry-After) every time
  ratelimit429x<N> 429 for the first N POSTs of that exact url, then normal
  badjson          200 with body "not json" (no job created)
  slow<MS>ms       sleep MS milliseconds before answering the POST
  slowget<MS>ms    sleep MS milliseconds before answering each GET of that job
  jobfail          job created; final state FAILURE ("pull manifest: 404 not found")
  partial          job created; final state SUCCESS with one failure_tasks entry
  forget           job created; GET /oapi/v1/jobs/<id> answers 404 (as after cleanup)
  redirect         302 to http://example.invalid/console/ for the POST
control endpoints (no auth): GET /_standin/stats, GET /_standin/jobs,
  GET /_standin/urls, POST /_standin/reset
"""

MAX_BODY = 1 << 20
IMAGE_URL_RE = re.compile(r"://[^/]+/v2/.+/manifests/[^/]+$")
RE_FLAKY = re.compile(r"flaky500x(\d+)")
RE_RL_N = re.compile(r"ratelimit429x(\d+)")
RE_RL = re.compile(r"ratelimit(?!429x\d)")
RE_SLOW = re.compile(r"slow(\d+)ms")
RE_SLOWGET = re.compile(r"slowget(\d+)ms")
SCOPES = ("single_seed_peer", "all_seed_peers", "all_peers")
JSON_CT = "application/json; charset=utf-8"
TEXT_CT = "text/plain; charset=utf-8"
REASONS = {200: "OK", 301: "Moved Permanently", 302: "Found", 400: "Bad Request",
           401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 413: "Payload Too Large",
           422: "Unprocessable Entity", 429: "Too Many Requests",
           500: "Internal Server Error", 501: "Not Implemented"}

STR_ARGS = ("url", "username", "password", "platform", "tag", "application",
            "filtered_query_params", "scope")
INT_RANGES = (("piece_length", 4194304, 67108864), ("count", 1, 200), ("percentage", 1, 100),
              ("concurrent_task_count", 1, 100), ("concurrent_peer_count", 1, 1000))


def dumps(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def rfc3339(ts):
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_date_cache = [0, ""]


def http_date():
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[1] = email.utils.formatdate(now, usegmt=True)
        _date_cache[0] = now
    return _date_cache[1]


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _reject_constant(name):
    raise ValueError("invalid JSON number " + name)


class ValidationError(Exception):
    pass


def validate(body, lenient_scope):
    """Return args (dict) or raise ValidationError naming the field."""
    if not isinstance(body, dict):
        raise ValidationError("request body must be a JSON object")
    if body.get("type") != "preheat":
        raise ValidationError('type: required, must be "preheat"')
    ids = body.get("scheduler_cluster_ids")
    if ids is not None:
        if not isinstance(ids, list) or not all(is_int(i) and i > 0 for i in ids):
            raise ValidationError("scheduler_cluster_ids: must be a list of positive integers")
    if body.get("bio") is not None and not isinstance(body["bio"], str):
        raise ValidationError("bio: must be a string")
    if body.get("user_id") is not None and not (is_int(body["user_id"]) and body["user_id"] >= 0):
        raise ValidationError("user_id: must be a non-negative integer")
    args = body.get("args")
    if not isinstance(args, dict):
        raise ValidationError("args: required, must be a JSON object")
    for k in STR_ARGS:
        if args.get(k) is not None and not isinstance(args[k], str):
            raise ValidationError("args.%s: must be a string" % k)
    atype = args.get("type")
    if atype not in ("image", "file"):
        raise ValidationError('args.type: required, must be "image" or "file"')
    url = args.get("url") or ""
    if atype == "image":
        if not IMAGE_URL_RE.search(url):
            raise ValidationError("args.url: invalid image manifest url, must match "
                                  "://<host>/v2/<repo>/manifests/<reference>")
    else:
        urls = args.get("urls")
        if urls is not None and not (isinstance(urls, list) and all(isinstance(u, str) for u in urls)):
            raise ValidationError("args.urls: must be a list of strings")
        if not url and not urls:
            raise ValidationError("args.url: required for type file")
    hdrs = args.get("headers")
    if hdrs is not None:
        if not isinstance(hdrs, dict) or not all(isinstance(v, str) for v in hdrs.values()):
            raise ValidationError("args.headers: must be an object of string values")
    scope = args.get("scope")
    if scope is not None and scope != "" and scope not in SCOPES and not lenient_scope:
        raise ValidationError("args.scope: must be one of " + ", ".join(SCOPES))
    t = args.get("timeout")
    if t is not None and not is_int(t):
        raise ValidationError("args.timeout: must be an integer (nanoseconds), got %s"
                              % type(t).__name__)
    for k, lo, hi in INT_RANGES:
        v = args.get(k)
        if v is None:
            continue
        if not is_int(v):
            raise ValidationError("args.%s: must be an integer" % k)
        if not lo <= v <= hi:
            raise ValidationError("args.%s: must be between %d and %d" % (k, lo, hi))
    ips = args.get("ips")
    if ips is not None:
        if not isinstance(ips, list) or not 1 <= len(ips) <= 100 \
                or not all(isinstance(i, str) for i in ips):
            raise ValidationError("args.ips: must be a list of 1 to 100 strings")
    return args


class Job:
    __slots__ = ("id", "task_id", "url", "args", "clusters", "created", "created_s",
                 "updated_s", "state", "result", "fault", "slowget", "polls", "bio", "user_id")


class State:
    """All mutable state; every access goes through self.lock."""

    def __init__(self, opts):
        self.opts = opts
        self.lock = threading.Lock()
        self.next_id = 1  # never reset, so stale ids from a previous test answer 404
        self.log_lock = threading.Lock()
        self.log = open(opts.log_file, "a", buffering=1, encoding="utf-8") if opts.log_file else None
        self.reset()

    def reset(self):
        self.jobs = {}
        self.url_posts = {}
        self.posts = 0
        self.gets = 0
        self.healthy = 0
        self.by_status = {}

    def write_log(self, rec):
        if self.log is None:
            return
        line = json.dumps(rec, separators=(",", ":"), ensure_ascii=False) + "\n"
        with self.log_lock:
            self.log.write(line)


def final_result(job):
    ok = {"url": job.url, "hostname": "peer-1", "ip": "10.0.0.1"}
    if job.fault == "jobfail":
        err = "pull manifest: 404 not found"
        fail = {"url": job.url, "hostname": "peer-1", "ip": "10.0.0.1", "description": err}
        return "FAILURE", {"job_states": [{"state": "FAILURE", "error": err, "results": [
            {"scheduler_cluster_id": c, "success_tasks": [], "failure_tasks": [fail]}
            for c in job.clusters]}]}
    results = []
    for i, c in enumerate(job.clusters):
        r = {"scheduler_cluster_id": c, "success_tasks": [ok], "failure_tasks": []}
        if job.fault == "partial" and i == 0:
            r["failure_tasks"] = [{"url": job.url, "hostname": "peer-2", "ip": "10.0.0.2",
                                   "description": "connection reset"}]
        results.append(r)
    return "SUCCESS", {"job_states": [{"state": "SUCCESS", "error": "", "results": results}]}


def job_obj(job):
    return {"id": job.id, "created_at": job.created_s, "updated_at": job.updated_s,
            "task_id": job.task_id, "bio": job.bio, "type": "preheat", "state": job.state,
            "args": job.args, "result": job.result, "user_id": job.user_id,
            "scheduler_clusters": [{"id": c} for c in job.clusters]}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "dragonfly-standin"
    disable_nagle_algorithm = True
    timeout = 300  # idle keep-alive connections are closed after this
    st = None  # State, set in main()

    # ---- plumbing -------------------------------------------------------
    def log_message(self, fmt, *a):
        if self.st.opts.verbose:
            sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % a))

    def send(self, code, body=b"", ctype=JSON_CT, extra=None, count=True):
        h = ["HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
             % (code, REASONS.get(code, ""), http_date(), ctype, len(body))]
        if extra:
            for k, v in extra:
                h.append("%s: %s\r\n" % (k, v))
        if self.close_connection:
            h.append("Connection: close\r\n")
        elif self.request_version == "HTTP/1.0":
            h.append("Connection: keep-alive\r\n")
        h.append("\r\n")
        data = "".join(h).encode("latin-1")
        if self.command != "HEAD":
            data += body
        self.wfile.write(data)
        self._sent = True
        if count:
            st = self.st
            k = str(code)
            with st.lock:
                st.by_status[k] = st.by_status.get(k, 0) + 1
        if self.st.opts.verbose:
            self.log_request(code)

    def send_json(self, code, obj, **kw):
        self.send(code, dumps(obj), **kw)

    def read_body(self):
        """Return the request body bytes, or None after answering 413/400."""
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    n = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self.close_connection = True
                    self.send_json(400, {"message": "bad chunked encoding"})
                    return None
                if n == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += n
                if total > MAX_BODY:
                    self.close_connection = True
                    self.send_json(413, {"message": "request body too large"})
                    return None
                chunks.append(self.rfile.read(n))
                self.rfile.readline(1024)
        cl = self.headers.get("Content-Length")
        if not cl:
            return b""
        try:
            n = int(cl)
        except ValueError:
            self.close_connection = True
            self.send_json(400, {"message": "bad Content-Length"})
            return None
        if n > MAX_BODY or n < 0:
            self.close_connection = True
            self.send_json(413, {"message": "request body too large"})
            return None
        return self.rfile.read(n) if n else b""

    def auth(self):
        """Return (http_status or None, auth_kind)."""
        o = self.st.opts
        authz = self.headers.get("Authorization") or ""
        scheme, _, cred = authz.strip().partition(" ")
        scheme = scheme.lower()
        cred = cred.strip()
        for name, value in o.header:
            v = self.headers.get(name)
            if v is not None and v == value:
                return None, "custom"
        if scheme == "bearer":
            kind = "bearer"
        elif scheme == "basic":
            kind = "basic"
        elif o.header and any(self.headers.get(n) is not None for n, _ in o.header):
            kind = "custom"
        else:
            kind = "none"
        if not o.auth_required:
            return None, kind
        if kind == "bearer":
            if cred in o.token:
                return None, kind
            if cred in o.inactive_token:
                return 403, kind
        elif kind == "basic":
            try:
                up = base64.b64decode(cred, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                up = None
            if up is not None and up in o.basic:
                return None, kind
        return 401, kind

    def dispatch(self):
        self._sent = False
        try:
            body = self.read_body()
            if body is None:
                return
            path = self.path.split("?", 1)[0]
            if path.startswith("/_standin/"):
                return self.control(path)
            if self.st.opts.delay > 0:
                time.sleep(self.st.opts.delay)
            if path == "/healthy" and self.command in ("GET", "HEAD"):
                with self.st.lock:
                    self.st.healthy += 1
                return self.send(200, b'"OK"')
            if path == "/oapi/v1/jobs" and self.command == "POST":
                return self.post_job(body)
            if path.startswith("/oapi/v1/jobs/") and self.command == "GET":
                return self.get_job(path[len("/oapi/v1/jobs/"):])
            loc = "/console/"
            self.send(301, b'<a href="%s">Moved Permanently</a>.\n\n' % loc.encode(),
                      ctype="text/html; charset=utf-8", extra=[("Location", loc)])
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True
        except Exception as e:  # keep the server alive; answer 500 if we still can
            self.close_connection = True
            if self.st.opts.verbose:
                import traceback
                traceback.print_exc()
            if not self._sent:
                try:
                    self.send_json(500, {"message": "standin internal error: %s" % type(e).__name__})
                except OSError:
                    pass

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = dispatch

    # ---- Open API -------------------------------------------------------
    def post_job(self, raw):
        st, o = self.st, self.st.opts
        t = time.time()
        with st.lock:
            st.posts += 1
        code, kind = self.auth()
        try:
            body = json.loads(raw, parse_constant=_reject_constant) if raw else None
            parse_err = None if raw else "EOF"
        except (ValueError, UnicodeDecodeError) as e:
            body, parse_err = raw.decode("utf-8", "replace")[:4096], "invalid JSON: %s" % e
        rec = {"t": t, "id": None, "status": None, "body": body, "auth_kind": kind}
        try:
            if code == 401:
                return self._reply(rec, 401, {"message": "Unauthorized"})
            if code == 403:
                return self._reply(rec, 403, {"message": "token is inactive"})
            if parse_err:
                return self._reply(rec, 422, {"errors": parse_err})
            try:
                args = validate(body, o.lenient_scope)
            except ValidationError as e:
                return self._reply(rec, 422, {"errors": str(e)})
            url = args.get("url") or ""
            with st.lock:
                n = st.url_posts.get(url, 0) + 1
                st.url_posts[url] = n
            m = RE_SLOW.search(url)
            if m:
                time.sleep(int(m.group(1)) / 1000.0)
            if "redirect" in url:
                loc = "http://example.invalid/console/"
                return self._reply(rec, 302, b'<a href="%s">Found</a>.\n\n' % loc.encode(),
                                   ctype="text/html; charset=utf-8", extra=[("Location", loc)])
            if "fail500" in url:
                return self._reply(rec, 500,
                                   {"message": "failed to get manifest: unexpected status 500"})
            m = RE_FLAKY.search(url)
            if m and n <= int(m.group(1)):
                return self._reply(rec, 500,
                                   {"message": "failed to get manifest: unexpected status 500"})
            m = RE_RL_N.search(url)
            if (m and n <= int(m.group(1))) or RE_RL.search(url):
                return self._reply(rec, 429, b"rate limit exceeded", ctype=TEXT_CT)
            if "badjson" in url:
                return self._reply(rec, 200, b"not json")
            ids = body.get("scheduler_cluster_ids") or []
            if o.clusters is not None:
                if any(i not in o.clusters for i in ids):  # Dragonfly answers 429 here
                    return self._reply(rec, 429, b"rate limit exceeded", ctype=TEXT_CT)
                clusters = list(ids) if ids else list(o.clusters)
            else:
                clusters = list(ids) if ids else [1]
            job = Job()
            job.task_id = "group_" + str(uuid.uuid4())
            job.url, job.args, job.clusters = url, args, clusters
            job.created = time.monotonic()
            job.created_s = job.updated_s = rfc3339(t)
            job.state, job.result, job.polls = "PENDING", None, 0
            job.fault = next((f for f in ("forget", "jobfail", "partial") if f in url), None)
            m = RE_SLOWGET.search(url)
            job.slowget = int(m.group(1)) / 1000.0 if m else 0.0
            job.bio = body.get("bio") or ""
            job.user_id = body.get("user_id") or 0
            with st.lock:
                job.id = st.next_id
                st.next_id += 1
                st.jobs[job.id] = job
                obj = job_obj(job)
            rec["id"] = job.id
            return self._reply(rec, 200, obj)
        finally:
            if rec["status"] is not None:
                st.write_log(rec)

    def _reply(self, rec, code, payload, **kw):
        rec["status"] = code
        self.send(code, payload if isinstance(payload, bytes) else dumps(payload), **kw)

    def get_job(self, sid):
        st = self.st
        with st.lock:
            st.gets += 1
        code, _ = self.auth()
        if code == 401:
            return self.send_json(401, {"message": "Unauthorized"})
        if code == 403:
            return self.send_json(403, {"message": "token is inactive"})
        if not sid.isdigit() or not sid.isascii() or int(sid) == 0:
            return self.send_json(422, {"errors": "id: must be a positive integer, got %r" % sid[:64]})
        jid = int(sid)
        with st.lock:
            job = st.jobs.get(jid)
            if job is not None:
                job.polls += 1
                delay = job.slowget
                if job.fault == "forget":
                    job = None
                else:
                    if job.state == "PENDING" and \
                            time.monotonic() - job.created >= st.opts.success_after:
                        job.state, job.result = final_result(job)
                        job.updated_s = rfc3339(time.time())
                    obj = job_obj(job)
        if job is None:
            return self.send_json(404, {"message": "record not found"})
        if delay:
            time.sleep(delay)
        self.send_json(200, obj)

    # ---- control endpoints (no auth) -----------------------------------
    def control(self, path):
        st = self.st
        if path == "/_standin/stats" and self.command in ("GET", "HEAD"):
            with st.lock:
                obj = {"posts": st.posts, "gets": st.gets, "jobs": len(st.jobs),
                       "healthy": st.healthy, "by_status": dict(st.by_status)}
            return self.send_json(200, obj, count=False)
        if path == "/_standin/jobs" and self.command in ("GET", "HEAD"):
            with st.lock:
                obj = [{"id": j.id, "url": j.url, "state": j.state, "polls": j.polls,
                        "posts_for_url": st.url_posts.get(j.url, 0)} for j in st.jobs.values()]
            return self.send_json(200, obj, count=False)
        if path == "/_standin/urls" and self.command in ("GET", "HEAD"):
            with st.lock:
                obj = dict(st.url_posts)
            return self.send_json(200, obj, count=False)
        if path == "/_standin/reset" and self.command == "POST":
            with st.lock:
                st.reset()
            return self.send_json(200, {"reset": True}, count=False)
        return self.send_json(404, {"message": "unknown control endpoint"}, count=False)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    verbose = False

    def handle_error(self, request, client_address):
        if self.verbose:
            super().handle_error(request, client_address)


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Dragonfly manager Open API stand-in (SPEC.md section 3).",
        epilog=FAULTS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    p.add_argument("--port-file", help="write the chosen port here once listening (atomic)")
    p.add_argument("--token", action="append", default=[], metavar="TOKEN",
                   help="valid bearer token (repeatable)")
    p.add_argument("--inactive-token", action="append", default=[], metavar="TOKEN",
                   help="bearer token answered with 403 token is inactive (repeatable)")
    p.add_argument("--basic", action="append", default=[], metavar="USER:PASS",
                   help="valid Basic credentials (repeatable)")
    p.add_argument("--header", action="append", default=[], metavar="NAME:VALUE",
                   help="request header that authenticates (repeatable)")
    p.add_argument("--log-file", help="append one JSON line per POST /oapi/v1/jobs")
    p.add_argument("--success-after", type=float, default=0.0, metavar="SECONDS",
                   help="job is final when polled at least this long after creation")
    p.add_argument("--delay", type=float, default=0.0, metavar="SECONDS",
                   help="sleep before answering every API request (not /_standin/)")
    p.add_argument("--clusters", metavar="ID,ID",
                   help="known scheduler cluster ids; others get 429 like Dragonfly. "
                        "Default: any id accepted, omitted ids = [1]")
    p.add_argument("--lenient-scope", action="store_true",
                   help="accept any args.scope string (Dragonfly >= 2.1.66)")
    p.add_argument("--verbose", action="store_true", help="log requests and errors to stderr")
    o = p.parse_args(argv)
    # Never echo credential values in error messages.
    if any(":" not in b for b in o.basic):
        p.error("--basic expects USER:PASS")
    hdrs = []
    for h in o.header:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            p.error("--header expects NAME:VALUE")
        hdrs.append((name.strip(), value.strip()))
    o.header = hdrs
    o.token, o.inactive_token, o.basic = set(o.token), set(o.inactive_token), set(o.basic)
    o.auth_required = bool(o.token or o.inactive_token or o.basic or o.header)
    if o.clusters is not None:
        try:
            o.clusters = [int(x) for x in o.clusters.split(",") if x.strip()]
        except ValueError:
            p.error("--clusters expects comma-separated integers")
    return o


def main(argv=None):
    o = parse_args(sys.argv[1:] if argv is None else argv)
    Handler.st = State(o)
    srv = Server((o.host, o.port), Handler)
    srv.verbose = o.verbose
    port = srv.server_address[1]
    if o.port_file:
        tmp = "%s.tmp.%d" % (o.port_file, os.getpid())
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, o.port_file)

    def stop(signum, frame):
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("dragonfly-standin listening on http://%s:%d (auth %s)"
          % (o.host, port, "required" if o.auth_required else "off"), flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    finally:
        srv.server_close()
        if Handler.st.log:
            Handler.st.log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
