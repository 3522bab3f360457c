//! Address and port expressions of a rule header: `any`, single values, CIDR blocks, port
//! ranges, `[lists]`, negation with `!`, and `$VARIABLES` taken from a [`Vars`] table (the
//! defaults are those of Suricata's shipped `suricata.yaml`).

use std::collections::HashMap;
use std::net::IpAddr;

/// Address and port variables a ruleset refers to as `$NAME`.
#[derive(Clone, Debug)]
pub struct Vars {
    pub addresses: HashMap<String, String>,
    pub ports: HashMap<String, String>,
}

impl Default for Vars {
    /// The values of Suricata's default `suricata.yaml`.
    fn default() -> Self {
        let home = "[192.168.0.0/16,10.0.0.0/8,172.16.0.0/12]";
        let mut addresses: HashMap<String, String> = HashMap::new();
        addresses.insert("HOME_NET".into(), home.into());
        addresses.insert("EXTERNAL_NET".into(), "!$HOME_NET".into());
        for v in [
            "HTTP_SERVERS",
            "SMTP_SERVERS",
            "SQL_SERVERS",
            "DNS_SERVERS",
            "TELNET_SERVERS",
            "AIM_SERVERS",
            "DC_SERVERS",
            "DNP3_SERVER",
            "DNP3_CLIENT",
            "MODBUS_CLIENT",
            "MODBUS_SERVER",
            "ENIP_CLIENT",
            "ENIP_SERVER",
        ] {
            addresses.insert(v.into(), "$HOME_NET".into());
        }
        let mut ports: HashMap<String, String> = HashMap::new();
        for (k, v) in [
            ("HTTP_PORTS", "80"),
            ("SHELLCODE_PORTS", "!80"),
            ("ORACLE_PORTS", "1521"),
            ("SSH_PORTS", "22"),
            ("DNP3_PORTS", "20000"),
            ("MODBUS_PORTS", "502"),
            ("FILE_DATA_PORTS", "[$HTTP_PORTS,110,143]"),
            ("FTP_PORTS", "21"),
            ("GENEVE_PORTS", "6081"),
            ("VXLAN_PORTS", "4789"),
            ("TEREDO_PORTS", "3544"),
        ] {
            ports.insert(k.into(), v.into());
        }
        Vars { addresses, ports }
    }
}

/// A set of addresses: the union of `include` minus the union of `exclude`; empty `include`
/// means every address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddrSet {
    include: Vec<Cidr>,
    exclude: Vec<Cidr>,
    any: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.bits as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.bits as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl AddrSet {
    pub fn any() -> Self {
        AddrSet {
            any: true,
            ..Default::default()
        }
    }

    pub fn is_any(&self) -> bool {
        self.any && self.exclude.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        (self.any || self.include.iter().any(|c| c.contains(ip)))
            && !self.exclude.iter().any(|c| c.contains(ip))
    }

    /// Parse an address expression.
    pub fn parse(text: &str, vars: &Vars) -> Result<Self, String> {
        let mut set = AddrSet::default();
        add_addr(&mut set, text.trim(), vars)?;
        if set.include.is_empty() && !set.exclude.is_empty() {
            set.any = true;
        }
        if !set.any && set.include.is_empty() {
            return Err(format!("address {text:?} matches nothing"));
        }
        Ok(set)
    }
}

/// Walk an address or port expression: `!` negation, `[..]` lists and `$VARIABLES` (from
/// `vars`, named `kind` in errors), handing each leaf and whether it is negated to `leaf`.
fn walk(
    text: &str,
    negated: bool,
    vars: &std::collections::HashMap<String, String>,
    kind: &str,
    depth: u32,
    leaf: &mut dyn FnMut(&str, bool) -> Result<(), String>,
) -> Result<(), String> {
    if depth > 16 {
        return Err(format!("{kind} variables nest too deep"));
    }
    let text = text.trim();
    if let Some(rest) = text.strip_prefix('!') {
        return walk(rest, !negated, vars, kind, depth + 1, leaf);
    }
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        for item in split_list(inner)? {
            walk(item, negated, vars, kind, depth + 1, leaf)?;
        }
        return Ok(());
    }
    if let Some(name) = text.strip_prefix('$') {
        let value = vars
            .get(name)
            .ok_or_else(|| format!("unknown {kind} variable ${name}"))?;
        return walk(value, negated, vars, kind, depth + 1, leaf);
    }
    leaf(text, negated)
}

fn add_addr(set: &mut AddrSet, text: &str, vars: &Vars) -> Result<(), String> {
    walk(
        text,
        false,
        &vars.addresses,
        "address",
        0,
        &mut |leaf, negated| {
            if leaf.eq_ignore_ascii_case("any") {
                if negated {
                    return Err("!any matches nothing".into());
                }
                set.any = true;
                return Ok(());
            }
            let cidr = parse_cidr(leaf)?;
            if negated {
                set.exclude.push(cidr);
            } else {
                set.include.push(cidr);
            }
            Ok(())
        },
    )
}

fn parse_cidr(text: &str) -> Result<Cidr, String> {
    let (addr, bits) = match text.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (text, None),
    };
    let net: IpAddr = addr.parse().map_err(|_| format!("bad address {text:?}"))?;
    let max = if net.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        None => max,
        Some(b) => match b.parse::<u8>() {
            Ok(n) if n <= max => n,
            // A dotted netmask (a.b.c.d/255.255.0.0).
            _ => match b.parse::<std::net::Ipv4Addr>() {
                Ok(m) if net.is_ipv4() => u32::from(m).count_ones() as u8,
                _ => return Err(format!("bad prefix length in {text:?}")),
            },
        },
    };
    Ok(Cidr { net, bits })
}

/// Split a `[..]` list body at top-level commas.
fn split_list(text: &str) -> Result<Vec<&str>, String> {
    let mut out = vec![];
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("unbalanced brackets in {text:?}"));
                }
            }
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced brackets in {text:?}"));
    }
    out.push(&text[start..]);
    Ok(out.into_iter().filter(|s| !s.trim().is_empty()).collect())
}

/// A set of ports, kept as sorted inclusive ranges (a 65536-bit map per rule side would cost
/// 16 KiB a rule: 200 MB for an ET Open ruleset).
#[derive(Clone, PartialEq, Eq)]
pub struct PortSet {
    ranges: Box<[(u16, u16)]>,
    any: bool,
}

impl std::fmt::Debug for PortSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.any {
            write!(f, "PortSet(any)")
        } else {
            write!(f, "PortSet({:?})", self.ranges)
        }
    }
}

impl PortSet {
    pub fn any() -> Self {
        PortSet {
            ranges: Box::new([(0, u16::MAX)]),
            any: true,
        }
    }

    pub fn is_any(&self) -> bool {
        self.any
    }

    /// The ports of a set of at most `max` ports.
    pub fn few(&self, max: usize) -> Option<Vec<u16>> {
        if self.any {
            return None;
        }
        let n: usize = self
            .ranges
            .iter()
            .map(|(a, b)| (*b - *a) as usize + 1)
            .sum();
        (n <= max).then(|| self.ranges.iter().flat_map(|(a, b)| *a..=*b).collect())
    }

    pub fn contains(&self, port: u16) -> bool {
        if self.any {
            return true;
        }
        match self.ranges.binary_search_by(|(lo, _)| lo.cmp(&port)) {
            Ok(_) => true,
            Err(0) => false,
            Err(i) => self.ranges[i - 1].1 >= port,
        }
    }

    pub fn parse(text: &str, vars: &Vars) -> Result<Self, String> {
        let mut include = Box::new([0u64; 1024]);
        let mut exclude = Box::new([0u64; 1024]);
        let mut saw_include = false;
        add_ports(
            &mut include,
            &mut exclude,
            &mut saw_include,
            text.trim(),
            vars,
        )?;
        if !saw_include {
            *include = [u64::MAX; 1024];
        }
        for (i, e) in include.iter_mut().zip(exclude.iter()) {
            *i &= !e;
        }
        let mut ranges: Vec<(u16, u16)> = vec![];
        let mut start: Option<usize> = None;
        let mut edge = |set: bool, p: usize, start: &mut Option<usize>| match (set, *start) {
            (true, None) => *start = Some(p),
            (false, Some(s)) => {
                ranges.push((s as u16, (p - 1) as u16));
                *start = None;
            }
            _ => {}
        };
        for (wi, w) in include.iter().enumerate() {
            match *w {
                // Whole words: one transition check each.
                0 | u64::MAX => edge(*w != 0, wi * 64, &mut start),
                _ => {
                    for b in 0..64 {
                        edge(w & (1 << b) != 0, wi * 64 + b, &mut start);
                    }
                }
            }
        }
        edge(false, 65536, &mut start);
        if ranges.is_empty() {
            return Err(format!("port {text:?} matches nothing"));
        }
        let any = ranges == [(0, u16::MAX)];
        Ok(PortSet {
            ranges: ranges.into_boxed_slice(),
            any,
        })
    }
}

fn add_ports(
    include: &mut [u64; 1024],
    exclude: &mut [u64; 1024],
    saw_include: &mut bool,
    text: &str,
    vars: &Vars,
) -> Result<(), String> {
    walk(text, false, &vars.ports, "port", 0, &mut |leaf, negated| {
        let (lo, hi) = if leaf.eq_ignore_ascii_case("any") {
            (0u16, u16::MAX)
        } else if let Some((a, b)) = leaf.split_once(':') {
            let lo = if a.trim().is_empty() {
                0
            } else {
                parse_port(a)?
            };
            let hi = if b.trim().is_empty() {
                u16::MAX
            } else {
                parse_port(b)?
            };
            if lo > hi {
                return Err(format!("empty port range {leaf:?}"));
            }
            (lo, hi)
        } else {
            let p = parse_port(leaf)?;
            (p, p)
        };
        let target = if negated {
            &mut *exclude
        } else {
            *saw_include = true;
            &mut *include
        };
        set_range(target, lo as usize, hi as usize);
        Ok(())
    })
}

/// Set bits lo..=hi, a word at a time.
fn set_range(bits: &mut [u64; 1024], lo: usize, hi: usize) {
    let (lw, hw) = (lo / 64, hi / 64);
    let lmask = u64::MAX << (lo % 64);
    let hmask = u64::MAX >> (63 - hi % 64);
    if lw == hw {
        bits[lw] |= lmask & hmask;
        return;
    }
    bits[lw] |= lmask;
    for w in &mut bits[lw + 1..hw] {
        *w = u64::MAX;
    }
    bits[hw] |= hmask;
}

fn parse_port(text: &str) -> Result<u16, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("bad port {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_with_variables_lists_and_negation() {
        let vars = Vars::default();
        let home = AddrSet::parse("$HOME_NET", &vars).unwrap();
        assert!(home.contains("10.1.2.3".parse().unwrap()));
        assert!(!home.contains("8.8.8.8".parse().unwrap()));
        let ext = AddrSet::parse("$EXTERNAL_NET", &vars).unwrap();
        assert!(ext.contains("8.8.8.8".parse().unwrap()));
        assert!(!ext.contains("192.168.1.1".parse().unwrap()));
        let l = AddrSet::parse("[1.2.3.0/24,!1.2.3.4,2001:db8::/32]", &vars).unwrap();
        assert!(l.contains("1.2.3.5".parse().unwrap()));
        assert!(!l.contains("1.2.3.4".parse().unwrap()));
        assert!(l.contains("2001:db8::1".parse().unwrap()));
        assert!(AddrSet::parse("$NOPE", &vars).is_err());
        assert!(AddrSet::parse("[1.2.3.4", &vars).is_err());
        assert!(AddrSet::parse("1.2.3.4/40", &vars).is_err());
        assert!(AddrSet::parse("any", &vars).unwrap().is_any());
    }

    #[test]
    fn ports_with_ranges_lists_and_negation() {
        let vars = Vars::default();
        let p = PortSet::parse("[80,8000:8080,!8008]", &vars).unwrap();
        assert!(p.contains(80) && p.contains(8080) && !p.contains(8008) && !p.contains(81));
        let p = PortSet::parse("!$HTTP_PORTS", &vars).unwrap();
        assert!(!p.contains(80) && p.contains(81));
        let p = PortSet::parse("1024:", &vars).unwrap();
        assert!(p.contains(65535) && !p.contains(1023));
        assert!(PortSet::parse("any", &vars).unwrap().is_any());
        assert!(PortSet::parse("70000", &vars).is_err());
        assert!(PortSet::parse("!any", &vars).is_err());
        assert!(PortSet::parse("[!$FILE_DATA_PORTS]", &vars).is_ok());
    }
}
