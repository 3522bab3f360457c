//! Packet decoding with etherparse in lax mode: a truncated packet still yields whatever its
//! headers say. Link types: Ethernet (with VLAN and QinQ), Linux cooked capture v1 (SLL, as on
//! the `any` device) and raw IP. Nothing here panics on any input; what cannot be decoded is a
//! [`DecodeError`] for the caller to count.

use std::net::IpAddr;

use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice};
use thiserror::Error;

/// libpcap link types this decoder understands.
pub const LINKTYPE_ETHERNET: i32 = 1;
pub const LINKTYPE_RAW: i32 = 101;
pub const LINKTYPE_LINUX_SLL: i32 = 113;
/// DLT_RAW as some systems number it.
pub const DLT_RAW_ALT: i32 = 12;
/// BSD loopback: a 4-byte address family in the capturing host's byte order.
pub const LINKTYPE_NULL: i32 = 0;
/// OpenBSD loopback: the same family in network byte order.
pub const LINKTYPE_LOOP: i32 = 108;
/// PPP: a 2-byte protocol, possibly after the HDLC address and control bytes.
pub const LINKTYPE_PPP: i32 = 9;
pub const LINKTYPE_IPV4: i32 = 228;
pub const LINKTYPE_IPV6: i32 = 229;
/// Linux cooked capture v2: a 20-byte header, the EtherType first.
pub const LINKTYPE_LINUX_SLL2: i32 = 276;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("link type {0} is not supported")]
    LinkType(i32),
    #[error("packet too short for its link header")]
    Short,
    #[error("no IP layer ({0})")]
    NotIp(String),
}

/// TCP flags as one byte, in the wire order (FIN is bit 0).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// What the flow table needs from one packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketInfo {
    /// Outermost VLAN id, if tagged.
    pub vlan: Option<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IANA protocol number of the transport (after IPv6 extension headers).
    pub proto: u8,
    /// Ports for TCP, UDP and SCTP; ICMP type and code for ICMP.
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    /// Bytes on the wire from the IP header on (as captured, so possibly truncated).
    pub ip_len: u32,
    /// A fragment other than the first: no transport header of its own.
    pub fragment: bool,
    /// The transport payload, as far as it was captured.
    pub payload_len: u32,
    /// TCP sequence number (0 for other protocols).
    pub seq: u32,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// Where this fragment goes in its datagram (IPv4 or IPv6 fragments only).
    pub frag: Option<super::defrag::FragInfo>,
    /// The transport header was whole and valid (ports above came from it, not from the
    /// first bytes of a truncated or malformed header).
    pub transport_ok: bool,
}

/// Decode one captured frame of `linktype`.
pub fn decode(linktype: i32, frame: &[u8]) -> Result<PacketInfo, DecodeError> {
    decode_with_payload(linktype, frame).map(|(info, _)| info)
}

/// Decode one captured frame and also return its transport payload (as far as captured).
pub fn decode_with_payload(
    linktype: i32,
    frame: &[u8],
) -> Result<(PacketInfo, &[u8]), DecodeError> {
    decode_layer(linktype, frame, 0)
}

/// Tunnels decoded through at most this many layers.
const MAX_TUNNEL_DEPTH: u8 = 3;

/// The packet inside a GRE or VXLAN tunnel: (link type of what follows, its bytes).
fn tunnel_inner(proto: u8, body: &[u8], dport: u16) -> Option<(i32, &[u8])> {
    match proto {
        47 => {
            let flags = u16::from_be_bytes([*body.first()?, *body.get(1)?]);
            if flags & 0x7 != 0 {
                return None; // only GRE version 0
            }
            let ptype = u16::from_be_bytes([*body.get(2)?, *body.get(3)?]);
            let mut at = 4;
            for bit in [0x8000u16, 0x2000, 0x1000] {
                if flags & bit != 0 {
                    at += 4;
                }
            }
            let inner = body.get(at..)?;
            match ptype {
                0x0800 | 0x86dd => Some((LINKTYPE_RAW, inner)),
                0x6558 => Some((LINKTYPE_ETHERNET, inner)),
                // ERSPAN types II and III.
                0x88be => Some((LINKTYPE_ETHERNET, inner.get(8..)?)),
                0x22eb => Some((LINKTYPE_ETHERNET, inner.get(12..)?)),
                _ => None,
            }
        }
        // VXLAN on its IANA port: 8-byte header with the I flag, then Ethernet.
        17 if dport == 4789 && body.len() > 8 && body[0] & 0x08 != 0 => {
            Some((LINKTYPE_ETHERNET, &body[8..]))
        }
        _ => None,
    }
}

/// The packet inside a Network Service Header (EtherType 0x894F) of an Ethernet frame.
fn nsh_inner(frame: &[u8]) -> Option<(i32, &[u8])> {
    let mut at = 12;
    loop {
        let et = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
        match et {
            0x8100 | 0x88a8 | 0x9100 => at += 4,
            0x894f => break,
            _ => return None,
        }
    }
    let nsh = frame.get(at + 2..)?;
    let len = (*nsh.get(1)? & 0x3f) as usize * 4;
    let inner = nsh.get(len..)?;
    match *nsh.get(3)? {
        1 | 2 => Some((LINKTYPE_RAW, inner)),
        3 => Some((LINKTYPE_ETHERNET, inner)),
        _ => None,
    }
}

fn decode_layer(
    linktype: i32,
    frame: &[u8],
    depth: u8,
) -> Result<(PacketInfo, &[u8]), DecodeError> {
    let (info, body) = match decode_one(linktype, frame) {
        Ok(d) => d,
        Err(e) => {
            if linktype == LINKTYPE_ETHERNET
                && depth < MAX_TUNNEL_DEPTH
                && let Some((lt, inner)) = nsh_inner(frame)
            {
                return decode_layer(lt, inner, depth + 1);
            }
            return Err(e);
        }
    };
    if depth < MAX_TUNNEL_DEPTH
        && !info.fragment
        && let Some((lt, inner)) = tunnel_inner(info.proto, body, info.dport)
        && let Ok(decoded) = decode_layer(lt, inner, depth + 1)
    {
        return Ok(decoded);
    }
    Ok((info, body))
}

/// The fragment header of an IPv6 packet, found by walking its extension headers.
fn ipv6_fragment(ip: &[u8]) -> Option<super::defrag::FragInfo> {
    let mut next = *ip.get(6)?;
    let mut at = 40usize;
    for _ in 0..16 {
        let h = ip.get(at..at + 8)?;
        match next {
            0 | 43 | 60 => {
                next = h[0];
                at += (h[1] as usize + 1) * 8;
            }
            51 => {
                next = h[0];
                at += (h[1] as usize + 2) * 4;
            }
            44 => {
                let off = u16::from_be_bytes([h[2], h[3]]);
                let offset = (off & 0xfff8) as u32;
                let more = off & 1 == 1;
                if !more && offset == 0 {
                    return None; // an atomic fragment: the whole datagram
                }
                return Some(super::defrag::FragInfo {
                    id: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                    offset,
                    more,
                });
            }
            _ => return None,
        }
    }
    None
}

fn decode_one(linktype: i32, frame: &[u8]) -> Result<(PacketInfo, &[u8]), DecodeError> {
    let sliced = match linktype {
        LINKTYPE_ETHERNET => {
            LaxSlicedPacket::from_ethernet(frame).map_err(|_| DecodeError::Short)?
        }
        LINKTYPE_RAW | DLT_RAW_ALT | LINKTYPE_IPV4 | LINKTYPE_IPV6 => {
            LaxSlicedPacket::from_ip(frame).map_err(|e| DecodeError::NotIp(e.to_string()))?
        }
        LINKTYPE_NULL | LINKTYPE_LOOP => {
            let fam = frame.get(0..4).ok_or(DecodeError::Short)?;
            let le = u32::from_le_bytes([fam[0], fam[1], fam[2], fam[3]]);
            let be = u32::from_be_bytes([fam[0], fam[1], fam[2], fam[3]]);
            // AF_INET is 2 everywhere; AF_INET6 is 10, 24, 28 or 30 depending on the OS.
            let ok = |f: u32| matches!(f, 2 | 10 | 24 | 28 | 30);
            if !ok(le) && !ok(be) {
                return Err(DecodeError::NotIp(format!("loopback family {le}")));
            }
            LaxSlicedPacket::from_ip(&frame[4..]).map_err(|e| DecodeError::NotIp(e.to_string()))?
        }
        LINKTYPE_PPP => {
            let body = if frame.starts_with(&[0xff, 0x03]) {
                &frame[2..]
            } else {
                frame
            };
            // Protocol field compression: an odd first byte is a one-byte protocol.
            let first = *body.first().ok_or(DecodeError::Short)?;
            let (proto, at) = if first & 1 == 1 {
                (first as u16, 1)
            } else {
                let p = body.get(0..2).ok_or(DecodeError::Short)?;
                (u16::from_be_bytes([p[0], p[1]]), 2)
            };
            match proto {
                0x0021 | 0x0057 => LaxSlicedPacket::from_ip(&body[at..])
                    .map_err(|e| DecodeError::NotIp(e.to_string()))?,
                other => return Err(DecodeError::NotIp(format!("PPP protocol {other:#06x}"))),
            }
        }
        LINKTYPE_LINUX_SLL2 => {
            let proto = frame.get(0..2).ok_or(DecodeError::Short)?;
            if frame.len() < 20 {
                return Err(DecodeError::Short);
            }
            let ether_type = EtherType(u16::from_be_bytes([proto[0], proto[1]]));
            LaxSlicedPacket::from_ether_type(ether_type, &frame[20..])
        }
        LINKTYPE_LINUX_SLL => {
            // 16-byte header; the protocol (an EtherType) is its last two bytes.
            let proto = frame.get(14..16).ok_or(DecodeError::Short)?;
            let ether_type = EtherType(u16::from_be_bytes([proto[0], proto[1]]));
            LaxSlicedPacket::from_ether_type(ether_type, &frame[16..])
        }
        other => return Err(DecodeError::LinkType(other)),
    };
    let vlan = sliced.vlan_ids().first().map(|v| v.value());
    let mut frag = None;
    let (src, dst, ip_len, payload, ttl) = match &sliced.net {
        Some(LaxNetSlice::Ipv4(v4)) => {
            let h = v4.header();
            let offset = h.fragments_offset().value() as u32 * 8;
            if h.more_fragments() || offset != 0 {
                frag = Some(super::defrag::FragInfo {
                    id: h.identification() as u32,
                    offset,
                    more: h.more_fragments(),
                });
            }
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                h.slice().len() + v4.payload().payload.len(),
                v4.payload(),
                h.ttl(),
            )
        }
        Some(LaxNetSlice::Ipv6(v6)) => {
            let h = v6.header();
            // The extension chain is walked here, bounds-checked: etherparse's iterator over
            // lax-sliced extensions trusts lengths it did not check (and panics on them).
            let start = (h.slice().as_ptr() as usize).saturating_sub(frame.as_ptr() as usize);
            frag = ipv6_fragment(frame.get(start..).unwrap_or_default());
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                h.slice().len() + v6.payload().payload.len(),
                v6.payload(),
                h.hop_limit(),
            )
        }
        _ => {
            let why = sliced
                .stop_err
                .as_ref()
                .map(|(e, _)| e.to_string())
                .unwrap_or_else(|| "not an IP packet".into());
            return Err(DecodeError::NotIp(why));
        }
    };
    let proto = payload.ip_number.0;
    let mut info = PacketInfo {
        vlan,
        src,
        dst,
        proto,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        ip_len: ip_len as u32,
        fragment: payload.fragmented,
        payload_len: 0,
        seq: 0,
        ttl,
        frag,
        transport_ok: false,
    };
    let mut body: &[u8] = &[];
    if frag.is_some() {
        // A fragment: its data goes to reassembly, not to a transport parser.
        info.sport = 0;
        info.dport = 0;
        return Ok((info, payload.payload));
    }
    match &sliced.transport {
        Some(TransportSlice::Tcp(t)) => {
            body = t.payload();
            info.sport = t.source_port();
            info.dport = t.destination_port();
            info.seq = t.sequence_number();
            let mut f = 0;
            for (set, bit) in [
                (t.fin(), tcp_flags::FIN),
                (t.syn(), tcp_flags::SYN),
                (t.rst(), tcp_flags::RST),
                (t.psh(), tcp_flags::PSH),
                (t.ack(), tcp_flags::ACK),
                (t.urg(), tcp_flags::URG),
                (t.ece(), tcp_flags::ECE),
                (t.cwr(), tcp_flags::CWR),
            ] {
                if set {
                    f |= bit;
                }
            }
            info.tcp_flags = f;
            info.payload_len = t.payload().len() as u32;
            info.transport_ok = true;
        }
        Some(TransportSlice::Udp(u)) => {
            body = u.payload();
            info.sport = u.source_port();
            info.dport = u.destination_port();
            info.payload_len = u.payload().len() as u32;
            info.transport_ok = true;
        }
        Some(TransportSlice::Icmpv4(i)) => {
            body = i.payload();
            info.sport = i.type_u8() as u16;
            info.dport = i.code_u8() as u16;
            info.payload_len = i.payload().len() as u32;
            info.transport_ok = true;
        }
        None if proto == 47 && !payload.fragmented => {
            body = payload.payload;
        }
        Some(TransportSlice::Icmpv6(i)) => {
            body = i.payload();
            info.sport = i.type_u8() as u16;
            info.dport = i.code_u8() as u16;
            info.payload_len = i.payload().len() as u32;
            info.transport_ok = true;
        }
        _ => {
            // A truncated or unknown transport: ports are still the first four bytes for the
            // protocols that have them, unless this is a later fragment.
            let p = payload.payload;
            if !payload.fragmented && matches!(proto, 6 | 17 | 132) && p.len() >= 4 {
                info.sport = u16::from_be_bytes([p[0], p[1]]);
                info.dport = u16::from_be_bytes([p[2], p[3]]);
            }
        }
    }
    Ok((info, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp_frame(syn: bool, payload: &[u8]) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2([1; 6], [2; 6])
            .single_vlan(etherparse::VlanId::try_new(42).unwrap())
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 80, 1, 1000);
        if syn {
            b = b.syn();
        }
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn decodes_vlan_tcp_and_truncation() {
        let f = tcp_frame(true, b"hello");
        let p = decode(LINKTYPE_ETHERNET, &f).unwrap();
        assert_eq!(p.vlan, Some(42));
        assert_eq!((p.proto, p.sport, p.dport), (6, 40000, 80));
        assert_eq!(p.tcp_flags & tcp_flags::SYN, tcp_flags::SYN);
        assert_eq!(p.payload_len, 5);
        // Cut inside the TCP header: the ports are still known.
        let cut = &f[..14 + 4 + 20 + 6];
        let p = decode(LINKTYPE_ETHERNET, cut).unwrap();
        assert_eq!((p.sport, p.dport), (40000, 80));
        // Every prefix of the frame: an error or a packet, never a panic.
        for n in 0..f.len() {
            let _ = decode(LINKTYPE_ETHERNET, &f[..n]);
        }
    }

    #[test]
    fn unwraps_nsh_gre_and_vxlan() {
        let mut ip = vec![];
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1000, 2000)
            .write(&mut ip, b"inner")
            .unwrap();
        // Ethernet, EtherType NSH; NSH of 6 words, MD type 1, next protocol IPv4.
        let mut f = vec![2u8; 12];
        f.extend_from_slice(&[0x89, 0x4f, 0x00, 0x06, 0x01, 0x01]);
        f.extend_from_slice(&[0u8; 20]);
        f.extend_from_slice(&ip);
        let (p, body) = decode_with_payload(LINKTYPE_ETHERNET, &f).unwrap();
        assert_eq!((p.sport, p.dport, body), (1000, 2000, b"inner".as_slice()));
        // GRE (IPv4 inside) and VXLAN (Ethernet inside).
        let mut gre = vec![0u8, 0, 0x08, 0x00];
        gre.extend_from_slice(&ip);
        let mut outer = vec![];
        PacketBuilder::ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
            .write(&mut outer, etherparse::IpNumber(47), &gre)
            .unwrap();
        let p = decode(LINKTYPE_RAW, &outer).unwrap();
        assert_eq!((p.src.to_string().as_str(), p.dport), ("10.0.0.1", 2000));
        let mut vx = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        vx.extend_from_slice(&[2u8; 12]);
        vx.extend_from_slice(&[0x08, 0x00]);
        vx.extend_from_slice(&ip);
        let mut outer = vec![];
        PacketBuilder::ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
            .udp(5555, 4789)
            .write(&mut outer, &vx)
            .unwrap();
        let p = decode(LINKTYPE_RAW, &outer).unwrap();
        assert_eq!((p.src.to_string().as_str(), p.dport), ("10.0.0.1", 2000));
    }

    #[test]
    fn decodes_raw_ipv6_udp_and_refuses_unknown_links() {
        let mut out = Vec::new();
        PacketBuilder::ipv6([0xfe; 16], [0xfd; 16], 64)
            .udp(5353, 53)
            .write(&mut out, b"q")
            .unwrap();
        let p = decode(LINKTYPE_RAW, &out).unwrap();
        assert_eq!((p.proto, p.sport, p.dport, p.vlan), (17, 5353, 53, None));
        assert_eq!(decode(999, &out), Err(DecodeError::LinkType(999)));
        assert!(decode(LINKTYPE_LINUX_SLL, &[0u8; 10]).is_err());
        assert!(matches!(
            decode(LINKTYPE_RAW, b"\\x99garbage"),
            Err(DecodeError::NotIp(_))
        ));
    }
}
