"""The OpenAPI 3 description of the HTTP API, served at C{/openapi.json}."""

from typing import Any

IMEI_PATTERN = "^[0-9A-Za-z._:-]{1,64}$"


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


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


def openapi() -> dict[str, Any]:
    """The document, as a JSON-ready dict."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "devicehub",
            "version": "1",
            "description": "Send commands to always-connected devices and see which are online.",
        },
        "paths": {
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
                        "202": _json(_ref("Outcome"), "wait false: the command was handed to the device."),
                        "404": _json(_ref("Outcome"), "The device is not online (result no)."),
                        "504": _json(_ref("Outcome"), "The device did not ack in time (result timeout)."),
                        "400": _BAD,
                        "401": _UNAUTHORIZED,
                        "405": _METHOD,
                        "413": _error("Body too large."),
                        "429": _error("Too many unanswered commands for this device (--max-pending)."),
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
                        "503": _UNAVAILABLE,
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
                            "description": 'A stream of "data: {imei,node,type,data,ts,n}" events.',
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
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                },
                "DeviceList": {
                    "type": "object",
                    "required": ["total", "num", "page", "devices"],
                    "properties": {
                        "total": {"type": "integer", "minimum": 0},
                        "num": {"type": "integer", "minimum": 0, "maximum": 1000},
                        "page": {"type": "integer", "minimum": 0},
                        "devices": {"type": "array", "items": {"type": "string", "pattern": IMEI_PATTERN}},
                    },
                },
                "Presence": {
                    "type": "object",
                    "required": ["imei", "online"],
                    "properties": {"imei": {"type": "string"}, "online": {"type": "boolean"}},
                },
                "Command": {
                    "type": "object",
                    "required": ["instruct"],
                    "properties": {
                        "instruct": {"type": "string"},
                        "data": {"description": "Any JSON value, sent to the device as is."},
                        "wait": {"type": "boolean", "default": True},
                        "timeout": {
                            "type": "number",
                            "nullable": True,
                            "exclusiveMinimum": True,
                            "minimum": 0,
                            "maximum": 300,
                            "description": "Seconds to wait for the ack; absent or null: the hub's --command-timeout.",
                        },
                    },
                },
                "Acked": {
                    "type": "object",
                    "required": ["result", "reply"],
                    "properties": {
                        "result": {"type": "string", "enum": ["ok"]},
                        "reply": {"description": "The data of the device's ack, or null."},
                    },
                },
                "Outcome": {
                    "type": "object",
                    "required": ["result"],
                    "properties": {"result": {"type": "string", "enum": ["ok", "no", "timeout"]}},
                },
                "Health": {
                    "type": "object",
                    "required": ["status", "nodes", "devices"],
                    "properties": {
                        "status": {"type": "string", "enum": ["ok"]},
                        "nodes": {"type": "integer", "minimum": 0},
                        "devices": {"type": "integer", "minimum": 0},
                    },
                },
            }
        },
    }
