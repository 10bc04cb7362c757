"""The API's routes: parse the request, call `firmware.ops`, answer JSON.

No business logic lives here: every operation, check and refusal is the ops layer's (the
console and the CLI call the same functions). This module reads HTTP (paths, query, JSON
bodies, Basic credentials), turns a result into JSON with `dataclasses.asdict`, and a
`DeviceError` into its status (firmware.http.errors). Operations that touch the store run
through the device's store worker when it has one, so the loop never waits on fsync.
"""

from __future__ import annotations

import dataclasses
import email.policy
import itertools
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from email.message import EmailMessage
from email.parser import BytesParser
from typing import TYPE_CHECKING, Any, TypeVar

import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from firmware.config.profile import SCHEMA
from firmware.errors import BadNameError, DeviceError, MemoryFullError, QuotaError
from firmware.faults.spec import FaultSpecError
from firmware.http import auth
from firmware.http.body import (
    JSON_LIMIT,
    Field,
    check_content_type,
    check_message,
    parse_object,
    read_limited,
)
from firmware.http.errors import ApiError, error_response, from_api_error, from_device_error
from firmware.http.metrics import CONTENT_TYPE as METRICS_TYPE
from firmware.http.metrics import ApiMetrics
from firmware.http.openapi import openapi_document
from firmware.http.web import Web
from firmware.ops import (
    boxes,
    clients,
    ifax,
    messages,
    scans,
    sessions,
    status,
    storage,
    system,
)
from firmware.ops import faults as ops_faults
from firmware.ops import profile as ops_profile
from firmware.ops import trace as ops_trace
from firmware.ops.context import OpsContext
from firmware.security.abuse import AdminLockout
from firmware.store.board import check_box_name

if TYPE_CHECKING:
    from firmware.device.device import Device

log = logging.getLogger("dpfw.http")

API = "/api/v1"
DRAIN_LIMIT = 16 << 20  # after refusing an upload, read (and drop) this much more of it
SSE_KEEPALIVE_S = 15.0  # a comment line on a quiet trace stream, so proxies keep it open
MAX_JOBS = 256  # finished scan jobs remembered for GET /api/v1/scans/{job}
T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]


def as_json(result: Any) -> Any:
    """A result dataclass (or a list of them) as plain JSON values."""
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return dataclasses.asdict(result)
    if isinstance(result, list):
        return [as_json(item) for item in result]
    return result


class Api:
    """The API of one running device: its routes, counters and scan jobs."""

    def __init__(
        self, device: Device, lockout: AdminLockout | None = None, *, trusted: bool = False
    ) -> None:
        self.device = device
        self.trusted = trusted
        """No login: the control socket (firmware/http/server.py), where the socket file's
        owner and mode (0600) are the access check, as for docker.sock."""
        self.ctx = OpsContext.running(device)
        self.lockout = lockout if lockout is not None else device.admin_lockout
        self.metrics = ApiMetrics(device)
        self.jobs: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._job_ids = itertools.count(1)
        self.nursery: trio.Nursery | None = None  # where scan jobs run; set by the server
        self._auth_lock = trio.Lock()  # admin password checks, one at a time
        self.auth_cache = auth.VerifiedCache()  # admin credentials verified lately
        self.web = Web(self)  # the device's web page at / (firmware.http.web)
        self.app = Starlette(
            routes=self._routes() + self.web.routes(),
            exception_handlers={HTTPException: _http_exception},
        )

    # ----- plumbing -----

    async def store(self, fn: Callable[..., T], *args: Any) -> T:
        """Run an operation that writes or reads the store at length on the device's store
        worker (`OpsContext.run_store`), so the loop keeps serving POP3 meanwhile."""
        return await self.ctx.run_store(fn, *args)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a short read of the store here on the loop, holding the board against the
        store worker (`StoreWorker.reading`): a listing must not iterate the board's tables
        while the worker thread appends to them ("dictionary changed size" under load)."""
        worker = getattr(self.device, "store_worker", None)
        if worker is None:
            return fn(*args)
        async with worker.reading():
            return fn(*args)

    async def _check_password(self, password: str) -> bool:
        _ = self.ctx.board  # DeviceError (503) while the device reboots, before a thread
        worker = getattr(self.device, "store_worker", None)
        if worker is not None:  # its own thread and limiter: never behind a compaction
            ok: bool = await worker.verify(system.check_admin_password, self.ctx, password)
            return ok
        return await trio.to_thread.run_sync(system.check_admin_password, self.ctx, password)

    def _auth_stamp(self) -> object:
        """The admin credentials' generation: the boot and the NVRAM generation (every
        NVRAM write, a password change among them, makes a new one). DeviceError (503)
        while the device reboots."""
        return (getattr(self.device, "boots", 0), self.ctx.board.nvram_slots)

    def _route(
        self, path: str, methods: list[str], handler: Handler, *, public: bool = False
    ) -> Route:
        async def endpoint(request: Request) -> Response:
            response = await self._answer(request, handler, public)
            self.metrics.requests.labels(request.method, path, str(response.status_code)).inc()
            return response

        return Route(path, endpoint, methods=methods)

    async def _answer(self, request: Request, handler: Handler, public: bool) -> Response:
        try:
            if not public and not self.trusted:
                client = request.client
                await auth.authenticate(
                    request.headers.get("authorization"),
                    client.host if client is not None else "unknown",
                    self.lockout,
                    trio.current_time,
                    self._check_password,
                    self.metrics.login,
                    self._auth_lock,
                    self.auth_cache,
                    self._auth_stamp,
                )
            return await handler(request)
        except ApiError as exc:
            return from_api_error(exc)
        except DeviceError as exc:
            return from_device_error(exc)
        except Exception:
            log.exception("http: internal error in %s %s", request.method, request.url.path)
            return error_response(500, "internal", "internal error (logged on the device)")

    def _routes(self) -> list[Route]:
        r = self._route
        return [
            r(f"{API}/openapi.json", ["GET"], self.openapi, public=True),
            r("/metrics", ["GET"], self.prometheus),
            r(f"{API}/status", ["GET"], self.get_status),
            r(f"{API}/image", ["GET"], self.get_image),
            r(f"{API}/boxes", ["GET"], self.list_boxes),
            r(f"{API}/boxes", ["POST"], self.add_box),
            r(f"{API}/boxes/{{box}}", ["GET"], self.show_box),
            r(f"{API}/boxes/{{box}}", ["PATCH"], self.change_box),
            r(f"{API}/boxes/{{box}}", ["DELETE"], self.delete_box),
            r(f"{API}/boxes/{{box}}/messages", ["GET"], self.list_messages),
            r(f"{API}/boxes/{{box}}/messages", ["POST"], self.deliver),
            r(f"{API}/boxes/{{box}}/messages/{{uid}}", ["GET"], self.show_message),
            r(f"{API}/boxes/{{box}}/messages/{{uid}}", ["DELETE"], self.delete_message),
            r(f"{API}/boxes/{{box}}/messages/{{uid}}/raw", ["GET"], self.raw_message),
            r(f"{API}/profile", ["GET"], self.get_profile),
            r(f"{API}/profile", ["PATCH"], self.patch_profile),
            r(f"{API}/profile/apply", ["POST"], self.apply_profile),
            r(f"{API}/sessions", ["GET"], self.list_sessions),
            r(f"{API}/sessions/{{session}}", ["DELETE"], self.kill_session),
            r(f"{API}/trace", ["GET"], self.trace),
            r(f"{API}/clients", ["GET"], self.list_clients),
            r(f"{API}/clients/{{address}}", ["GET"], self.show_client),
            r(f"{API}/scans", ["POST"], self.start_scan),
            r(f"{API}/scans/{{job}}", ["GET"], self.get_scan),
            r(f"{API}/ifax", ["GET"], self.ifax_status),
            r(f"{API}/ifax/poll", ["POST"], self.ifax_poll),
            r(f"{API}/tray", ["GET"], self.tray_list),
            r(f"{API}/tray", ["DELETE"], self.tray_clear),
            r(f"{API}/tray/{{number}}", ["GET"], self.tray_show),
            r(f"{API}/faults", ["GET"], self.list_faults),
            r(f"{API}/faults", ["POST"], self.add_fault),
            r(f"{API}/faults", ["DELETE"], self.clear_faults),
            r(f"{API}/faults/{{fault}}", ["GET"], self.show_fault),
            r(f"{API}/faults/{{fault}}", ["DELETE"], self.clear_fault),
        ]

    async def _json(self, request: Request, spec: dict[str, Field]) -> dict[str, Any]:
        check_content_type(request.headers, "application/json")
        raw = await read_limited(request.stream(), JSON_LIMIT, "a JSON body")
        return parse_object(raw, spec)

    def _no_query(self, request: Request, allowed: tuple[str, ...] = ()) -> None:
        for key in request.query_params:
            if key not in allowed:
                known = ", ".join(allowed) or "none"
                raise ApiError(
                    400, "unknown_parameter", f"unknown query parameter {key!r}; known: {known}"
                )

    def _box(self, request: Request) -> str:
        """The {box} of the path, a valid box name (BoxError 400 names the rule)."""
        name: str = request.path_params["box"]
        check_box_name(name)
        return name

    def _uid(self, request: Request) -> str:
        uid: str = request.path_params["uid"]
        if not uid or len(uid) > 70 or not uid.isprintable():
            raise ApiError(400, "bad_uid", f"{uid!r} is not a message uid (see the listing)")
        return uid

    # ----- documents -----

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def prometheus(self, request: Request) -> Response:
        self._no_query(request)
        return Response(await self.read(self.metrics.render), media_type=METRICS_TYPE)

    # ----- status -----

    async def get_status(self, request: Request) -> Response:
        self._no_query(request)
        return JSONResponse(as_json(await self.read(status.status, self.ctx)))

    async def get_image(self, request: Request) -> Response:
        """What `dpfw image inspect` shows (firmware.ops.storage.inspect), read-only; it
        re-reads every record, so it runs on the store worker."""
        self._no_query(request)
        listing = await self.read(boxes.box_list, self.ctx)
        return JSONResponse(await self.store(storage.inspect, self.ctx, listing))

    # ----- boxes -----

    async def list_boxes(self, request: Request) -> Response:
        self._no_query(request)
        return JSONResponse(as_json(await self.read(boxes.box_list, self.ctx)))

    _ADD_BOX = {  # noqa: RUF012 - read only
        "name": Field(
            (str,), required=True, doc="1-40 printable ASCII; no spaces, '/', '.' or '..'"
        ),
        "password": Field((str,), required=True, doc="the box's POP3 password"),
        "legacy": Field((bool,), doc="keep an APOP/CRAM-MD5 secret (default: while pop3.apop)"),
    }

    async def add_box(self, request: Request) -> Response:
        self._no_query(request)
        body = await self._json(request, self._ADD_BOX)
        name = body["name"]
        try:
            check_box_name(name)
        except BadNameError as exc:
            raise ApiError(400, "bad_name", str(exc), field="name") from None
        change = await self.store(_box_add, self.ctx, name, body["password"], body.get("legacy"))
        return JSONResponse(
            as_json(change),
            status_code=201,
            headers={"Location": f"{API}/boxes/{name}"},
        )

    async def show_box(self, request: Request) -> Response:
        self._no_query(request)
        return JSONResponse(as_json(await self.read(boxes.box_show, self.ctx, self._box(request))))

    _CHANGE_BOX = {  # noqa: RUF012 - read only
        "password": Field((str,), doc="a new POP3 password"),
        "legacy": Field((bool,), doc="with password: keep an APOP/CRAM-MD5 secret or not"),
        "unlock": Field((bool,), doc="true: end the box's lock-out after failed logins"),
    }

    async def change_box(self, request: Request) -> Response:
        self._no_query(request)
        name = self._box(request)
        body = await self._json(request, self._CHANGE_BOX)
        if not body:
            raise ApiError(400, "empty", "nothing to change; give password and/or unlock")
        if "legacy" in body and "password" not in body:
            raise ApiError(400, "missing_key", "'legacy' needs 'password'", field="legacy")
        if body.get("unlock") is False:
            raise ApiError(400, "bad_value", "'unlock' can only be true", field="unlock")
        await self.read(boxes.find_box, self.ctx, name)
        result: dict[str, Any] = {"name": name}
        if "password" in body:
            change = await self.store(
                _box_passwd, self.ctx, name, body["password"], body.get("legacy")
            )
            result["password"] = as_json(change)
        if body.get("unlock"):
            result["unlock"] = as_json(await self.read(boxes.box_unlock, self.ctx, name))
        return JSONResponse(result)

    async def delete_box(self, request: Request) -> Response:
        self._no_query(request, ("purge",))
        name = self._box(request)
        purge = _flag(request, "purge")
        await self.read(boxes.find_box, self.ctx, name)
        return JSONResponse(as_json(await self.store(_box_del, self.ctx, name, purge)))

    # ----- messages -----

    async def list_messages(self, request: Request) -> Response:
        self._no_query(request)
        name = self._box(request)
        await self.read(boxes.find_box, self.ctx, name)
        listing = await self.store(messages.list_messages, self.ctx, name)
        return JSONResponse(messages.listing_json(listing))

    async def deliver(self, request: Request) -> Response:
        self._no_query(request)
        name = self._box(request)
        await self.read(boxes.find_box, self.ctx, name)
        check_content_type(request.headers, "message/rfc822")
        profile = self.ctx.profile
        usage = await self.read(lambda: self.ctx.board.usage())
        limit = min(profile.int("mailbox.quota_mib") << 20, usage.total)
        declared = request.headers.get("content-length")
        if (
            declared is not None
            and declared.isascii()
            and declared.isdigit()
            and int(declared) > limit
        ):
            raise ApiError(
                413,
                "too_large",
                f"a message of {declared} bytes cannot fit: box {name!r} holds at most "
                f"{limit} bytes (mailbox.quota_mib, flash size)",
            )
        # The body is held in image RAM while it arrives, as a real board would: a device
        # that cannot hold it answers MEMORY FULL (507) and stores nothing.
        chunks = request.stream()
        with self.device.budget.reserve(0, f"API delivery to box {name!r}") as held:
            data = bytearray()
            try:
                async for chunk in chunks:
                    if len(data) + len(chunk) > limit:
                        raise ApiError(
                            413,
                            "too_large",
                            f"the message exceeds {limit} bytes, the most box {name!r} can "
                            "hold (mailbox.quota_mib, flash size); nothing stored",
                        )
                    held.grow(len(chunk))
                    data += chunk
            except (ApiError, MemoryFullError):
                del data
                held.release()
                await _drain(chunks, DRAIN_LIMIT)
                raise
            check_message(data)
            started = time.perf_counter()
            try:
                info = await self.store(messages.deliver, self.ctx, name, bytes(data))
            except QuotaError as exc:  # this message over the box's quota or message count
                raise ApiError(413, "quota", str(exc)) from None
            self.metrics.delivery_seconds.observe(time.perf_counter() - started)
        self.metrics.deliveries.inc()
        row = messages.message_json(info)
        row["box"] = name
        return JSONResponse(
            row,
            status_code=201,
            headers={"Location": f"{API}/boxes/{name}/messages/{info.uid}"},
        )

    async def _raw(self, request: Request) -> tuple[str, str, bytes]:
        name = self._box(request)
        uid = self._uid(request)
        return name, uid, await self.store(messages.raw_message, self.ctx, name, uid)

    async def raw_message(self, request: Request) -> Response:
        self._no_query(request)
        _, _, raw = await self._raw(request)
        return Response(raw, media_type="message/rfc822")

    async def show_message(self, request: Request) -> Response:
        self._no_query(request)
        name, uid, raw = await self._raw(request)
        return JSONResponse({"box": name, "uid": uid, "size": len(raw), **message_json(raw)})

    async def delete_message(self, request: Request) -> Response:
        self._no_query(request)
        name = self._box(request)
        uid = self._uid(request)
        return JSONResponse(as_json(await self.store(messages.delete_message, self.ctx, name, uid)))

    # ----- profile -----

    async def get_profile(self, request: Request) -> Response:
        self._no_query(request)
        view = await self.read(ops_profile.profile_view, self.ctx)
        out = as_json(view)
        out["pending"] = [k.key for k in view.pending]
        return JSONResponse(out)

    async def patch_profile(self, request: Request) -> Response:
        self._no_query(request)
        check_content_type(request.headers, "application/json")
        raw = await read_limited(request.stream(), JSON_LIMIT, "a JSON body")
        spec = {key: Field(_json_types(key)) for key in SCHEMA}
        try:
            body = parse_object(raw, spec)
        except ApiError as exc:
            if exc.kind == "unknown_key" and exc.field is not None:
                unknown = ops_profile_unknown(exc.field)
                raise ApiError(400, "unknown_key", unknown, field=exc.field) from None
            raise
        if not body:
            raise ApiError(400, "empty", 'nothing to change; give {"KEY": VALUE, ...}')
        pairs = [(key, _as_text(key, value)) for key, value in body.items()]
        plan = await self.read(ops_profile.plan_set, self.ctx, pairs, "PATCH /api/v1/profile")
        update = await self.store(ops_profile.commit, self.ctx, plan)
        return JSONResponse(as_json(update))

    _APPLY = {  # noqa: RUF012 - read only
        "model": Field((str,), required=True, doc="a model name, e.g. DP-4520"),
        "factory": Field((bool,), doc="true: site keys take factory values too"),
    }

    async def apply_profile(self, request: Request) -> Response:
        self._no_query(request)
        body = await self._json(request, self._APPLY)
        keep_site = not body.get("factory", False)
        plan = await self.read(_plan_apply, self.ctx, body["model"], keep_site)
        update = await self.store(ops_profile.commit, self.ctx, plan)
        return JSONResponse(as_json(update))

    # ----- sessions -----

    async def list_sessions(self, request: Request) -> Response:
        self._no_query(request)
        return JSONResponse(as_json(await self.read(sessions.session_list, self.ctx)))

    # ----- the client report card (docs/report-card.md) -----

    async def list_clients(self, request: Request) -> Response:
        """{"live": true, "written": null, "clients": [card, ...]}: one card per address."""
        self._no_query(request)
        return JSONResponse(as_json(clients.client_list(self.ctx)))

    async def show_client(self, request: Request) -> Response:
        """One address's card; 404 when that address never connected."""
        self._no_query(request)
        address = request.path_params["address"]
        try:
            found = clients.client_list(self.ctx, address)
        except DeviceError as exc:
            raise ApiError(404, "not_found", str(exc)) from None
        return JSONResponse(as_json(found.clients[0]))

    # ----- Internet Fax: the poller and the output tray (docs/ifax.md) -----

    async def ifax_status(self, request: Request) -> Response:
        self._no_query(request)
        return JSONResponse(as_json(await self.read(ifax.status, self.ctx)))

    async def ifax_poll(self, request: Request) -> Response:
        """Poll the mail server now, as console `ifax poll`; the result once it is done."""
        self._no_query(request)
        return JSONResponse(as_json(await ifax.poll(self.ctx)))

    async def tray_list(self, request: Request) -> Response:
        """The tray's documents, oldest first: a JSON list of objects with `number`, `status`
        (`printed`, `error`, `corrupt`), `from`, `subject`, `date`, `pages`, `resolution`."""
        self._no_query(request)
        return JSONResponse((await self.read(ifax.tray_list, self.ctx)).json())

    async def tray_show(self, request: Request) -> Response:
        self._no_query(request)
        text: str = request.path_params["number"]
        if not (text.isascii() and text.isdigit()) or len(text) > 9:
            raise ApiError(400, "bad_number", f"{text!r} is not a tray number (GET {API}/tray)")
        return JSONResponse((await self.read(ifax.tray_show, self.ctx, int(text))).json())

    async def tray_clear(self, request: Request) -> Response:
        self._no_query(request)
        return JSONResponse(as_json(await self.store(ifax.tray_clear, self.ctx)))

    async def trace(self, request: Request) -> Response:
        """The POP3 protocol trace as Server-Sent Events (WHATWG HTML §9.2): a comment line
        once subscribed, then one `event: trace` per record, its `data` the record as JSON
        (firmware/pop3/trace.py); `?session=ID` keeps one session's. A client that reads too
        slowly loses records, never slows POP3."""
        self._no_query(request, ("session",))
        session: int | None = None
        if "session" in request.query_params:
            text = request.query_params["session"]
            if not (text.isascii() and text.isdigit()):
                raise ApiError(400, "bad_parameter", f"session {text!r} is not a session id")
            session = int(text)
        tracer = ops_trace.tracer(self.ctx)

        async def events() -> AsyncIterator[bytes]:
            with tracer.subscribe() as records:
                yield b": trace stream open\n\n"
                while True:
                    record = None
                    with trio.move_on_after(SSE_KEEPALIVE_S):  # never yield inside it
                        record = await records.receive()
                    if record is None:
                        yield b": keepalive\n\n"
                    elif session is None or record.session == session:
                        data = json.dumps(record.to_json())
                        yield f"event: trace\ndata: {data}\n\n".encode()

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    async def kill_session(self, request: Request) -> Response:
        self._no_query(request)
        text: str = request.path_params["session"]
        if not (text.isascii() and text.isdigit()) or len(text) > 18:
            raise ApiError(400, "bad_id", f"{text!r} is not a session id (see GET {API}/sessions)")
        ident = sessions.session_kill(self.ctx, int(text))
        return JSONResponse({"killed": ident})

    # ----- faults (docs/faults.md) -----

    async def list_faults(self, request: Request) -> Response:
        """The faults set, each with how often it fired; the plan's seed; firings by action."""
        self._no_query(request)
        return JSONResponse(as_json(ops_faults.list_faults(self.ctx)))

    async def add_fault(self, request: Request) -> Response:
        """Set one fault from its JSON object (docs/faults.md): 201 and the fault (its `id`)."""
        self._no_query(request)
        check_content_type(request.headers, "application/json")
        raw = await read_limited(request.stream(), JSON_LIMIT, "a JSON body")
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ApiError(400, "bad_json", f"the body is not JSON: {exc}") from None
        try:
            added = ops_faults.add_fault(self.ctx, obj)
        except FaultSpecError as exc:
            raise ApiError(400, "bad_fault", str(exc)) from None
        return JSONResponse(as_json(added), status_code=201)

    def _fault_id(self, request: Request) -> int:
        text: str = request.path_params["fault"]
        if not text.isdigit() or len(text) > 9:
            raise ApiError(400, "bad_id", f"{text!r} is not a fault id (see GET {API}/faults)")
        fault_id = int(text)
        if all(f.id != fault_id for f in ops_faults.fault_plan(self.ctx).faults()):
            raise ApiError(404, "not_found", f"no fault {fault_id} (see GET {API}/faults)")
        return fault_id

    async def show_fault(self, request: Request) -> Response:
        self._no_query(request)
        fault_id = self._fault_id(request)
        return JSONResponse(as_json(ops_faults.info(ops_faults.fault_plan(self.ctx).get(fault_id))))

    async def clear_fault(self, request: Request) -> Response:
        self._no_query(request)
        fault_id = self._fault_id(request)
        return JSONResponse(as_json(ops_faults.clear_faults(self.ctx, fault_id)))

    async def clear_faults(self, request: Request) -> Response:
        self._no_query(request)
        return JSONResponse(as_json(ops_faults.clear_faults(self.ctx)))

    # ----- scans -----

    _SCAN = {  # noqa: RUF012 - read only
        "box": Field((str,), required=True, doc="the box the scan is stored in"),
        "pages": Field((int,), doc="number of pages (default 1)"),
        "dpi": Field((str, int), doc="a resolution the profile offers (default 300)"),
        "mode": Field((str,), doc="mono, gray or color (default: the first offered)"),
        "format": Field((str,), doc="tiff, pdf or jpeg (default: the first that fits)"),
    }

    async def start_scan(self, request: Request) -> Response:
        self._no_query(request)
        body = await self._json(request, self._SCAN)
        options = {key: str(value) for key, value in body.items() if key != "box"}
        scan_request = await self.read(scans.prepare_scan, self.ctx, body["box"], options)
        record = self.submit_scan(scan_request)
        return JSONResponse(
            record, status_code=202, headers={"Location": f"{API}/scans/{record['job']}"}
        )

    def submit_scan(self, scan_request: Any) -> dict[str, Any]:
        """Start a prepared scan as a job (the API's and the web page's); its record."""
        if self.nursery is None:
            raise ApiError(503, "not_running", "the API is not serving scan jobs yet")
        job = next(self._job_ids)
        self.jobs[job] = {"job": job, "state": "running", "request": as_json(scan_request)}
        while len(self.jobs) > MAX_JOBS:
            self.jobs.popitem(last=False)
        self.nursery.start_soon(self._run_scan, job, scan_request)
        return self.jobs[job]

    async def _run_scan(self, job: int, scan_request: Any) -> None:
        record = self.jobs.get(job, {})
        try:
            done = await scans.run_scan(self.ctx, scan_request)
        except DeviceError as exc:
            record.update(state="failed", error=" ".join(str(exc).split()))
        except Exception:
            log.exception("http: scan job %d failed", job)
            record.update(state="failed", error="internal error (logged on the device)")
        else:
            record.update(state="done", result=as_json(done))

    async def get_scan(self, request: Request) -> Response:
        self._no_query(request)
        text: str = request.path_params["job"]
        record = (
            self.jobs.get(int(text))
            if text.isascii() and text.isdigit() and len(text) < 18
            else None
        )
        if record is None:
            raise ApiError(
                404,
                "not_found",
                f"no scan job {text!r} (the last {MAX_JOBS} jobs are kept until the process "
                "ends; a reboot keeps them)",
            )
        return JSONResponse(record)


# ----- helpers that only translate HTTP into ops calls -----


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no route, method not allowed) in the API's JSON shape."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(
            404, "not_found", f"no route for {request.url.path}; see {API}/openapi.json"
        )
    if exc.status_code == 405:
        return error_response(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed on {request.url.path}",
            headers=exc.headers,
        )
    return error_response(exc.status_code, "http", str(exc.detail))


def _box_add(ctx: OpsContext, name: str, password: str, legacy: bool | None) -> Any:
    if legacy is None:
        return boxes.box_add(ctx, name, password)
    return boxes.box_add(ctx, name, password, legacy=legacy)


def _box_passwd(ctx: OpsContext, name: str, password: str, legacy: bool | None) -> Any:
    return boxes.box_passwd(ctx, name, password, legacy=legacy)


def _plan_apply(ctx: OpsContext, model: str, keep_site: bool) -> Any:
    return ops_profile.plan_apply(ctx, model, keep_site=keep_site)


def _box_del(ctx: OpsContext, name: str, purge: bool) -> Any:
    return boxes.box_del(ctx, name, purge=purge)


async def _drain(chunks: AsyncIterator[bytes], limit: int) -> None:
    """Read and drop the rest of a refused body, up to `limit` bytes, so the client reads
    our answer: closing a socket with unread data resets it, and the answer may be lost.
    A longer body is cut off (the connection closes); nothing of it is held."""
    dropped = 0
    async for chunk in chunks:
        dropped += len(chunk)
        if dropped > limit:
            return


def _flag(request: Request, name: str) -> bool:
    text = request.query_params.get(name)
    if text is None:
        return False
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise ApiError(400, "bad_parameter", f"{name}={text!r}: expected true or false")


def ops_profile_unknown(key: str) -> str:
    try:
        ops_profile.field_of(key, "PATCH /api/v1/profile")
    except DeviceError as exc:
        return str(exc)
    return f"unknown key {key!r}"


def _json_types(key: str) -> tuple[type, ...]:
    kind = SCHEMA[key].kind
    return {bool: (bool,), int: (int,), float: (float,), str: (str,), tuple: (list,)}[kind]


def _as_text(key: str, value: Any) -> str:
    """A JSON value of the key's type as the text the console would type for it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        for item in value:
            if not isinstance(item, str) or "," in item or not item.strip():
                raise ApiError(
                    400,
                    "wrong_type",
                    f"{key!r} must be a list of non-empty strings without commas",
                    field=key,
                )
        if not value:
            raise ApiError(400, "bad_value", f"{key!r} must not be empty", field=key)
        return ",".join(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def message_json(raw: bytes) -> dict[str, Any]:
    """Headers (name, decoded value, in order) and the MIME parts of a stored message."""
    parsed = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(parsed, EmailMessage)
    headers = []
    for name, value in parsed.items():
        try:
            text = str(value)
        except Exception:  # a header the parser cannot decode: show it as stored
            text = str(parsed.get_all(name, [""])[0])
        headers.append({"name": name, "value": text})
    parts = []
    for index, part in enumerate(parsed.walk()):
        if part.is_multipart():
            continue
        try:
            payload = part.get_payload(decode=True)
        except Exception:
            payload = None
        parts.append(
            {
                "index": index,
                "content_type": part.get_content_type(),
                "charset": part.get_content_charset(),
                "disposition": part.get_content_disposition(),
                "filename": part.get_filename(),
                "size": len(payload) if isinstance(payload, bytes) else 0,
            }
        )
    return {"headers": headers, "parts": parts}
