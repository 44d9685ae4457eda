"""
GT06: Concox GT06 trackers and their many clones (CONTRACT §5).

Binary frames, big-endian; CRC = CRC-16/X-25 (the documents' CRC-ITU) over LEN..SERIAL::

    78 78 LEN(1) PROTO CONTENT... SERIAL(2) CRC(2) 0D 0A    LEN = 1 + len(CONTENT) + 4
    79 79 LEN(2) PROTO CONTENT... SERIAL(2) CRC(2) 0D 0A    the same, for long packets

    device -> hub  01 login    IMEI(8, BCD, leading nibble 0) [TYPE(2) [TIMEZONE/LANGUAGE(2)]]
    device -> hub  13 status   INFO VOLTAGE-LEVEL(0-6) GSM(0-4) ALARM LANGUAGE
    device -> hub  23 heartbeat INFO VOLTAGE(2, 0.01 V) GSM LANGUAGE(2)
    device -> hub  10 11 12 22 position: TIME(6: Y-2000 M D h m s) SATS LAT(4) LON(4) KM/H
                   COURSE+FLAGS(2) then, but for 10, the cell (MCC MNC LAC CELL)
    device -> hub  16 26 27 alarm: as 12 with a cell-length byte, then INFO VOLTAGE-LEVEL GSM ALARM ...
    hub -> device  78 78 05 PROTO SERIAL CRC 0D 0A   the ack of 01 13 23 10 11 12 16 22 26 27 15,
                                                      echoing the packet's protocol and serial
    hub -> device  78 78 LEN 80 CMDLEN SERVERFLAG(4) COMMAND(ASCII) SERIAL CRC 0D 0A
    device -> hub  15 reply    CMDLEN SERVERFLAG(4) TEXT(ASCII) LANGUAGE(2)       (acked)
    device -> hub  79 79 LEN(2) 21 SERVERFLAG(4) ENCODING(1: ASCII, 2: UTF-16BE) TEXT   (not acked)

Framing (as real devices need it): a frame is LEN's length when it ends in C{0D 0A} there
(or two bytes later: some firmware leaves the CRC out of LEN). Otherwise LEN is wrong or
the frame is not all here yet: an earlier C{0D 0A} whose CRC is right ends it at once (the
device waits for its ack, it sends no more), a whole frame behind a stray start byte or a
torn frame is skipped to, and once both ends LEN allows have arrived the first C{0D 0A}
ends it. Bytes before a C{78 78}/C{79 79} are garbage; a frame longer than C{maxFrame} is
fatal. The identity is the login's 15 digits; a login with a time zone makes later times
local to it (as Traccar reads them). Commands carry C{instruct} as their ASCII text and
C{number} as their server flag; replies are matched by that flag, or taken by the only
unanswered command when the device echoes another flag (many send 0).

The code, by what it does: L{protocol} (the protocol numbers, the CRC, the frames the hub
builds), L{framing} (bytes -> frames), L{decode} (frame -> messages), L{codec} (the
L{Gt06Codec} a session drives: framing plus decoding, and the commands).
"""

from devicehub.devices.codecs.gt06.codec import Gt06Codec

__all__ = ["Gt06Codec"]
