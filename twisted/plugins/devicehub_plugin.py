from twisted.application.service import ServiceMaker

devicehub = ServiceMaker(
    "devicehub",
    "devicehub.service",
    "Command gateway for always-connected devices: broker, node and HTTP API.",
    "devicehub",
)
