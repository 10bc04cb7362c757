"""The OpenAPI 3.1 document of /api/v1, served at /api/v1/openapi.json (docs/api.md)."""

from __future__ import annotations

from typing import Any

from firmware import __version__
from firmware.faults.spec import ACTIONS, TRIGGERS
from firmware.ops.messages import MESSAGE_FIELDS

_KINDS = {"str": "string", "choice": "string", "int": "integer", "float": "number"}
_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"application/json": {"schema": schema or {"type": "object"}}}


def _op(
    summary: str,
    ok: int = 200,
    *,
    errors: tuple[int, ...] = (),
    body: dict[str, Any] | None = None,
    params: tuple[str, ...] = (),
    query: tuple[str, ...] = (),
    ok_content: dict[str, Any] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        str(ok): {"description": "done", "content": ok_content or _json()},
        "401": {"description": "no or wrong admin credentials", "content": _json(_ERROR)},
        "429": {"description": "admin logins locked after failed logins", "content": _json(_ERROR)},
        "503": {"description": "the device is rebooting", "content": _json(_ERROR)},
    }
    for code in (400, *errors):
        responses[str(code)] = {"description": _WHY[code], "content": _json(_ERROR)}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in params
    ]
    parameters += [{"name": name, "in": "query", "schema": {"type": "boolean"}} for name in query]
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    return op


_WHY = {
    400: "bad input: JSON, types, unknown keys, names",
    404: "no such box, message, session, job or fault",
    409: "not possible now (box not empty, open in a session, a limit)",
    413: "too large for the box (quota, message count) or the device",
    415: "wrong Content-Type",
    422: "a value the device refuses (profile, password, scan options)",
    507: "MEMORY FULL or flash full: nothing stored",
}


def _object(props: dict[str, str], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {name: {"type": kind} for name, kind in props.items()},
        "required": list(required),
    }


_MESSAGE = {"$ref": "#/components/schemas/Message"}


def _message() -> dict[str, Any]:
    """The one message summary (firmware.ops.messages.MESSAGE_FIELDS) as a JSON Schema."""
    props: dict[str, Any] = {}
    for name, kind in MESSAGE_FIELDS.items():
        if kind == "array":
            props[name] = {"type": "array", "items": {"type": "string"}}
        else:
            props[name] = {"type": kind.split("|") if "|" in kind else kind}
    return {
        "type": "object",
        "properties": props,
        "required": list(MESSAGE_FIELDS),
        "description": "a stored message: uid, POP3 size in octets, arrival and Date as epoch "
        "seconds, Subject and From decoded (RFC 5322 section 3.6), attachment file names",
    }


def openapi_document() -> dict[str, Any]:
    box = ("box",)
    msg = ("box", "uid")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dpfw device API",
            "version": "v1",
            "description": f"Administration of one DP-series device (dpfw {__version__}). "
            "HTTP Basic as user admin with the console's password.",
        },
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
            "schemas": {
                "Error": _object(
                    {"error": "string", "message": "string", "field": "string"},
                    ("error", "message"),
                ),
                "Message": _message(),
                "MessageRow": {
                    "allOf": [
                        _MESSAGE,
                        {
                            "type": "object",
                            "properties": {"number": {"type": "integer"}},
                            "required": ["number"],
                        },
                    ],
                    "description": "a listing row: the message summary and its POP3 number",
                },
                "Delivered": {
                    "allOf": [
                        _MESSAGE,
                        {
                            "type": "object",
                            "properties": {"box": {"type": "string"}},
                            "required": ["box"],
                        },
                    ],
                    "description": "a delivery's answer: the stored message's summary and box",
                },
            },
        },
        "security": [{"basic": []}],
        "paths": {
            "/api/v1/status": {"get": _op("model, firmware, uptime, RAM, flash, POP3, locks")},
            "/api/v1/image": {
                "get": _op("superblock, NVRAM, boxes, space, settings, bad records (as inspect)")
            },
            "/api/v1/boxes": {
                "get": _op("list the boxes"),
                "post": _op(
                    "add a box",
                    201,
                    errors=(409, 415, 422),
                    body=_json(
                        _object(
                            {"name": "string", "password": "string", "legacy": "boolean"},
                            ("name", "password"),
                        )
                    ),
                ),
            },
            "/api/v1/boxes/{box}": {
                "get": _op("one box, its limits and newest messages", errors=(404,), params=box),
                "patch": _op(
                    "change the password and/or lift a lock-out",
                    errors=(404, 415, 422),
                    params=box,
                    body=_json(
                        _object({"password": "string", "legacy": "boolean", "unlock": "boolean"})
                    ),
                ),
                "delete": _op(
                    "delete a box (purge=true: with its messages)",
                    errors=(404, 409),
                    params=box,
                    query=("purge",),
                ),
            },
            "/api/v1/boxes/{box}/messages": {
                "get": _op(
                    "number, uid, size, date, subject, from, attachments",
                    errors=(404,),
                    params=box,
                    ok_content=_json(
                        {
                            "type": "object",
                            "properties": {
                                "box": {"type": "string"},
                                "messages": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/MessageRow"},
                                },
                            },
                            "required": ["box", "messages"],
                        }
                    ),
                ),
                "post": _op(
                    "deliver one RFC 5322 message, durably; answers its summary (as listed)",
                    201,
                    errors=(404, 413, 415, 507),
                    params=box,
                    body={"message/rfc822": {"schema": {"type": "string", "format": "binary"}}},
                    ok_content=_json({"$ref": "#/components/schemas/Delivered"}),
                ),
            },
            "/api/v1/boxes/{box}/messages/{uid}": {
                "get": _op("headers and MIME parts", errors=(404,), params=msg),
                "delete": _op("delete one message", errors=(404, 409), params=msg),
            },
            "/api/v1/boxes/{box}/messages/{uid}/raw": {
                "get": _op(
                    "the exact bytes RETR sends (unstuffed)",
                    errors=(404,),
                    params=msg,
                    ok_content={"message/rfc822": {"schema": {"type": "string"}}},
                )
            },
            "/api/v1/profile": {
                "get": _op("every key: running and saved values, pending changes"),
                "patch": _op(
                    'set keys: {"pop3.max_sessions": 64, ...}; live keys apply now',
                    errors=(415, 422),
                    body=_json({"type": "object"}),
                ),
            },
            "/api/v1/profile/apply": {
                "post": _op(
                    "a model's factory values (site keys kept unless factory=true)",
                    errors=(415, 422),
                    body=_json(_object({"model": "string", "factory": "boolean"}, ("model",))),
                )
            },
            "/api/v1/ifax": {"get": _op("the Internet Fax poller: settings, counters, last poll")},
            "/api/v1/ifax/poll": {
                "post": _op("poll the Internet Fax server now; the result", errors=(409, 422))
            },
            "/api/v1/tray": {
                "get": _op("the output tray: a list of documents (number, status, from, pages)"),
                "delete": _op("clear the output tray"),
            },
            "/api/v1/tray/{number}": {
                "get": _op(
                    "one tray document with its page sizes", errors=(404,), params=("number",)
                )
            },
            "/api/v1/sessions": {"get": _op("open POP3 sessions")},
            "/api/v1/sessions/{session}": {
                "delete": _op("end a POP3 session", errors=(404,), params=("session",))
            },
            "/api/v1/clients": {
                "get": _op(
                    "every POP3 client's report card: {live, written, clients: [{address, "
                    "counters, boxes, items: [{name, title, verdict, reason, rfc}], history}]}"
                )
            },
            "/api/v1/clients/{address}": {
                "get": _op("one client address's report card", errors=(404,), params=("address",))
            },
            "/api/v1/trace": {
                "get": _op(
                    "the POP3 protocol trace as Server-Sent Events (credentials redacted)",
                    ok_content={"text/event-stream": {"schema": {"type": "string"}}},
                )
                | {
                    "parameters": [
                        {"name": "session", "in": "query", "schema": {"type": "integer"}}
                    ]
                }
            },
            "/api/v1/scans": {
                "post": _op(
                    "start a scan job into a box",
                    202,
                    errors=(404, 415, 422),
                    body=_json(
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["box"],
                            "properties": {
                                "box": {"type": "string"},
                                "pages": {"type": "integer"},
                                "dpi": {"type": ["string", "integer"]},
                                "mode": {"type": "string"},
                                "format": {"type": "string"},
                            },
                        }
                    ),
                )
            },
            "/api/v1/scans/{job}": {
                "get": _op("a scan job: running, done or failed", errors=(404,), params=("job",))
            },
            "/api/v1/faults": {
                "get": _op("the faults set, how often each fired, the seed (docs/faults.md)"),
                "post": _op(
                    "set a fault: an action, its keys and triggers; 201 and its id",
                    201,
                    errors=(415,),
                    body=_json(
                        {
                            "type": "object",
                            "required": ["action"],
                            "properties": {
                                "action": {"type": "string", "enum": list(ACTIONS)},
                                **{key: {"type": _KINDS[k.kind]} for key, k in TRIGGERS.items()},
                            },
                        }
                    ),
                ),
                "delete": _op("clear every fault"),
            },
            "/api/v1/faults/{fault}": {
                "get": _op("one fault and how often it fired", errors=(404,), params=("fault",)),
                "delete": _op("clear one fault", errors=(404,), params=("fault",)),
            },
            "/metrics": {
                "get": _op(
                    "Prometheus text format",
                    ok_content={"text/plain": {"schema": {"type": "string"}}},
                )
            },
        },
    }
