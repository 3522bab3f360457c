"""Write COPIES copies of a little-endian microsecond pcap into one file, each copy's
timestamps shifted past the last (no flow spans two copies).

Usage: python3 bench/copies.py SRC DST COPIES
"""
import struct
import sys

src, dst, copies = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(src, "rb").read()
assert struct.unpack("<I", data[:4])[0] == 0xa1b2c3d4, "expects a little-endian microsecond pcap"
header, body = data[:24], data[24:]
recs, pos = [], 0
while pos + 16 <= len(body):
    sec, usec, incl, orig = struct.unpack("<IIII", body[pos:pos + 16])
    recs.append((sec, usec, body[pos + 16:pos + 16 + incl], incl, orig))
    pos += 16 + incl
span = recs[-1][0] - recs[0][0] + 3600
with open(dst, "wb") as f:
    f.write(header)
    for c in range(copies):
        for sec, usec, payload, incl, orig in recs:
            f.write(struct.pack("<IIII", sec + c * span, usec, incl, orig))
            f.write(payload)
