//! Community ID v1 flow hashing (corelight/community-id-spec): the same string for both
//! directions of a flow, so Lindi's flows join with Zeek's and Suricata's.
//!
//! `"1:" + base64(sha1(seed(2) . ip_a . ip_b . proto(1) . 0 . port_a(2) . port_b(2)))`, all in
//! network byte order, with the endpoints ordered so that the smaller (ip, port) comes first.
//! For ICMP and ICMPv6, type and code stand in for the ports as the specification maps them:
//! a request and its reply share one id.

use std::net::IpAddr;

use base64::Engine;

/// ICMP types that come in request/reply pairs: (type, counterpart).
const ICMP4_PAIRS: &[(u8, u8)] = &[
    (8, 0),
    (0, 8),
    (13, 14),
    (14, 13),
    (15, 16),
    (16, 15),
    (10, 9),
    (9, 10),
    (17, 18),
    (18, 17),
];
const ICMP6_PAIRS: &[(u8, u8)] = &[
    (128, 129),
    (129, 128),
    (133, 134),
    (134, 133),
    (135, 136),
    (136, 135),
    (130, 131),
    (131, 130),
    (139, 140),
    (140, 139),
    (144, 145),
    (145, 144),
];

fn bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The Community ID of a flow. For ICMP (1) and ICMPv6 (58) pass the type as `sport` and
/// the code as `dport`.
pub fn community_id_v1(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    proto: u8,
    seed: u16,
) -> String {
    let (mut sport, mut dport) = (sport, dport);
    let mut one_way = false;
    let pairs = match proto {
        1 => Some(ICMP4_PAIRS),
        58 => Some(ICMP6_PAIRS),
        _ => None,
    };
    if let Some(pairs) = pairs {
        let ty = sport as u8;
        match pairs.iter().find(|(t, _)| *t == ty) {
            Some((_, counterpart)) => dport = *counterpart as u16,
            None => one_way = true,
        }
        sport = ty as u16;
    }
    let (a, b) = (bytes(&src), bytes(&dst));
    let swap = !one_way && (a > b || (a == b && sport > dport));
    let (a, b, pa, pb) = if swap {
        (b, a, dport, sport)
    } else {
        (a, b, sport, dport)
    };
    let mut input = Vec::with_capacity(2 + 32 + 2 + 4);
    input.extend_from_slice(&seed.to_be_bytes());
    input.extend_from_slice(&a);
    input.extend_from_slice(&b);
    input.push(proto);
    input.push(0);
    input.extend_from_slice(&pa.to_be_bytes());
    input.extend_from_slice(&pb.to_be_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    format!(
        "1:{}",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_published_values_in_both_directions() {
        let a: IpAddr = "192.168.1.42".parse().unwrap();
        let b: IpAddr = "8.8.8.8".parse().unwrap();
        assert_eq!(
            community_id_v1(a, b, 4242, 53, 17, 0),
            "1:vTdrngJjlP5eZ9mw9JtnKyn99KM="
        );
        assert_eq!(
            community_id_v1(b, a, 53, 4242, 17, 0),
            "1:vTdrngJjlP5eZ9mw9JtnKyn99KM="
        );
        // ICMPv6 neighbour solicitation (135, code 0) and its advertisement (136) share an id.
        let x: IpAddr = "fe80::200:86ff:fe05:80da".parse().unwrap();
        let y: IpAddr = "fe80::260:97ff:fe07:69ea".parse().unwrap();
        assert_eq!(
            community_id_v1(x, y, 135, 0, 58, 0),
            "1:dGHyGvjMfljg6Bppwm3bg0LO8TY="
        );
        assert_eq!(
            community_id_v1(y, x, 136, 0, 58, 0),
            "1:dGHyGvjMfljg6Bppwm3bg0LO8TY="
        );
        assert_eq!(
            community_id_v1(y, x, 135, 0, 58, 0),
            "1:zavyT/cezQr1fmImYCwYnMXbgck="
        );
    }
}
