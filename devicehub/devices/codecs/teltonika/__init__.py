"""
Teltonika trackers (FMB, FMC, FMM, ...) over TCP: Codec 8, 8 Extended and 16 AVL data, Codec 12 commands.

Wire format (integers big-endian; CRC is CRC-16/IBM, also known as ARC, of DATA, in the
low two bytes of a 4-byte field)::

    device -> hub   LEN(2) IMEI(LEN, ASCII)                  identification, the first packet
    hub -> device   01                                       accepted (00: refused, then the hub closes)
    device -> hub   00000000 DLEN(4) DATA(DLEN) CRC(4)       a data packet; for AVL data DATA is
                        CODEC(1: 08, 8E, 10) N(1) RECORD*N N(1)
    hub -> device   N(4)                                     ack of an AVL data packet: its record count
    device -> hub   FF                                       keep-alive, not answered
    hub -> device   00000000 DLEN(4) 0C 01 05 CLEN(4) COMMAND 01 CRC(4)    Codec 12 command (ASCII text)
    device -> hub   00000000 DLEN(4) 0C 01 06 RLEN(4) RESPONSE 01 CRC(4)   its response, not answered

    RECORD, Codec 8:  TIME(8, ms since 1970 UTC) PRIORITY(1) LON(4, signed, 1e-7 deg) LAT(4, idem)
                      ALTITUDE(2, signed, m) ANGLE(2, deg) SATELLITES(1) SPEED(2, km/h)
                      EVENT(1) TOTAL(1) N1(1) (ID(1) V(1))*N1 N2(1) (ID(1) V(2))*N2
                      N4(1) (ID(1) V(4))*N4 N8(1) (ID(1) V(8))*N8
    Codec 8 Extended: EVENT, TOTAL, the counts and the ids are 2 bytes; then NX(2) (ID(2) L(2) V(L))*NX
    Codec 16:         EVENT(2) GENERATION(1) TOTAL(1), ids 2 bytes, counts 1 byte, no NX group

Each AVL record becomes a C{location} uplink (C{io}: IO element id -> value, unsigned; the
variable-length values of Codec 8 Extended as hex; a few well-known ids also under a name,
see L{NAMED_IO}), then the packet's ack. Records that only decode with a group of 16-byte
values after the 8-byte group (some firmware; Traccar's C{extended} option) are taken too. Codec 12 type
0x06 responses answer the oldest command. Other packets with a good CRC (GH3000 Codec 7
records, Codec 13, Codec 12 camera or other types) become C{raw} uplinks; the AVL ones
(Codec 7) are acked all the same, so the device moves on.

The code, by what it does: L{protocol} (codec ids, the CRC, the packets the hub builds),
L{framing} (bytes -> packets, keep-alives and identifications), L{decode} (packet ->
messages: AVL records, Codec 12 responses), L{codec} (the L{TeltonikaCodec} a session
drives, and the commands).
"""

from devicehub.devices.codecs.teltonika.codec import TeltonikaCodec

__all__ = ["TeltonikaCodec"]
