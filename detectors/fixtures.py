#!/usr/bin/env python3
"""Write the fixture captures of the bundles in this folder (classic pcap, Ethernet).

Run from the repository root: python3 detectors/fixtures.py
Every packet is built here from scratch (addresses from the documentation ranges), so the
captures are small, exact, and free of anyone's traffic.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
T0 = 1764892800  # 2025-12-05 00:00:00 UTC


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def ip4(a):
    return bytes(int(x) for x in a.split("."))


def eth(payload):
    return bytes([2, 0, 0, 0, 0, 2]) + bytes([2, 0, 0, 0, 0, 1]) + b"\x08\x00" + payload


def ipv4(src, dst, proto, payload):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0, ip4(src), ip4(dst))
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return h + payload


def udp(src, dst, sport, dport, payload):
    u = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return eth(ipv4(src, dst, 17, u))


def tcp(src, dst, sport, dport, seq, ack, flags, payload=b""):
    off = 5 << 4
    h = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, off, flags, 65535, 0, 0)
    pseudo = ip4(src) + ip4(dst) + struct.pack("!BBH", 0, 6, len(h) + len(payload))
    c = csum(pseudo + h + payload)
    h = h[:16] + struct.pack("!H", c) + h[18:]
    return eth(ipv4(src, dst, 6, h + payload))


SYN, ACK, PSH, RST, FIN = 0x02, 0x10, 0x08, 0x04, 0x01


def dns_query(name, txid, qtype=1):
    q = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", qtype, 1)


def client_hello(sni):
    name = sni.encode()
    sni_ext = struct.pack("!HBH", len(name) + 3, 0, len(name)) + name
    exts = struct.pack("!HH", 0, len(sni_ext)) + sni_ext
    # supported_versions (TLS 1.3 and 1.2), supported groups, signature algorithms
    sv = b"\x04\x03\x04\x03\x03"
    exts += struct.pack("!HH", 43, len(sv)) + sv
    groups = b"\x00\x04\x00\x1d\x00\x17"
    exts += struct.pack("!HH", 10, len(groups)) + groups
    sig = b"\x00\x04\x04\x03\x08\x04"
    exts += struct.pack("!HH", 13, len(sig)) + sig
    body = b"\x03\x03" + bytes(range(32)) + b"\x00"
    suites = b"\x13\x01\x13\x02\xc0\x2f"
    body += struct.pack("!H", len(suites)) + suites + b"\x01\x00"
    body += struct.pack("!H", len(exts)) + exts
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def tls_session(client, server, sport, sni):
    """A TCP handshake and a ClientHello."""
    c, s = 1000, 5000
    return [
        tcp(client, server, sport, 443, c, 0, SYN),
        tcp(server, client, 443, sport, s, c + 1, SYN | ACK),
        tcp(client, server, sport, 443, c + 1, s + 1, ACK),
        tcp(client, server, sport, 443, c + 1, s + 1, PSH | ACK, client_hello(sni)),
    ]


def write(path, frames, per_second=100):
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for i, f in enumerate(frames):
        sec, usec = T0 + i // per_second, (i % per_second) * (1000000 // per_second)
        out += struct.pack("<IIII", sec, usec, len(f), len(f)) + f
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(out)


def core(p):
    return os.path.join(HERE, "core", "tests", p)


# DNS: tunnelling and dynamic DNS names, next to ordinary ones that must stay quiet.
write(core("dns-services/queries.pcap"), [
    udp("10.1.0.7", "10.1.0.53", 53000 + i, 53, dns_query(name, i))
    for i, name in enumerate([
        "www.debian.org",
        "a1b2c3.ngrok-free.app",
        "7f3e.eu.ngrok.io",
        "quiet-river-42.trycloudflare.com",
        "office.duckdns.org",
        "cam-1.ddns.net",
        "x9.serveo.net",
        "ngrok.example.org",
        "notduckdns.org",
        "office.duckdns.org.example.com",
    ])
])

# TLS: a ClientHello to a tunnelling service, and one to an ordinary site.
hellos = []
for i, sni in enumerate([
    "abcd-12-34.ngrok-free.app",
    "tcp.eu.ngrok.io",
    "quiet-river-42.trycloudflare.com",
    "office.duckdns.org",
    "www.debian.org",
    "duckdns.org.example.net",
]):
    hellos += tls_session("10.1.0.8", "198.51.100.%d" % (40 + i), 41000 + i, sni)
write(core("tls-services/hellos.pcap"), hellos)

# A port scan: SYNs to 40 ports of one host, each answered by a reset.
scan = []
for i, port in enumerate(range(20, 60)):
    sport = 50000 + i
    scan.append(tcp("10.1.0.66", "10.1.0.10", sport, port, 7000 + i, 0, SYN))
    scan.append(tcp("10.1.0.10", "10.1.0.66", port, sport, 0, 7001 + i, RST | ACK))
write(core("port-scan/scan.pcap"), scan)

# Ordinary traffic: one host reaches three services; no heuristic may fire.
calm = []
for i, port in enumerate([22, 80, 443]):
    calm += [
        tcp("10.1.0.5", "10.1.0.10", 40000 + i, port, 100, 0, SYN),
        tcp("10.1.0.10", "10.1.0.5", port, 40000 + i, 900, 101, SYN | ACK),
        tcp("10.1.0.5", "10.1.0.10", 40000 + i, port, 101, 901, ACK),
    ]
write(core("quiet-traffic/calm.pcap"), calm)

# A SYN flood: 900 SYNs in one second to one web server, from spoofed-looking sources.
flood = [
    tcp("198.51.100.%d" % (1 + i % 250), "10.1.0.20", 1024 + i, 80, i, 0, SYN)
    for i in range(900)
]
write(core("syn-flood/flood.pcap"), flood, per_second=900)
print("fixtures written")
