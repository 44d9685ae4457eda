"""Watch frames both ways: the escaping, the fields, the frames the hub builds (see L{devicehub.devices.codecs.watch})."""

# Escapes, both ways. Decoding replaces 7D 02..05 first and 7D 01 last: the only 7D bytes
# on the wire start an escape, so no replacement can form a new one.
_UNESCAPE = ((b"}\x02", b"["), (b"}\x03", b"]"), (b"}\x04", b","), (b"}\x05", b"*"), (b"}\x01", b"}"))
_ESCAPE = ((b"}", b"}\x01"), (b"[", b"}\x02"), (b"]", b"}\x03"), (b",", b"}\x04"), (b"*", b"}\x05"))
_HEX = b"0123456789abcdefABCDEF"


def unescape(data: bytes) -> bytes:
    """Undo the watch escaping (C{7D 01..05}); a C{7D} before any other byte is kept as is."""
    if b"}" not in data:
        return data
    for escaped, plain in _UNESCAPE:
        data = data.replace(escaped, plain)
    return data


def escape(data: bytes) -> bytes:
    """Escape C{} [ ] , *} as C{7D 01..05}, for a field the device must read as one."""
    for plain, escaped in _ESCAPE:
        if plain in data:
            data = data.replace(plain, escaped)
    return data


def text(data: bytes) -> str:
    """Bytes of a frame as text: UTF-8, anything else kept as backslash escapes."""
    return data.decode("utf-8", "backslashreplace")


def splitFields(rest: bytes) -> list[str]:
    """The fields of C{rest} (what follows the keyword's comma), split on the wire and unescaped."""
    if b"}" not in rest:
        return text(rest).split(",")
    return [text(unescape(field)) for field in rest.split(b",")]


def frameBytes(mf: bytes, ident: bytes, index: bytes | None, content: bytes) -> bytes:
    """One frame: C{[MF*ID*(INDEX*)LEN*CONTENT]}, LEN the length of C{content} as 4 upper-case hex digits."""
    head = b"[" + mf + b"*" + ident + b"*"
    if index is not None:
        head += index + b"*"
    return head + b"%04X*" % len(content) + content + b"]"


def isHex4(field: bytes) -> bool:
    """Whether C{field} is 4 hex digits (a LEN or an INDEX)."""
    return len(field) == 4 and not field.strip(_HEX)
