"""
The OpenAPI document against the running API: schemathesis generates requests
from the document (valid and invalid ones) and checks every answer against it,
so the document and the code cannot drift apart.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode, checks

from devicehub.common.imei import is_valid_imei
from devicehub.api.openapi import openapi

from .support import free_ports

ROOT = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).parent / "twistd")
ONLINE = "861234567890123"

# /events is a stream that never ends by itself: tests/test_events.py covers it
schema = schemathesis.openapi.from_dict(openapi()).exclude(path="/events")
# valid requests and invalid ones (which must be refused with a 4xx)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
# a valid request may still meet an offline (404) or silent (504) device, never a 400
schema.config.checks.positive_data_acceptance.expected_statuses = ["200", "202", "404", "504"]
# 504 is the contract's answer for a device that did not ack; any other 5xx is a bug here
schema.config.checks.not_a_server_error.expected_statuses = ["2XX", "3XX", "4XX", "504"]



def run_device(port, stop):
    """A device on a blocking socket in a thread: logs in and acks every command."""
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.settimeout(0.2)
        connection.sendall(json.dumps({"type": "login", "imei": ONLINE}).encode() + b"\n")
        buffered = b""
        while not stop.is_set():
            try:
                chunk = connection.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                return
            buffered += chunk
            *lines, buffered = buffered.split(b"\n")
            for line in lines:
                message = json.loads(line)
                if message["type"] == "command":
                    ack = {"type": "ack", "ident": message["ident"], "data": {"got": message["instruct"]}}
                    connection.sendall(json.dumps(ack).encode() + b"\n")


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    devices, http, frontend, backend, events = free_ports(5)
    process = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "devicehub", "--devices", f"tcp:{devices}:interface=127.0.0.1",
         "--http", f"tcp:{http}:interface=127.0.0.1", "--frontend", f"tcp://127.0.0.1:{frontend}",
         "--backend", f"tcp://127.0.0.1:{backend}", "--events", f"tcp://127.0.0.1:{events}",
         "--store", str(tmp_path_factory.mktemp("store") / "queue.sqlite3"), "--command-timeout", "1"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{http}"
    stop = threading.Event()
    device = None
    try:
        for _ in range(200):
            try:
                if requests.get(url + "/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        device = threading.Thread(target=run_device, args=(devices, stop), daemon=True)
        device.start()
        for _ in range(200):
            if requests.get(f"{url}/devices/{ONLINE}", timeout=1).status_code == 200:
                break
            time.sleep(0.05)
        yield url
    finally:
        stop.set()
        if device is not None:
            device.join(5)
        process.send_signal(signal.SIGTERM)
        process.wait(20)


def test_served_document_is_the_one_tested(base_url):
    assert requests.get(base_url + "/openapi.json", timeout=5).json() == openapi()


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_document(case, base_url):
    imei = (case.path_parameters or {}).get("imei")
    if is_valid_imei(imei) and sum(imei.encode()) % 3 != 0:
        # most valid imeis go to the online device, so 200/202/504 are exercised too
        case.path_parameters["imei"] = ONLINE
    case.call_and_validate(
        base_url=base_url,
        checks=[
            checks.not_a_server_error,
            checks.status_code_conformance,
            checks.content_type_conformance,
            checks.response_schema_conformance,
            checks.negative_data_rejection,
            checks.positive_data_acceptance,
        ],
    )
