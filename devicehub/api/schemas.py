"""The JSON schemas of the HTTP API's bodies, the C{components} of L{devicehub.api.openapi}."""

from typing import Any

IMEI_PATTERN = "^[0-9A-Za-z._:-]{1,64}$"


def schemas() -> dict[str, Any]:
    """The schemas of the bodies, under C{#/components/schemas}."""
    return {
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
        "Job": {
            "type": "object",
            "required": ["instruct"],
            "additionalProperties": False,
            "description": "The command, and exactly one of imeis, prefix or all.",
            "oneOf": [{"required": ["imeis"]}, {"required": ["prefix"]}, {"required": ["all"]}],
            "properties": {
                "instruct": {"type": "string", "minLength": 1},
                "data": {},
                "timeout": {"type": "number", "nullable": True, "exclusiveMinimum": True, "minimum": 0, "maximum": 300},
                "queue": {"type": "boolean", "default": False},
                "imeis": {"type": "array", "minItems": 1, "maxItems": 100000,
                          "items": {"type": "string", "pattern": IMEI_PATTERN}},
                "prefix": {"type": "string", "pattern": IMEI_PATTERN,
                           "description": "The devices online when the job starts whose imei starts with it."},
                "all": {"type": "boolean", "enum": [True], "description": "The devices online when the job starts."},
            },
        },
        "JobStarted": {
            "type": "object",
            "required": ["id", "devices"],
            "properties": {"id": {"type": "string"}, "devices": {"type": "integer", "minimum": 0}},
        },
        "JobState": {
            "type": "object",
            "required": ["id", "state", "devices", "results"],
            "properties": {
                "id": {"type": "string"},
                "state": {"type": "string", "enum": ["running", "done"]},
                "devices": {"type": "integer", "minimum": 0},
                "results": {
                    "type": "object",
                    "properties": {name: {"type": "integer", "minimum": 0}
                                   for name in ("ok", "no", "timeout", "queued", "error")},
                },
                "num": {"type": "integer"},
                "page": {"type": "integer"},
                "outcomes": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["imei", "result"],
                        "properties": {
                            "imei": {"type": "string"},
                            "result": {"type": "string", "nullable": True,
                                       "enum": ["ok", "no", "timeout", "queued", "error", None]},
                            "data": {},
                            "id": {"type": "string"},
                            "error": {"type": "string"},
                        },
                    },
                },
            },
        },
        "Session": {
            "type": "object",
            "required": ["imei", "online", "node", "protocol", "since"],
            "properties": {
                "imei": {"type": "string"},
                "online": {"type": "boolean", "enum": [True]},
                "node": {"type": "string"},
                "protocol": {"type": "string"},
                "since": {"type": "number", "description": "Login time, seconds since the epoch (the node's clock)."},
            },
        },
        "Cluster": {
            "type": "object",
            "required": ["nodes", "devices", "store"],
            "properties": {
                "nodes": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0},
                          "description": "Devices online on each node, by node name."},
                "devices": {"type": "integer", "minimum": 0},
                "store": {"type": "string", "enum": ["ok", "failing", "none"]},
                "brokers": {"type": "object", "additionalProperties": {"type": "string", "enum": ["ok", "warming", "down"]}},
            },
        },
        "Command": {
            "type": "object",
            "required": ["instruct"],
            "additionalProperties": False,
            "properties": {
                "instruct": {"type": "string", "minLength": 1},
                "data": {"description": "Any JSON value, sent to the device as is."},
                "wait": {"type": "boolean", "default": True},
                "queue": {
                    "type": "boolean",
                    "default": False,
                    "description": "When the device is offline, queue the command for its next login.",
                },
                "ttl": {
                    "type": "number",
                    "nullable": True,
                    "exclusiveMinimum": True,
                    "minimum": 0,
                    "maximum": 2592000,
                    "description": "Seconds a queued command stays deliverable (default 86400).",
                },
                "coalesce": {
                    "type": "boolean",
                    "default": False,
                    "description": "A queued command replaces older queued ones with the same instruct.",
                },
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
        "Accepted": {
            "type": "object",
            "required": ["result"],
            "properties": {"result": {"type": "string", "enum": ["ok", "queued"]}, "id": {"type": "string"}},
        },
        "QueuedCommand": {
            "type": "object",
            "required": ["id", "imei", "instruct", "state", "created", "expires", "updated", "attempts"],
            "properties": {
                "id": {"type": "string"},
                "imei": {"type": "string"},
                "instruct": {"type": "string"},
                "data": {"description": "The command's data."},
                "state": {
                    "type": "string",
                    "enum": ["queued", "sent", "acked", "expired", "failed", "cancelled", "replaced"],
                },
                "created": {"type": "number"},
                "expires": {"type": "number"},
                "updated": {"type": "number"},
                "attempts": {"type": "integer", "minimum": 0},
                "reply": {"description": "The device's reply (its ack's data) once acked; null before."},
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
                "store": {"type": "string", "enum": ["ok", "failing", "none"]},
                "brokers": {
                    "type": "object",
                    "description": "With several --frontend brokers: each one's state as this api sees it"
                    " (down: silent for a second or more; warming: not every node has reported to it yet).",
                    "additionalProperties": {"type": "string", "enum": ["ok", "warming", "down"]},
                },
            },
        },
    }
