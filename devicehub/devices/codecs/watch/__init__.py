"""
The C{watch} protocol: 3G/4G kids' watches (SeTracker, "3G"/"SG"/"CS"/"ZJ" firmware).

Every frame, in both directions, is ASCII text in square brackets::

    [MF*ID*LEN*CONTENT]                 e.g. [SG*5500000042*0002*LK]
    [MF*ID*INDEX*LEN*CONTENT]           devices that number their frames (INDEX: 4 hex digits)
    CONTENT = KEYWORD[,FIELD]...        e.g. LK,1200,0,87   UD,251126,162905,A,...   CR

    MF      manufacturer code (SG, 3G, CS, ZJ, ...), echoed in every frame the hub sends
    ID      the device id: becomes the imei (from the first frame on)
    LEN     the content's length as 4 hex digits; real devices get it wrong, so it is
            checked for form only and never used for framing
    escape  inside CONTENT the bytes } [ ] , * travel as 7D 01, 7D 02, 7D 03, 7D 04, 7D 05
            (binary payloads: TK/JXTK voice, img photos; text fields such as Wi-Fi names)

Framing is by brackets: a frame runs from C{[} to the C{]} that balances it (Wi-Fi names
may hold bracket pairs); a C{]} followed by the start of a new frame C{[MF*} always ends
one. Bytes between frames are garbage (one C{decode} L{BadFrame} per run; white space is
ignored). A frame, or a run of garbage, longer than C{maxFrame} is fatal (C{too long}).

Device -> hub, and what the hub answers (same MF, ID and INDEX; LEN upper-case hex):

    LK[,steps,rolls,battery]      Heartbeat(status)                     -> [..*LK]
    AL...[,position]              Uplink("alarm", {alarm, position})    -> [..*AL]
    UD, UD2, UD3, UD_LTE, UD_WCDMA, WT...,position
                                  Uplink("location", position)          (no answer)
    TKQ, TKQ2                     Heartbeat()                           -> [..*TKQ] / [..*TKQ2]
    INIT,...                      Uplink("raw", {text})                 -> [..*INIT,1]
    JXTK,a,b,part,parts,<audio>   Uplink("raw", {text, hex})            -> [..*JXTKR,1]
    TK,<audio> / img,a,time,<jpg> Uplink("raw", {text, hex})            (no answer)
    PULSE, HEART, BLOOD, BPHRT, TEMP, btemp2, oxygen with values
                                  Heartbeat(status: heartRate, pressureHigh, pressureLow,
                                  temperature, bloodOxygen)             (no answer)
    anything else (and TK,1)      Answer(key=KEYWORD.upper(), data=[FIELD, ...])

    position = DDMMYY,HHMMSS,A|V,lat,N|S,lon,E|W,speed km/h,course,altitude,satellites,
               gsm,battery,steps,rolls,status (hex bits),cells...,wifi...

Convention for the session: the codec cannot know which commands wait for an answer, so
every frame it does not decode itself becomes an L{Answer} whose C{key} is its keyword in
upper case and whose C{data} is the list of its fields after the keyword (strings, C{[]}
when none). An Answer that matches no unanswered command is not an answer: the session
publishes its C{unmatched} event instead, C{Uplink("raw", {"text": the frame's content}))}. Frames decoded here (heartbeats, positions, alarms, ...) are never
Answers, so they never count as the answer to a command.

Hub -> device, commands (L{WatchCodec.encodeCommand})::

    [MF*ID*LEN*INSTRUCT]            data None (or an empty list)
    [MF*ID*LEN*INSTRUCT,a,b]        data "a" or ["a", "b"]: UTF-8, each field escaped
    [MF*ID*0001*LEN*INSTRUCT,...]   for a device that sends an INDEX field

LEN counts the content's bytes as sent (after escaping). The device answers with a frame
of the same keyword (C{[MF*ID*0006*UPLOAD]} for C{UPLOAD,600}), so at most one command per
keyword (L{WatchCodec.lane}) waits for its answer.

The code, by what it does: L{protocol} (escaping, fields, the frames the hub builds),
L{framing} (bytes -> frames), L{decode} (frame -> messages), L{positions} (the position,
cell and Wi-Fi fields), L{codec} (the L{WatchCodec} a session drives, and the commands).
"""

from devicehub.devices.codecs.watch.codec import WatchCodec

__all__ = ["WatchCodec"]
