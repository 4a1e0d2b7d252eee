#!/usr/bin/env python3
"""Workloads for `tools/bench detect`: plain volume images, and writers over NBD.

    detect_workload.py image --size BYTES --seed N [--compressed-percent P] [--free-percent F] > FILE
    detect_workload.py write --port PORT --export NAME --mode MODE --seconds S --rate-mib R
                             [--from BYTES] [--to BYTES] [--seed N]

An image is 8 KiB pages of text lines and database-like pages (a header, a cell pointer array,
zeros, ASCII rows packed at the end), in runs of 16 pages of one kind, each page stamped with its
number; with --compressed-percent, that share of the data is 1 MiB runs of gzip'd text; with
--free-percent, that share at the end is zeros (free space).

Writer modes, each over [--from, --to) of the export, paced to --rate-mib MiB/s for --seconds:
  encrypt     ransomware: random bytes (os.urandom) over the data in place, 1 MiB per write,
              from --from upwards, until the server refuses or closes the connection
  db          database-like work: 4, 8 or 16 KiB writes of new plain page content at random
              4 KiB-aligned offsets, 4 requests in flight
  mixed       db writes (70 % of the bytes) and new compressed files (gzip of text, random-looking
              media; 64-512 KiB each) written one after the other from --from
  compressed  only the new compressed files, one after the other from --from
  textcopy    a sequential copy of text files: text pages one after the other from --from,
              wrapping at --to, 1 MiB per write

The writer prints one JSON line: firstWriteMs (when its first write was sent, ms since the Unix
epoch, this machine's clock), bytes, seconds, next (the offset after the last sequential write) and how it ended ("time", or "cut off: ..." when the
server closed the connection or answered an error).
"""
import argparse
import json
import os
import random
import socket
import struct
import sys
import time
import zlib

PAGE = 8192
WORDS = ("order customer invoice total amount status shipped pending account balance the quick brown fox jumps "
         "over lazy dog returned warehouse Berlin Lisbon Osaka quarterly report payment received delivery address "
         "street note priority normal urgent").split()


def text_page(r):
    lines = []
    size = 0
    while size < PAGE:
        line = "%08d 2026-11-%02d %s\n" % (r.randrange(10 ** 8), 1 + r.randrange(28),
                                           " ".join(r.choice(WORDS) for _ in range(r.randrange(4, 13))))
        lines.append(line)
        size += len(line)
    return "".join(lines).encode()[:PAGE]


def database_page(r):
    page = bytearray(PAGE)
    page[0:8] = b"DBPG\x0d\x00\x00\x01"
    filled = PAGE * r.randrange(45, 91) // 100
    end = PAGE
    cells = 0
    while PAGE - end < filled:
        row = ("|%d|%s|%d.%02d|2026-11-%02d|" % (r.randrange(10 ** 6), r.choice(WORDS), r.randrange(10000),
                                                  r.randrange(100), r.randrange(10, 28))).encode()
        if end - len(row) <= 64 + 2 * (cells + 1):
            break
        end -= len(row)
        page[end:end + len(row)] = row
        page[32 + 2 * cells:34 + 2 * cells] = struct.pack("<H", end)
        cells += 1
    page[8] = cells & 0xFF
    return bytes(page)


def templates(r, count=64):
    return [text_page(r) if i % 2 == 0 else database_page(r) for i in range(count)]


def stamp(page, number):
    """The page's number in it: a text page's first line number, a database page's header."""
    if page[:4] == b"DBPG":
        return page[:4] + struct.pack("<I", number & 0xFFFFFFFF) + page[8:]
    return b"%08d" % (number % 10 ** 8) + page[8:]


def compressed_pool(r, size):
    """About `size` bytes of high-entropy file content: gzip of text, and random-looking media."""
    pages = templates(r, 32)
    text = b"".join(stamp(pages[r.randrange(32) & ~1], i) for i in range(size // PAGE))
    gz = zlib.compress(text, 6)
    media = os.urandom(size // 2)
    return gz + media


def make_image(args):
    r = random.Random(args.seed)
    pages = templates(r)
    pool = compressed_pool(r, 8 << 20) if args.compressed_percent else b""
    total_pages = args.size // PAGE
    data_pages = total_pages * (100 - args.free_percent) // 100
    out = sys.stdout.buffer
    index = 0
    while index < data_pages:
        # 1 MiB at a time: a compressed file, or runs of 16 text or database pages.
        if args.compressed_percent and r.randrange(100) < args.compressed_percent and data_pages - index >= 128:
            start = r.randrange(len(pool) - (1 << 20))
            out.write(pool[start:start + (1 << 20)])
            index += 128
            continue
        for _ in range(min(128, data_pages - index)):
            out.write(stamp(pages[(index // 16) % 2 + 2 * r.randrange(32)], index))
            index += 1
    zeros = bytes(1 << 20)
    left = (total_pages - index) * PAGE
    while left > 0:
        out.write(zeros[:min(left, len(zeros))])
        left -= len(zeros)


class NBD:
    """A small blocking NBD client: fixed newstyle, NBD_OPT_GO, simple replies."""

    def __init__(self, port, export):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        greeting = self.recv(18)
        if greeting[:16] != b"NBDMAGICIHAVEOPT":
            raise RuntimeError("not an NBD server: %r" % greeting)
        self.sock.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
        name = export.encode()
        data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
        self.sock.sendall(struct.pack(">QII", 0x49484156454F5054, 7, len(data)) + data)
        while True:
            _, _, kind, length = struct.unpack(">QIII", self.recv(20))
            payload = self.recv(length)
            if kind == 1:
                break
            if kind & 0x80000000:
                raise RuntimeError("NBD_OPT_GO refused: %d %r" % (kind, payload))
        self.cookie = 0

    def recv(self, count):
        chunks = []
        while count:
            chunk = self.sock.recv(min(count, 1 << 20))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)

    def send_write(self, offset, data):
        self.cookie += 1
        self.sock.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, self.cookie, offset, len(data)) + data)

    def reply(self):
        magic, error, _ = struct.unpack(">IIQ", self.recv(16))
        if magic != 0x67446698:
            raise RuntimeError("bad reply magic %x" % magic)
        if error:
            raise ConnectionError("NBD error %d" % error)

    def close(self):
        try:
            self.sock.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, 0, 0, 0))
        except OSError:
            pass
        self.sock.close()


def run_writer(args):
    r = random.Random(args.seed)
    size_from, size_to = args.__dict__["from"], args.to
    pages = templates(r, 32)
    pool = compressed_pool(r, 16 << 20) if args.mode in ("mixed", "compressed") else b""
    rate = args.rate_mib * (1 << 20)
    nbd = NBD(args.port, args.export)
    state = {"first": None, "bytes": 0, "files": 0}
    sequential = [size_from]  # the next offset of sequential writers

    def plain_bytes(length):
        out = []
        have = 0
        while have < length:
            page = stamp(pages[r.randrange(32)], r.randrange(10 ** 8))
            at = 256 + r.randrange(PAGE - 512)
            field = b"%d %s" % (r.randrange(10 ** 6), r.choice(WORDS).encode())
            out.append(page[:at] + field + page[at + len(field):])
            have += PAGE
        return b"".join(out)[:length]

    def send(offset, data):
        if state["first"] is None:
            state["first"] = int(time.time() * 1000)
        nbd.send_write(offset, data)
        state["bytes"] += len(data)

    def next_sequential(length):
        if sequential[0] + length > size_to:
            sequential[0] = size_from
        offset = sequential[0]
        sequential[0] += length
        return offset

    def one_round():
        """Sends some writes, waits for their replies; returns nothing, raises when cut off."""
        if args.mode == "encrypt":
            if sequential[0] + (1 << 20) > size_to:
                raise EOFError("reached the end")
            send(next_sequential(1 << 20), os.urandom(1 << 20))
            nbd.reply()
        elif args.mode == "textcopy":
            data = b"".join(stamp(pages[2 * r.randrange(16)], r.randrange(10 ** 8)) for _ in range(128))
            send(next_sequential(1 << 20), data)
            nbd.reply()
        elif args.mode == "db" or (args.mode == "mixed" and state["files"] > 0.3 * state["bytes"]):
            count = 0
            for _ in range(4):
                length = 4096 << r.randrange(3)
                region = args.plain_to or size_to
                send(r.randrange(size_from // 4096, (region - length) // 4096) * 4096, plain_bytes(length))
                count += 1
            for _ in range(count):
                nbd.reply()
        else:  # a new compressed file, written one after the other
            length = r.randrange(16, 129) * 4096
            start = r.randrange(len(pool) - length)
            offset = next_sequential(length)
            region_from = args.files_from if args.files_from is not None else size_from
            if offset < region_from:
                offset = sequential[0] = region_from
                sequential[0] += length
            send(offset, pool[start:start + length])
            state["files"] += length
            nbd.reply()

    started = time.time()
    ended = "time"
    try:
        while time.time() - started < args.seconds:
            one_round()
            ahead = state["bytes"] / rate - (time.time() - started)
            if ahead > 0:
                time.sleep(ahead)
    except (ConnectionError, OSError) as error:
        ended = "cut off: %s" % error
    except EOFError as error:
        ended = str(error)
    seconds = time.time() - started
    nbd.close()
    print(json.dumps({"firstWriteMs": state["first"], "bytes": state["bytes"], "seconds": round(seconds, 3),
                      "next": sequential[0], "ended": ended}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    image = sub.add_parser("image")
    image.add_argument("--size", type=int, required=True)
    image.add_argument("--seed", type=int, default=1)
    image.add_argument("--compressed-percent", type=int, default=0)
    image.add_argument("--free-percent", type=int, default=0)
    write = sub.add_parser("write")
    write.add_argument("--port", type=int, required=True)
    write.add_argument("--export", required=True)
    write.add_argument("--mode", choices=["encrypt", "db", "mixed", "compressed", "textcopy"], required=True)
    write.add_argument("--seconds", type=float, required=True)
    write.add_argument("--rate-mib", type=float, required=True)
    write.add_argument("--from", type=int, default=0)
    write.add_argument("--to", type=int, required=True)
    write.add_argument("--plain-to", type=int, default=None, help="mixed/db: page writes only below this offset")
    write.add_argument("--files-from", type=int, default=None, help="mixed/compressed: new files only from this offset")
    write.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.command == "image":
        if args.size % PAGE:
            parser.error("--size must be a multiple of 8 KiB")
        make_image(args)
    else:
        run_writer(args)


if __name__ == "__main__":
    main()
