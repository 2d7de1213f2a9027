#!/usr/bin/env python3
"""Writes the hand-made seed inputs of the fuzz targets into corpus/<target>/,
named seed-*, so that a campaign starts from meaningful inputs (real frames,
real handler names, real headers) rather than from nothing. Run from fuzz/;
`cargo fuzz cmin` later keeps only what adds coverage.

The protobuf is encoded by hand from proto/pipe.proto (field numbers), so
this needs nothing but Python."""
import os
import struct


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number, value):
    """One field: ints as varints, bytes/str length-delimited, lists repeated."""
    if isinstance(value, list):
        return b"".join(field(number, v) for v in value)
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint(number << 3 | 2) + varint(len(value)) + value


def message(*fields):
    return b"".join(field(n, v) for n, v in fields if v is not None)


# Frame's oneof: hello 1, event 2, reply 3, chunk 4, cancel 5, ping 6,
# pong 7, go_away 8, window 9.
def frame(kind, body):
    payload = field(kind, body)
    return struct.pack(">I", len(payload)) + payload


def header(name, value):
    return message((1, name), (2, value))


def event(request_id, verb="get", noun="time", args=(), body=b"", follows=False,
          length=None, timeout_ms=1000, headers=()):
    return frame(2, message((1, request_id), (2, verb), (3, noun), (4, list(args)),
                            (6, "text/plain" if body else None), (7, body or None),
                            (8, timeout_ms), (9, [header(n, v) for n, v in headers]),
                            (10, follows or None), (11, length)))


def reply(request_id, follows=False):
    return frame(3, message((1, request_id), (3, "text/plain"), (4, b"ok"),
                            (6, follows or None)))


def chunk(request_id, data=b"", last=False, of_reply=False, error=None):
    return frame(4, message((1, request_id), (2, of_reply or None), (3, data or None),
                            (4, last or None), (5, error)))


def cancel(request_id):
    return frame(5, message((1, request_id), (2, "the caller stopped waiting")))


def ping(nonce):
    return frame(6, message((1, nonce)))


def pong(nonce):
    return frame(7, message((1, nonce)))


def go_away(reason=1):
    return frame(8, message((1, reason), (2, "shutting down")))


def window(request_id, grant, of_reply=False, stop=False):
    return frame(9, message((1, request_id), (2, of_reply or None), (3, grant),
                            (4, stop or None)))


# What the peer sends after its Hello (the link target adds the Hello).
LINK = {
    "ping": ping(7),
    "pong-to-first-ping": pong(1),
    "one-event": event(1),
    "event-with-args-headers": event(2, "post", "cat", ["hello ", "world"], b"body",
                                     headers=[("x-trace", b"abc")]),
    "streamed-body": event(3, "put", "files", follows=True, length=6)
    + chunk(3, b"abc") + chunk(3, b"def", last=True),
    "streamed-body-aborted": event(3, "put", "files", follows=True)
    + chunk(3, b"abc", error="disk full"),
    "past-admission": b"".join(event(i, follows=True) for i in range(1, 12)),
    "cancel-overtakes-event": cancel(5) + event(5),
    "cancel-running": event(6, follows=True) + cancel(6) + chunk(6, b"late", last=True),
    "duplicate-id": event(1, follows=True) + event(1),
    "go-away-then-event": go_away() + event(8),
    "late-reply-with-body": reply(9, follows=True) + chunk(9, b"x", last=True, of_reply=True),
    "window-unknown": window(10, 4096) + window(11, 0, stop=True),
    "zero-timeout": event(12, timeout_ms=0) + event(13, timeout_ms=2**64 - 1),
    "second-hello": frame(1, message((1, 1), (2, 2), (3, "again"))),
}

# The policy target: [verb_len u8][verb][noun_len u8][noun][rules...]; see
# fuzz_targets/policy_differential.rs.
def policy_input(verb, noun, rules):
    out = bytes([len(verb)]) + verb.encode() + bytes([len(noun)]) + noun.encode()
    for rule in rules:
        out += bytes([len(rule)]) + rule.encode()
    return out


POLICY = {
    "time": policy_input("get", "time", ["get_time"]),
    "files-star": policy_input("get", "files/report", ["get_files_*"]),
    "flattening": policy_input("get_files_x", "admin/secret", ["get_files_*", "get_admin_*"]),
    "admin-forward": policy_input("get", "admin/secret", ["get_admin_*"]),
    "head": policy_input("head", "time", ["get_*"]),
    "options": policy_input("options", "time", ["*"]),
    "underscore-noun": policy_input("post", "files_x/y", ["post_files_*"]),
    "upper": policy_input("GET", "Time", ["get_time"]),
}

# forward_uri: `noun \0 query \0 arg \0 arg ...`; forwards files, files/private,
# a_b/c, docs (see fuzz_targets/forward_uri.rs).
FORWARD_URI = {
    "plain": b"files/report\x00a=1&b=2",
    "args": b"files\x00\x00dir a\x00b.txt",
    "longest-prefix": b"files/private/x\x00\x00y",
    "dotdot-noun": b"files/../admin\x00",
    "dotdot-arg": b"files\x00\x00..",
    "encoded-slash-arg": b"files\x00\x00../../secret",
    "backslash-arg": b"files\x00\x00..\\secret",
    "percent-arg": b"files\x00\x00%2e%2e\x00%2F",
    "authority-arg": b"docs\x00\x00@evil.example:80",
    "scheme-arg": b"docs\x00\x00http://evil.example/",
    "query-hash": b"files\x00a=1#/../../x",
    "query-space": b"files\x00bad query",
    "underscore": b"a_b/c/d\x00\x00e",
    "partial-segment": b"filesystem\x00",
    "empty-args": b"files\x00\x00\x00",
}

PIPE_TIMEOUT = {
    "seconds": b"30",
    "fraction": b"2.5",
    "max": b"86400",
    "over-max": b"86400.5",
    "zero": b"0",
    "negative": b"-1",
    "huge": b"1e20",
    "digits": b"18446744073709551616",
    "tiny": b"1e-10",
    "nan": b"NaN",
    "inf": b"inf",
    "spaces": b" 10 ",
    "unit": b"10s",
    "not-utf8": b"\xff",
}


# header_conversion: [kind] then records [tag][repeat][len][name]([len][value]):
# even tag a header, odd tag an argument, repeated 1 + 4 * repeat times.
def header(name, value, repeat=0):
    return bytes([0, repeat, len(name)]) + name + bytes([len(value)]) + value


def arg(value, repeat=0):
    return bytes([1, repeat, len(value)]) + value


HEADER_CONVERSION = {
    "peer-event": b"\x00" + header(b"x-trace", b"abc") + header(b"Accept", b"*/*") + arg(b"a b"),
    "peer-event-bad-headers": b"\x00" + header(b"bad name", b"v") + header(b"x", b"a\r\nb"),
    "peer-event-many-headers": b"\x00" + header(b"x-a", b"1", 64),
    "peer-event-many-args": b"\x00" + arg(b"", 64),
    "peer-event-header-bytes": b"\x00" + header(b"x-big", b"v" * 255, 63),
    "peer-reply": b"\x01" + header(b"etag", b"\"v1\"") + header(b"x-a", b"1") + header(b"x-a", b"2"),
    "our-event": b"\x06" + header(b"x-name", "caf\u00e9".encode()) + arg(b"%2F") + arg(b".."),
    "our-event-over": b"\x02" + header(b"x-a", b"1", 65),
    "our-reply": b"\x07" + header(b"content-type", b"text/plain") + header(b"x-a", b"1"),
}

TARGETS = {
    "link": LINK,
    "policy_differential": POLICY,
    "forward_uri": FORWARD_URI,
    "pipe_timeout": PIPE_TIMEOUT,
    "header_conversion": HEADER_CONVERSION,
}

if __name__ == "__main__":
    for target, seeds in TARGETS.items():
        directory = os.path.join("corpus", target)
        os.makedirs(directory, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(directory, "seed-" + name), "wb") as out:
                out.write(data)
        print(f"{target}: {len(seeds)} seeds")
