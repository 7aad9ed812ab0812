#!/usr/bin/env python3
"""Writes the hand-made seeds of the `handler` fuzz target (fuzz/corpus/handler/seed-made-*).

They are `Vec<Op>` (fuzz/harness/handler.rs) in the byte layout `arbitrary` 1.5 decodes with
`arbitrary_take_rest`: each element behind a byte with its low bit set, integers little-endian,
an enum variant as a u32 v with (v * variants) >> 32 == index, a bool as one byte, a Vec as
elements each behind a 1 byte and a closing 0. tests/fuzz_seeds.rs checks the seeds still reach
what they were made for (an indexed torrent dropped and regrown, both sides of the +1 s
connection-id skew); rerun this after changing `Op`, `AnnounceOp` or `Id`.
"""
import pathlib
import struct

OPS = ["Raw", "Connect", "Announce", "Scrape", "Http", "Tick", "Sweep", "Deliver", "Crowd"]
IDS = ["Valid", "Aged", "Future", "OtherSource", "Raw"]


def variant(names, name):
    index = names.index(name)
    return struct.pack("<I", -(-(index << 32) // len(names)))


def u8(n):
    return struct.pack("<B", n)


def u16(n):
    return struct.pack("<H", n)


def u32(n):
    return struct.pack("<I", n)


def i32(n):
    return struct.pack("<i", n)


def op(name, fields=b""):
    return b"\x01" + variant(OPS, name) + fields


def announce(id_bytes, source, port, event=2, left=1, hash_=1, worker=0):
    return op(
        "Announce",
        u8(worker) + u8(source) + id_bytes + u32(7) + u8(hash_) + u16(port) + u8(left)
        + u8(event) + i32(10) + b"\x00" + b"\x00",
    )


def crowd(hash_, first_port, count, left, event, source=1, num_want=40):
    return op(
        "Crowd",
        u8(source) + u8(hash_) + u16(first_port) + u8(count) + u8(left) + u8(event) + i32(num_want),
    )


def ident(name, value=b""):
    return variant(IDS, name) + value


SEEDS = {
    # Ids made 0, 1 and 2 s ahead (IPv4 and IPv6 sources), and at and past the lifetime.
    "seed-made-skew-boundary": b"".join([
        announce(ident("Future", u8(0)), 0, 1000),
        announce(ident("Future", u8(1)), 0, 1001),
        announce(ident("Future", u8(1)), 3, 1002),
        announce(ident("Future", u8(2)), 0, 1003),
        announce(ident("Future", u8(2)), 3, 1004),
        announce(ident("Aged", u16(120)), 0, 1005),
        announce(ident("Aged", u16(121)), 0, 1006),
        op("Deliver"),
    ]),
    # 40 leechers (indexed), 12 complete, 28 stop (12 left: index dropped), 40 more (48, full:
    # indexed again), 3 refused, the first ones expire, 10 stop.
    "seed-made-crowd-regrow": b"".join([
        crowd(2, 100, 40, 1, 2),
        crowd(2, 100, 12, 0, 1),
        op("Tick", u16(30)),
        crowd(2, 110, 28, 1, 3),
        crowd(2, 200, 40, 2, 0),
        crowd(2, 300, 3, 1, 2),
        op("Tick", u16(70)),
        op("Sweep"),
        crowd(2, 200, 10, 1, 3),
        op("Deliver"),
    ]),
}

if __name__ == "__main__":
    corpus = pathlib.Path(__file__).parent / "corpus" / "handler"
    for name, data in SEEDS.items():
        (corpus / name).write_bytes(data)
        print(f"{corpus / name}: {len(data)} bytes")
