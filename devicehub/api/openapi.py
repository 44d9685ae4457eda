"""The OpenAPI 3 description of the HTTP API, served at C{/openapi.json}."""

from typing import Any

from devicehub.api.schemas import IMEI_PATTERN, schemas


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_ID_PARAMETER = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_IMEI_PARAMETER = {
    "name": "imei",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": IMEI_PATTERN},
}
_BAD = _error("Bad input: invalid imei, parameter or body.")
_UNAVAILABLE = _error("The broker did not answer.")
_METHOD = _error("Method not allowed on this path.")
_UNAUTHORIZED = _error("The hub requires 'Authorization: Bearer TOKEN' (--api-token) and it is missing or wrong.")


def _devicePaths() -> dict[str, Any]:
    """The paths under C{/devices}: presence, listing, commands and queues of devices."""
    return {
        "/devices": {
            "get": {
                "summary": "Online devices, sorted by imei, one page at a time, across all nodes.",
                "parameters": [
                    {
                        "name": "num",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 50},
                        "description": "Page size; 0 gives the total only.",
                    },
                    {
                        "name": "page",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "default": 0},
                        "description": "Page number, 0 first.",
                    },
                ],
                "responses": {
                    "200": _json(_ref("DeviceList"), "A page of online devices."),
                    "400": _BAD,
                    "401": _UNAUTHORIZED,
                    "405": _METHOD,
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/devices/{imei}": {
            "get": {
                "summary": "Whether one device is online.",
                "parameters": [_IMEI_PARAMETER],
                "responses": {
                    "200": _json(_ref("Presence"), "The device is online."),
                    "404": _json(_ref("Presence"), "The device is not online."),
                    "400": _BAD,
                    "401": _UNAUTHORIZED,
                    "405": _METHOD,
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/devices/{imei}/session": {
            "get": {
                "summary": "Where a device is connected: its node, protocol and login time.",
                "parameters": [_IMEI_PARAMETER],
                "responses": {
                    "200": _json(_ref("Session"), "The device is online."),
                    "404": _json(_ref("Presence"), "The device is not online."),
                    "400": _BAD,
                    "401": _UNAUTHORIZED,
                    "405": _METHOD,
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/devices/{imei}/commands": {
            "post": {
                "summary": "Send a command to a device and (by default) wait for its ack.",
                "parameters": [_IMEI_PARAMETER],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("Command")}},
                },
                "responses": {
                    "200": _json(_ref("Acked"), "wait true: the device acked; reply is its ack's data."),
                    "202": _json(
                        _ref("Accepted"),
                        "wait false: the command was handed to the device (ok); or, with queue, "
                        "the device is offline and the command was queued (queued, with its id).",
                    ),
                    "404": _json(_ref("Outcome"), "The device is not online (result no)."),
                    "504": _json(_ref("Outcome"), "The device did not ack in time (result timeout)."),
                    "400": _BAD,
                    "401": _UNAUTHORIZED,
                    "405": _METHOD,
                    "408": _error("The request took too long to arrive (headers 10 s, all of it 60 s); the connection is closed."),
                    "413": _error("Body larger than 1 MiB; refused as soon as that is known, and the connection is closed."),
                    "429": _error("Too many unanswered commands for this device (--max-pending)."),
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/devices/{imei}/queue": {
            "get": {
                "summary": "The commands queued for a device, oldest first.",
                "parameters": [_IMEI_PARAMETER],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["imei", "commands"],
                            "properties": {
                                "imei": {"type": "string"},
                                "commands": {"type": "array", "items": _ref("QueuedCommand")},
                            },
                        },
                        "The queue.",
                    ),
                    "400": _BAD,
                    "401": _UNAUTHORIZED,
                    "405": _METHOD,
                    "503": _UNAVAILABLE,
                },
            }
        },
    }


def _commandPaths() -> dict[str, Any]:
    """The paths under C{/commands}: one queued command, by id; and commands to many devices (jobs)."""
    return {
        "/commands": {
            "post": {
                "summary": "Send one command to many devices (a job); its outcomes are at /jobs/{id}.",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Job")}}},
                "responses": {
                    "202": _json(_ref("JobStarted"), "The job started (Location: /jobs/{id})."),
                    "400": _BAD,
                    "401": _UNAUTHORIZED,
                    "405": _METHOD,
                    "413": _error("Body larger than 8 MiB."),
                    "429": _error("16 jobs are running already in this api process."),
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/jobs/{id}": {
            "get": {
                "summary": "A job's state and counts; with num or page, a page of its devices' outcomes.",
                "parameters": [
                    _ID_PARAMETER,
                    {"name": "num", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1000}},
                    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                ],
                "responses": {
                    "200": _json(_ref("JobState"), "The job."),
                    "400": _BAD,
                    "401": _UNAUTHORIZED,
                    "404": _error("No such job (unknown, forgotten after an hour, or the api restarted)."),
                    "405": _METHOD,
                },
            }
        },
        "/jobs/{id}/events": {
            "get": {
                "summary": "A job's outcomes as Server-Sent Events while it runs, then a done event.",
                "parameters": [_ID_PARAMETER],
                "responses": {
                    "200": {
                        "description": '"event: result" with "data: {imei,result,data|id|error}" per device'
                        ' (ids count from 0: Last-Event-ID resumes), then "event: done" with the job\'s state.',
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "401": _UNAUTHORIZED,
                    "404": _error("No such job."),
                    "405": _METHOD,
                },
            }
        },
        "/commands/{id}": {
            "get": {
                "summary": "A queued command and its state.",
                "parameters": [_ID_PARAMETER],
                "responses": {
                    "200": _json(_ref("QueuedCommand"), "The command."),
                    "400": _error("This hub keeps no queue (no --store)."),
                    "401": _UNAUTHORIZED,
                    "404": _error("No such command."),
                    "405": _METHOD,
                    "503": _UNAVAILABLE,
                },
            },
            "delete": {
                "summary": "Cancel a command that is still queued (409 when it is not, cancelled already included).",
                "parameters": [_ID_PARAMETER],
                "responses": {
                    "200": _json(_ref("QueuedCommand"), "Cancelled (state cancelled)."),
                    "400": _error("This hub keeps no queue (no --store)."),
                    "401": _UNAUTHORIZED,
                    "404": _error("No such command."),
                    "409": _json(
                        {
                            "type": "object",
                            "required": ["error", "command"],
                            "properties": {"error": {"type": "string"}, "command": _ref("QueuedCommand")},
                        },
                        "The command is no longer queued (sent, acked, expired, cancelled already, …).",
                    ),
                    "405": _METHOD,
                    "503": _UNAVAILABLE,
                },
            },
        },
    }


def _hubPaths() -> dict[str, Any]:
    """The paths of the hub itself: health, event stream, metrics, this document."""
    return {
        "/cluster": {
            "get": {
                "summary": "The nodes and the devices online on each, the store and (with several) the brokers.",
                "responses": {
                    "200": _json(_ref("Cluster"), "The broker answers."),
                    "401": _UNAUTHORIZED,
                    "405": _METHOD,
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/health": {
            "get": {
                "summary": "Whether the broker answers, with node and device counts.",
                "responses": {
                    "200": _json(_ref("Health"), "The broker answers."),
                    "405": _METHOD,
                    "503": _error(
                        "The broker did not answer, or its command store failed"
                        ' (then also {"status":"store failing","nodes","devices","store":"failing"}).'
                    ),
                },
            }
        },
        "/events": {
            "get": {
                "summary": "Device events (uplink messages, online/offline) as Server-Sent Events, until the client leaves.",
                "parameters": [
                    {
                        "name": "imei",
                        "in": "query",
                        "schema": {"type": "string", "pattern": IMEI_PATTERN},
                        "description": "Only this device's events; all devices' when absent.",
                    }
                ],
                "responses": {
                    "200": {
                        "description": 'A stream of "data: {imei,node,type,data,ts,n,protocol}" events.',
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "400": _BAD,
                    "401": _UNAUTHORIZED,
                    "405": _METHOD,
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics of this process (docs/operations.md).",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": _UNAUTHORIZED,
                    "405": _METHOD,
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document.",
                "responses": {
                    "200": {"description": "The OpenAPI document.", "content": {"application/json": {}}},
                    "401": _UNAUTHORIZED,
                    "405": _METHOD,
                },
            }
        },
    }


def openapi() -> dict[str, Any]:
    """The document, as a JSON-ready dict."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "devicehub",
            "version": "1",
            "description": "Send commands to always-connected devices and see which are online.",
        },
        "paths": {**_devicePaths(), **_commandPaths(), **_hubPaths()},
        "components": {"schemas": schemas()},
    }
