"""The device's web page at `/`: server-rendered HTML over the same `firmware.ops` calls.

A browser logs in with a form (user `admin`, the console password; the check and its
lock-out are the API's, firmware.http.auth) and gets a session cookie (HttpOnly,
SameSite=Strict, 30 min idle). Every form that changes something POSTs with the session's
CSRF token, checked before anything runs. Every stored value (box names, subjects, senders,
file names, device lines) is HTML-escaped. No business logic lives here: pages read ops
results, forms call the ops functions the API calls, and a refusal is the device's own line.
No file, font or script comes from outside the device; the status box refreshes itself with
a few lines of inline JavaScript.
"""

from __future__ import annotations

import base64
import email.policy
import html
import io
import secrets
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import TYPE_CHECKING, Any

import trio
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from firmware.errors import DeviceError
from firmware.http import auth
from firmware.http.body import read_limited
from firmware.http.errors import ApiError
from firmware.ops import boxes, clients, messages, scans, sessions, status
from firmware.ops import profile as ops_profile
from firmware.store.board import check_box_name

if TYPE_CHECKING:
    from firmware.http.app import Api

COOKIE = "dpfw_session"
IDLE_S = 30 * 60  # a web session ends after this long without a request
MAX_SESSIONS = 32  # the oldest web session is dropped beyond this
FORM_LIMIT = 64 << 10  # an urlencoded form body
MULTIPART_SLACK = 64 << 10  # form fields and part headers around an uploaded message
DRAIN_LIMIT = 16 << 20  # after refusing an upload, read (and drop) this much more of it
THUMB = (180, 240)  # the largest thumbnail, pixels
PAGE_LIMIT = 64  # thumbnails are offered for at most this many pages of one file
IMAGE_NAMES = (".tif", ".tiff", ".jpg", ".jpeg", ".png")

Handler = Callable[[Request, "WebSession"], Awaitable[Response]]


@dataclass
class WebSession:
    token: str
    csrf: str
    seen: float
    notes: list[tuple[str, str]] = field(default_factory=list)  # (kind, line) to show once


def esc(value: object) -> str:
    """Any value as HTML text, quotes included (attribute-safe)."""
    return html.escape(str(value), quote=True)


def q(value: str) -> str:
    """A path segment, percent-encoded (box names and uids come from outside)."""
    return urllib.parse.quote(value, safe="")


def size_text(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1 << 20:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1 << 20):.1f} MiB"


def when_text(stamp: float | None) -> str:
    if stamp is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(stamp))


_STYLE = """
body{font-family:sans-serif;margin:0;background:#f4f5f7;color:#222}
header{background:#23395d;color:#fff;padding:.6em 1em;display:flex;gap:1.5em;align-items:center}
header a{color:#fff;text-decoration:none}header b{font-size:1.15em}
header form{margin-left:auto}
main{padding:1em;max-width:1100px}
section{background:#fff;border:1px solid #d8dbe0;border-radius:4px;
  padding:.5em 1em 1em;margin-bottom:1em}
h2{font-size:1.1em;margin:.5em 0}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.25em .5em;border-bottom:1px solid #eee;vertical-align:top}
th{background:#fafafa}
td.n,th.n{text-align:right;white-space:nowrap}
td.d{white-space:nowrap}
.note{padding:.4em .8em;border-radius:3px;margin-bottom:.6em}
.ok{background:#e3f4e1;border:1px solid #9c9}.error{background:#fbe4e4;border:1px solid #d99}
.err{color:#b00;font-size:.9em}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:.3em 1em}
.facts div span{color:#666}
img.thumb{border:1px solid #ccc;background:#fff;margin:2px;max-height:120px}
form.inline{display:inline;margin:0}
input,select,button{font-size:.95em}
label{margin-right:.8em}
"""

_REFRESH_JS = """
setInterval(function(){
  fetch('/status.html',{credentials:'same-origin'}).then(function(r){
    if(r.ok){return r.text();} throw r.status;
  }).then(function(t){document.getElementById('status').innerHTML=t;}).catch(function(){});
},5000);
"""


class Web:
    """The web page of one device's API (`Api`): its sessions and routes."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.sessions: OrderedDict[str, WebSession] = OrderedDict()

    # ----- plumbing -----

    def routes(self) -> list[Route]:
        p = self._page
        return [
            Route("/", p(self.home), methods=["GET"]),
            Route("/status.html", p(self.status_fragment), methods=["GET"]),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", p(self.logout, post=True), methods=["POST"]),
            Route("/boxes/{box}", p(self.box_page), methods=["GET"]),
            Route("/boxes/{box}/upload", p(self.upload, post=True, form=False), methods=["POST"]),
            Route("/boxes/{box}/messages/{uid}", p(self.message_page), methods=["GET"]),
            Route("/boxes/{box}/messages/{uid}/raw", p(self.raw), methods=["GET"]),
            Route(
                "/boxes/{box}/messages/{uid}/attachments/{n:int}",
                p(self.attachment),
                methods=["GET"],
            ),
            Route(
                "/boxes/{box}/messages/{uid}/attachments/{n:int}/pages/{page:int}.png",
                p(self.thumbnail),
                methods=["GET"],
            ),
            Route("/sessions/{session}/kill", p(self.kill, post=True), methods=["POST"]),
            Route("/scans", p(self.scan, post=True), methods=["POST"]),
            Route("/profile", p(self.profile_page), methods=["GET"]),
            Route("/profile", p(self.profile_set, post=True), methods=["POST"]),
        ]

    def _session(self, request: Request) -> WebSession | None:
        token = request.cookies.get(COOKIE)
        now = time.monotonic()
        for key in [k for k, s in self.sessions.items() if now - s.seen > IDLE_S]:
            del self.sessions[key]
        if token is None:
            return None
        web = self.sessions.get(token)
        if web is not None:
            web.seen = now
            self.sessions.move_to_end(token)
        return web

    def _page(
        self, handler: Handler, *, post: bool = False, form: bool = True
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            web = self._session(request)
            if web is None:
                if post:
                    return _text(403, "not logged in (or the session ended); log in again")
                return RedirectResponse("/login", status_code=303)
            try:
                if post and form:
                    fields = await _form(request)
                    request.state.form = fields
                    if not secrets.compare_digest(fields.get("csrf", ""), web.csrf):
                        return _text(403, "the form's CSRF token is missing or stale; reload")
                return await handler(request, web)
            except ApiError as exc:
                return _text(exc.status, exc.message)
            except DeviceError as exc:
                return _text(_device_status(exc), " ".join(str(exc).split()))

        return endpoint

    def _redirect(self, web: WebSession, to: str, kind: str, line: str) -> Response:
        web.notes.append((kind, line))
        return RedirectResponse(to, status_code=303)

    def _layout(self, web: WebSession | None, title: str, body: str, *, script: str = "") -> str:
        nav = ""
        notes = ""
        if web is not None:
            nav = (
                '<a href="/">Status</a><a href="/profile">Profile</a>'
                '<form class="inline" method="post" action="/logout">'
                f'<input type="hidden" name="csrf" value="{esc(web.csrf)}">'
                "<button>Log out</button></form>"
            )
            notes = "".join(
                f'<div class="note {esc(k)}">{esc(line)}</div>' for k, line in web.notes
            )
            web.notes.clear()
        model = esc(self.api.ctx.profile.model) if self._up() else "device"
        js = f"<script>{script}</script>" if script else ""
        return (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width">'
            f"<title>{esc(title)} - dpfw</title><style>{_STYLE}</style></head><body>"
            f"<header><b>dpfw {model}</b>{nav}</header><main>{notes}{body}</main>{js}"
            "</body></html>"
        )

    def _up(self) -> bool:
        try:
            _ = self.api.ctx.board
        except DeviceError:
            return False
        return True

    def _csrf(self, web: WebSession) -> str:
        return f'<input type="hidden" name="csrf" value="{esc(web.csrf)}">'

    # ----- logging in -----

    async def login_form(self, request: Request, message: str = "", code: int = 200) -> Response:
        error = f'<div class="note error">{esc(message)}</div>' if message else ""
        body = (
            f"<section><h2>Log in</h2>{error}"
            '<form method="post" action="/login">'
            '<label>User <input name="user" value="admin" autocomplete="username"></label>'
            '<label>Password <input type="password" name="password" autofocus '
            'autocomplete="current-password"></label>'
            "<button>Log in</button></form>"
            "<p>The console's admin password. Failed logins count with the console's and the "
            "API's: every third in a row locks admin logins for a while.</p></section>"
        )
        return HTMLResponse(self._layout(None, "Log in", body), status_code=code)

    async def login(self, request: Request) -> Response:
        try:
            fields = await _form(request)
        except ApiError as exc:
            return await self.login_form(request, exc.message, exc.status)
        user = fields.get("user", "")
        password = fields.get("password", "")
        header = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        api = self.api
        client = request.client
        try:
            await auth.authenticate(
                header,
                client.host if client is not None else "unknown",
                api.lockout,
                trio.current_time,
                api._check_password,
                api.metrics.login,
                api._auth_lock,
            )
        except ApiError as exc:
            return await self.login_form(request, exc.message, exc.status)
        except DeviceError as exc:
            return await self.login_form(request, str(exc), _device_status(exc))
        token = secrets.token_urlsafe(32)
        self.sessions[token] = WebSession(token, secrets.token_urlsafe(32), time.monotonic())
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    async def logout(self, request: Request, web: WebSession) -> Response:
        self.sessions.pop(web.token, None)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # ----- the status page -----

    async def _status_html(self) -> str:
        st = await self.api.read(status.status, self.api.ctx)
        facts = [
            (
                "Model",
                st.model
                + (f" (after reboot: {st.next_model})" if st.next_model != st.model else ""),
            ),
            ("Firmware", st.firmware_version),
            ("dpfw", st.dpfw_version),
            ("Uptime", f"{int(st.uptime_s)} s"),
            ("RAM", f"{size_text(st.ram.used)} of {size_text(st.ram.total)}"),
            ("Flash", f"{size_text(st.flash.used)} of {size_text(st.flash.total)}"),
            ("POP3", "running" if st.pop3.running else "stopped"),
            ("POP3 sessions", f"{st.pop3.sessions} of {st.pop3.max_sessions}"),
            ("Logins", f"{st.pop3.logins_ok} ok, {st.pop3.logins_failed} failed"),
            ("Scans", f"{st.scans_done} done, {st.scans_failed} failed"),
            ("Pending changes", str(st.pending)),
        ]
        if st.pop3.locked:
            facts.append(("Locked boxes", ", ".join(sorted(st.pop3.locked))))
        if st.feeder:
            facts.append(("Feeder", st.feeder))
        cells = "".join(f"<div><span>{esc(k)}:</span> {esc(v)}</div>" for k, v in facts)
        return (
            f'<div class="facts">{cells}</div><small>as of {esc(time.strftime("%H:%M:%S"))}</small>'
        )

    async def status_fragment(self, request: Request, web: WebSession) -> Response:
        return HTMLResponse(await self._status_html())

    async def home(self, request: Request, web: WebSession) -> Response:
        api = self.api
        listing = await api.read(boxes.box_list, api.ctx)
        live = await api.read(sessions.session_list, api.ctx)
        rows = "".join(
            f'<tr><td><a href="/boxes/{q(b.name)}">{esc(b.name)}</a></td>'
            f'<td class="n">{b.messages}</td><td class="n">{size_text(b.bytes)}</td>'
            f"<td>{'locked ' + str(int(b.locked_s)) + ' s' if b.locked_s else ''}"
            f"{' corrupt: ' + str(b.corrupt) if b.corrupt else ''}</td></tr>"
            for b in listing.boxes
        )
        boxes_html = (
            f"<section><h2>Boxes ({len(listing.boxes)} of {listing.max_boxes})</h2>"
            '<table><tr><th>Box</th><th class="n">Messages</th><th class="n">Size</th>'
            "<th></th></tr>"
            f"{rows}</table></section>"
        )
        srows = "".join(
            f"<tr><td>{s.id}</td><td>{esc(s.peer)}</td><td>{esc(s.box or '')}</td>"
            f"<td>{esc(s.state)}</td><td>{'TLS' if s.tls else ''}</td>"
            f"<td>{esc(when_text(s.started))}</td><td>"
            f'<form class="inline" method="post" action="/sessions/{s.id}/kill">'
            f'{self._csrf(web)}<button name="kill" value="{s.id}">Kill</button></form></td></tr>'
            for s in live.sessions
        )
        sessions_html = (
            f"<section><h2>POP3 sessions ({len(live.sessions)} of {live.limit})</h2>"
            + (
                "<table><tr><th>Id</th><th>Peer</th><th>Box</th><th>State</th><th></th>"
                f"<th>Started (UTC)</th><th></th></tr>{srows}</table>"
                if live.sessions
                else "<p>No sessions.</p>"
            )
            + "</section>"
        )
        options = "".join(
            f'<option value="{esc(b.name)}">{esc(b.name)}</option>' for b in listing.boxes
        )
        jobs = list(api.jobs.values())[-8:]
        jrows = "".join(
            f"<tr><td>{j['job']}</td><td>{esc(j['request'].get('box', ''))}</td>"
            f"<td>{esc(j['state'])}</td><td>{esc(_job_line(j))}</td></tr>"
            for j in reversed(jobs)
        )
        scan_html = (
            "<section><h2>Scan</h2>"
            f'<form method="post" action="/scans">{self._csrf(web)}'
            f'<label>Box <select name="box">{options}</select></label>'
            '<label>Pages <input name="pages" type="number" min="1" value="1" style="width:4em">'
            "</label>"
            '<label>DPI <input name="dpi" value="" placeholder="300" style="width:5em"></label>'
            '<label>Mode <select name="mode"><option value="">default</option>'
            "<option>mono</option><option>gray</option><option>color</option></select></label>"
            '<label>Format <select name="format"><option value="">default</option>'
            "<option>tiff</option><option>pdf</option><option>jpeg</option></select></label>"
            "<button>Start scan</button></form>"
            + (
                f"<table><tr><th>Job</th><th>Box</th><th>State</th><th></th></tr>{jrows}</table>"
                if jobs
                else ""
            )
            + "</section>"
        )
        body = (
            f'<section><h2>Status</h2><div id="status">{await self._status_html()}</div></section>'
            f"{boxes_html}{sessions_html}{self._clients_html()}{scan_html}"
        )
        return HTMLResponse(self._layout(web, "Status", body, script=_REFRESH_JS))

    def _clients_html(self) -> str:
        """The report card: one row per client address, its items behind a <details>."""
        cards = clients.client_list(self.api.ctx).clients
        if not cards:
            return "<section><h2>Clients</h2><p>No POP3 client has connected yet.</p></section>"
        parts = []
        for card in reversed(cards):  # the most recently seen first
            flagged = ", ".join(
                f"{i.name} {i.verdict}" for i in card.items if i.verdict in ("fail", "warn")
            )
            items = "".join(
                f'<tr><td>{esc(i.title)}</td><td class="v-{esc(i.verdict)}">{esc(i.verdict)}'
                f"</td><td>{esc(i.reason)}</td><td>{esc(i.rfc)}</td></tr>"
                for i in card.items
            )
            history = "".join(f"<li>{esc(line)}</li>" for line in card.history[-5:])
            parts.append(
                f"<details><summary>{esc(card.address)}: {esc(card.worst)}, "
                f"{card.counters.get('sessions', 0)} sessions"
                f"{': ' + esc(flagged) if flagged else ''}</summary>"
                "<table><tr><th>Item</th><th>Verdict</th><th>Reason</th><th>Reference</th></tr>"
                f"{items}</table><ul>{history}</ul></details>"
            )
        return (
            f"<section><h2>Clients ({len(cards)})</h2>"
            "<p>Each client address graded against RFC 1939, 2449 and 2595 "
            "(docs/report-card.md; <code>dpfw report IMG</code> exports it).</p>"
            + "".join(parts)
            + "</section>"
        )

    # ----- boxes and messages -----

    async def box_page(self, request: Request, web: WebSession) -> Response:
        api = self.api
        name = _box(request)
        await api.read(boxes.find_box, api.ctx, name)
        listing = await api.store(messages.list_messages, api.ctx, name)
        base = f"/boxes/{q(name)}/messages"
        rows = []
        for number, m in enumerate(listing.messages, 1):
            link = f"{base}/{q(m.uid)}"
            files = " ".join(
                f'<a href="{link}/attachments/{i}">{esc(f)}</a>'
                + (
                    f'<br><img class="thumb" loading="lazy" alt="page 1 of {esc(f)}" '
                    f'src="{link}/attachments/{i}/pages/0.png">'
                    if f.lower().endswith(IMAGE_NAMES)
                    else ""
                )
                for i, f in enumerate(m.attachments)
            )
            subject = "(corrupt record)" if m.corrupt else (m.subject or "(no subject)")
            rows.append(
                f'<tr><td class="n">{number}</td><td><a href="{link}">{esc(subject)}</a></td>'
                f'<td>{esc(m.sender or "")}</td><td class="n">{m.size}</td>'
                f'<td class="d">{esc(when_text(m.date or m.arrived))}</td>'
                f'<td><a href="{link}/raw" download>raw</a></td><td>{files}</td></tr>'
            )
        table = (
            '<table><tr><th>#</th><th>Subject</th><th>From</th><th class="n">Octets</th>'
            "<th>Date (UTC)</th><th></th><th>Attachments</th></tr>" + "".join(rows) + "</table>"
            if rows
            else "<p>No messages.</p>"
        )
        upload = (
            "<section><h2>Upload a message</h2>"
            f'<form method="post" action="/boxes/{q(name)}/upload" enctype="multipart/form-data">'
            f'{self._csrf(web)}<input type="file" name="message" required> '
            "<button>Upload</button></form>"
            "<p>An RFC 5322 message (.eml), stored as POP3 will send it.</p></section>"
        )
        body = f"<section><h2>Box {esc(name)} ({len(rows)} messages)</h2>{table}</section>{upload}"
        return HTMLResponse(self._layout(web, f"Box {name}", body))

    async def _message(self, request: Request) -> tuple[str, str, bytes]:
        name = _box(request)
        uid: str = request.path_params["uid"]
        if not uid or len(uid) > 70 or not uid.isprintable():
            raise ApiError(400, "bad_uid", f"{uid!r} is not a message uid")
        return name, uid, await self.api.store(messages.raw_message, self.api.ctx, name, uid)

    async def message_page(self, request: Request, web: WebSession) -> Response:
        name, uid, raw = await self._message(request)
        parsed = _parse(raw)
        link = f"/boxes/{q(name)}/messages/{q(uid)}"
        heads = "".join(
            f"<tr><th>{esc(k)}</th><td>{esc(_header_text(parsed, k, v))}</td></tr>"
            for k, v in parsed.items()
        )
        parts = []
        for i, part in enumerate(_attachments(parsed)):
            filename = part.get_filename() or ""
            payload = part.get_payload(decode=True)
            size = len(payload) if isinstance(payload, bytes) else 0
            thumbs = ""
            if filename.lower().endswith(IMAGE_NAMES) and isinstance(payload, bytes):
                count = await trio.to_thread.run_sync(_page_count, payload)
                thumbs = "".join(
                    f'<img class="thumb" loading="lazy" alt="page {p + 1}" '
                    f'src="{link}/attachments/{i}/pages/{p}.png">'
                    for p in range(min(count, PAGE_LIMIT))
                )
            elif filename.lower().endswith(".pdf"):
                thumbs = "<small>(no thumbnails of PDF pages: the device cannot render PDF)</small>"
            parts.append(
                f'<tr><td><a href="{link}/attachments/{i}">{esc(filename)}</a></td>'
                f'<td>{esc(part.get_content_type())}</td><td class="n">{size}</td>'
                f"<td>{thumbs}</td></tr>"
            )
        body = (
            f'<section><h2>Message {esc(uid)} in <a href="/boxes/{q(name)}">{esc(name)}</a></h2>'
            f'<p>{len(raw)} octets. <a href="{link}/raw" download>Download the raw message</a></p>'
            f"<table>{heads}</table></section>"
            + (
                "<section><h2>Attachments</h2><table><tr><th>File</th><th>Type</th>"
                '<th class="n">Bytes</th><th>Pages</th></tr>'
                + "".join(parts)
                + "</table></section>"
                if parts
                else ""
            )
        )
        return HTMLResponse(self._layout(web, f"Message {uid}", body))

    async def raw(self, request: Request, web: WebSession) -> Response:
        _, uid, raw = await self._message(request)
        return Response(
            raw,
            media_type="message/rfc822",
            headers={"Content-Disposition": _disposition(f"{uid}.eml")},
        )

    def _attachment(self, raw: bytes, n: int) -> Message:
        found = _attachments(_parse(raw))
        if n >= len(found):
            raise ApiError(404, "not_found", f"the message has no attachment {n}")
        return found[n]

    async def attachment(self, request: Request, web: WebSession) -> Response:
        _, _, raw = await self._message(request)
        part = self._attachment(raw, request.path_params["n"])
        payload = part.get_payload(decode=True)
        return Response(
            payload if isinstance(payload, bytes) else b"",
            media_type=part.get_content_type(),
            headers={
                "Content-Disposition": _disposition(part.get_filename() or "attachment"),
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def thumbnail(self, request: Request, web: WebSession) -> Response:
        _, _, raw = await self._message(request)
        part = self._attachment(raw, request.path_params["n"])
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            raise ApiError(404, "not_found", "the attachment holds no data")
        page = request.path_params["page"]
        width, height = _page_size(payload, page)
        # The decoded page is held in the device's RAM budget while it is scaled.
        with self.api.device.budget.reserve(width * height * 4, "page thumbnail"):
            png = await trio.to_thread.run_sync(_thumbnail, payload, page)
        return Response(
            png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"}
        )

    async def upload(self, request: Request, web: WebSession) -> Response:
        api = self.api
        name = _box(request)
        await api.read(boxes.find_box, api.ctx, name)
        usage = await api.read(lambda: api.ctx.board.usage())
        limit = min(api.ctx.profile.int("mailbox.quota_mib") << 20, usage.total) + MULTIPART_SLACK
        back = f"/boxes/{q(name)}"
        content_type = request.headers.get("content-type", "")
        boundary = _boundary(content_type)
        # The upload is held in image RAM while it arrives, as the API's delivery is.
        with api.device.budget.reserve(0, f"web upload to box {name!r}") as held:
            body = bytearray()
            chunks = request.stream()
            try:
                async for chunk in chunks:
                    if len(body) + len(chunk) > limit:
                        raise DeviceError(
                            f"the upload exceeds {limit} bytes, the most box {name!r} can hold "
                            "(mailbox.quota_mib, flash size); nothing stored"
                        )
                    held.grow(len(chunk))
                    body += chunk
            except DeviceError as exc:  # too large, or MEMORY FULL
                del body
                held.release()
                await _drain(chunks)  # so the browser reads the answer, not a reset
                return self._redirect(web, back, "error", " ".join(str(exc).split()))
            fields, files = _multipart(body, boundary)
            del body
            if not secrets.compare_digest(fields.get("csrf", ""), web.csrf):
                return _text(403, "the form's CSRF token is missing or stale; reload")
            data = files.get("message")
            if not data:
                return self._redirect(web, back, "error", "choose a message file to upload")
            try:
                info = await api.store(messages.deliver, api.ctx, name, data)
            except DeviceError as exc:
                return self._redirect(web, back, "error", " ".join(str(exc).split()))
        return self._redirect(
            web, back, "ok", f"stored message {info.uid} ({info.size} octets) in {name}"
        )

    # ----- sessions, scans -----

    async def kill(self, request: Request, web: WebSession) -> Response:
        text: str = request.path_params["session"]
        if not (text.isascii() and text.isdigit()) or len(text) > 18:
            raise ApiError(400, "bad_id", f"{text!r} is not a session id")
        try:
            ident = sessions.session_kill(self.api.ctx, int(text))
        except DeviceError as exc:
            return self._redirect(web, "/", "error", " ".join(str(exc).split()))
        return self._redirect(web, "/", "ok", f"session {ident} killed")

    async def scan(self, request: Request, web: WebSession) -> Response:
        fields: dict[str, str] = request.state.form
        options = {
            key: fields[key].strip()
            for key in ("pages", "dpi", "mode", "format")
            if fields.get(key, "").strip()
        }
        try:
            scan_request = await self.api.read(
                scans.prepare_scan, self.api.ctx, fields.get("box", ""), options
            )
            job = self.api.submit_scan(scan_request)
        except (DeviceError, ApiError) as exc:
            line = exc.message if isinstance(exc, ApiError) else " ".join(str(exc).split())
            return self._redirect(web, "/", "error", line)
        return self._redirect(web, "/", "ok", f"scan job {job['job']} started")

    # ----- profile -----

    async def profile_page(
        self, request: Request, web: WebSession, errors: dict[str, tuple[str, str]] | None = None
    ) -> Response:
        errors = errors or {}
        view = await self.api.read(ops_profile.profile_view, self.api.ctx)
        known = {k.key for k in view.keys}
        for key, (_, line) in errors.items():
            if key not in known:  # no row to show it in: a note at the top
                web.notes.append(("error", line))
        rows = []
        for k in view.keys:
            typed, error = errors.get(k.key, (None, ""))
            value = typed if typed is not None else _value_text(k.saved)
            pending = "" if k.saved == k.running else f" (running: {_value_text(k.running)})"
            rows.append(
                f'<tr id="{esc(k.key)}"><td><b>{esc(k.key)}</b><br><small>{esc(k.doc)}</small></td>'
                f'<td><form class="inline" method="post" action="/profile">{self._csrf(web)}'
                f'<input type="hidden" name="key" value="{esc(k.key)}">'
                f'<input name="value" value="{esc(value)}" size="24" '
                f'aria-label="{esc(k.key)}"> <button>Set</button></form>'
                f"{esc(pending)}"
                + (f'<div class="err">{esc(error)}</div>' if error else "")
                + f"</td><td><small>{esc(k.allowed)}</small></td>"
                f"<td>{'live' if k.live else 'after reboot'}</td></tr>"
            )
        body = (
            f"<section><h2>Profile ({esc(view.model)})</h2>"
            "<p>Saved values; live keys apply at once, the others after a reboot.</p>"
            "<table><tr><th>Key</th><th>Value</th><th>Allowed</th><th>Applies</th></tr>"
            + "".join(rows)
            + "</table></section>"
        )
        code = 422 if errors else 200
        return HTMLResponse(self._layout(web, "Profile", body), status_code=code)

    async def profile_set(self, request: Request, web: WebSession) -> Response:
        fields: dict[str, str] = request.state.form
        key = fields.get("key", "")
        value = fields.get("value", "")
        try:
            plan = await self.api.read(
                ops_profile.plan_set, self.api.ctx, [(key, value)], "profile set"
            )
            update = await self.api.store(ops_profile.commit, self.api.ctx, plan)
        except DeviceError as exc:
            line = " ".join(str(exc).split())
            return await self.profile_page(request, web, {key: (value, line)})
        if not update.changes:
            line = f"{key} unchanged"
        else:
            line = "; ".join(
                f"{c.key} = {_value_text(c.after)} ({'now' if c.when == 'now' else 'after reboot'})"
                for c in update.changes
            )
        return self._redirect(web, f"/profile#{key}", "ok", line)


# ----- helpers -----


def _text(code: int, line: str) -> Response:
    return HTMLResponse(
        f'<!doctype html><meta charset="utf-8"><title>{code}</title>'
        f'<p>{esc(line)}</p><p><a href="/">Back</a></p>',
        status_code=code,
    )


def _device_status(exc: DeviceError) -> int:
    from firmware.http.errors import from_device_error

    return from_device_error(exc).status_code


def _box(request: Request) -> str:
    name: str = request.path_params["box"]
    check_box_name(name)
    return name


def _job_line(job: dict[str, Any]) -> str:
    if job.get("state") == "done":
        result = job.get("result", {})
        pages, uid, size = result.get("pages"), result.get("uid"), result.get("size")
        return f"{pages} page{'' if pages == 1 else 's'}, message {uid} ({size} octets)"
    return str(job.get("error", ""))


def _value_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)


async def _form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body as {name: last value}."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await read_limited(request.stream(), FORM_LIMIT, "a form")
    if not raw:
        return {}
    if content_type != "application/x-www-form-urlencoded":
        raise ApiError(415, "content_type", "a form must be application/x-www-form-urlencoded")
    try:
        pairs = urllib.parse.parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise ApiError(400, "bad_form", "the form is not UTF-8") from None
    return dict(pairs)


async def _drain(chunks: AsyncIterator[bytes], limit: int = DRAIN_LIMIT) -> None:
    """Read and drop the rest of a refused upload (up to `limit` bytes; a longer one is cut
    off): closing a socket with unread data resets it and the answer may be lost."""
    dropped = 0
    async for chunk in chunks:
        dropped += len(chunk)
        if dropped > limit:
            return


def _boundary(content_type: str) -> bytes:
    """The boundary of a multipart/form-data Content-Type (RFC 7578 §4.1)."""
    msg = Message()
    msg["Content-Type"] = content_type
    if msg.get_content_type() != "multipart/form-data":
        raise ApiError(415, "content_type", "an upload must be multipart/form-data")
    boundary = msg.get_param("boundary")
    if not isinstance(boundary, str) or not 0 < len(boundary) <= 70:
        raise ApiError(400, "bad_form", "the multipart body has no usable boundary")
    return boundary.encode("ascii", "replace")


def _multipart(body: bytearray, boundary: bytes) -> tuple[dict[str, str], dict[str, bytes]]:
    """({field: text}, {file field: bytes}) of a multipart/form-data body (RFC 7578), the
    file bytes exactly as sent. ApiError 400 for a body that is not one."""
    delimiter = b"--" + boundary
    pieces = body.split(b"\r\n" + delimiter)
    if not pieces[0].startswith(delimiter):
        raise ApiError(400, "bad_form", "the multipart body does not start with its boundary")
    pieces[0] = pieces[0][len(delimiter) :]
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for piece in pieces:
        if piece.startswith(b"--"):
            break
        if not piece.startswith(b"\r\n"):
            raise ApiError(400, "bad_form", "a multipart part is not well-formed")
        head, sep, content = piece[2:].partition(b"\r\n\r\n")
        if not sep:
            raise ApiError(400, "bad_form", "a multipart part has no header end")
        part = BytesParser(policy=email.policy.HTTP).parsebytes(bytes(head) + b"\r\n\r\n")
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        if part.get_param("filename", header="content-disposition") is not None:
            files[name] = bytes(content)
        else:
            fields[name] = bytes(content).decode("utf-8", "replace")
    return fields, files


def _parse(raw: bytes) -> EmailMessage:
    parsed = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _attachments(parsed: EmailMessage) -> list[Message]:
    """The attachments with a file name, in order: as the ops listing counts them."""
    return [part for part in parsed.iter_attachments() if part.get_filename() is not None]


def _header_text(parsed: EmailMessage, name: str, value: object) -> str:
    try:
        return str(value)
    except Exception:
        return str(parsed.get_all(name, [""])[0])


def _disposition(filename: str) -> str:
    """Content-Disposition: attachment with an ASCII fallback and the RFC 6266 UTF-8 name."""
    ascii_name = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename
    )
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{q(filename)}"


def _page_count(data: bytes) -> int:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return int(getattr(img, "n_frames", 1))
    except Exception:
        return 0


def _open(data: bytes, page: int) -> Any:
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
    except Exception:
        raise ApiError(
            415, "not_image", "the attachment is not an image the device can read"
        ) from None
    frames = int(getattr(img, "n_frames", 1))
    if not 0 <= page < frames:
        img.close()
        raise ApiError(404, "not_found", f"the file has {frames} pages; no page {page + 1}")
    img.seek(page)
    img.draft("RGB", THUMB)  # JPEG: decode at a reduced scale
    return img


def _page_size(data: bytes, page: int) -> tuple[int, int]:
    """(width, height) in pixels of page `page` as it will be decoded (headers only).
    ApiError 404 for a page the file does not have, 415 for data Pillow cannot read."""
    with _open(data, page) as img:
        width, height = img.size
    return int(width), int(height)


def _thumbnail(data: bytes, page: int) -> bytes:
    """Page `page` of an image file (TIFF, JPEG, PNG) as a PNG of at most THUMB pixels."""
    with _open(data, page) as img:
        frame = img.convert("L") if img.mode in ("1", "L", "I;16") else img.convert("RGB")
        frame.thumbnail(THUMB)
        out = io.BytesIO()
        frame.save(out, "PNG")
    return out.getvalue()
