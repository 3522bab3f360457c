//! Single-pattern search for contents, and the evaluation of one buffer's match list with
//! Suricata's semantics: absolute windows (offset, depth, startswith, endswith), windows
//! relative to the previous match (distance, within, `R` pcre, relative isdataat), negation,
//! and retrying a content at its next occurrence when a later relative match fails.

use memchr::memmem;

use super::rule::{Content, Matcher};

/// Compiled search for one pattern.
#[derive(Clone, Default)]
pub enum Finder {
    #[default]
    Empty,
    Exact(Box<memmem::Finder<'static>>),
    /// Lower-cased pattern: candidates by memchr2 on its first byte's two cases, then a
    /// case-insensitive compare. A few bytes per content, where an automaton per content
    /// would cost kilobytes times ten thousand rules.
    Nocase(Box<[u8]>),
}

impl std::fmt::Debug for Finder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Finder::Empty => "Finder::Empty",
            Finder::Exact(_) => "Finder::Exact",
            Finder::Nocase(_) => "Finder::Nocase",
        })
    }
}

impl Finder {
    pub fn new(pattern: &[u8], nocase: bool) -> Finder {
        if nocase && pattern.iter().any(|b| b.is_ascii_alphabetic()) {
            Finder::Nocase(pattern.to_ascii_lowercase().into_boxed_slice())
        } else {
            Finder::Exact(Box::new(memmem::Finder::new(pattern).into_owned()))
        }
    }

    /// First occurrence at or after `from`, entirely inside `hay[..end]`.
    pub fn find(&self, hay: &[u8], from: usize, end: usize) -> Option<usize> {
        let end = end.min(hay.len());
        if from >= end {
            return None;
        }
        match self {
            Finder::Empty => None,
            Finder::Exact(f) => f.find(&hay[from..end]).map(|p| p + from),
            Finder::Nocase(p) => {
                let last = end.checked_sub(p.len())?;
                if last < from {
                    return None;
                }
                let (lo, up) = (p[0], p[0].to_ascii_uppercase());
                let mut at = from;
                while at <= last {
                    let i = at + memchr::memchr2(lo, up, &hay[at..=last])?;
                    if hay[i..i + p.len()].eq_ignore_ascii_case(p) {
                        return Some(i);
                    }
                    at = i + 1;
                }
                None
            }
        }
    }
}

/// Work allowed for one list evaluation (Suricata bounds its recursion the same way).
const BUDGET: u32 = 3000;

/// Does `list` match `buf`?
pub fn match_list(buf: &[u8], list: &[Matcher]) -> bool {
    match_list_reaching(buf, list, 0)
}

/// Does `list` match `buf` with a match that reaches byte `fresh` or later (the end of its
/// last content, pcre or jump is past `fresh`)? A stream window holds bytes inspected with the
/// packets before: a match among those alone was found then, and is not found again.
pub fn match_list_reaching(buf: &[u8], list: &[Matcher], fresh: usize) -> bool {
    let mut w = Walk {
        budget: BUDGET,
        need: if fresh == 0 { 0 } else { fresh + 1 },
    };
    if let Some(Matcher::DotPrefix) = list.first() {
        let mut dotted = Vec::with_capacity(buf.len() + 1);
        dotted.push(b'.');
        dotted.extend_from_slice(buf);
        return go(&dotted, &list[1..], 0, 0, 0, &mut w) == Outcome::Match;
    }
    go(buf, list, 0, 0, 0, &mut w) == Outcome::Match
}

/// The state of one list evaluation: the work left, and how far a match must reach (0: any).
struct Walk {
    budget: u32,
    need: usize,
}

fn is_relative(m: &Matcher) -> bool {
    match m {
        Matcher::Content(c) => c.relative(),
        Matcher::Pcre { relative, .. } => *relative,
        Matcher::IsDataAt { relative, .. } => *relative,
        Matcher::Bsize(_) | Matcher::DotPrefix => false,
        Matcher::ByteTest(t) => t.read.relative,
        Matcher::ByteJump(j) => j.read.relative,
    }
}

fn window(c: &Content, len: usize, prev_end: usize) -> Option<(usize, usize)> {
    let plen = c.pattern.len();
    let (start, end) = if c.relative() {
        let d = c.distance.unwrap_or(0) as i64;
        let start = (prev_end as i64 + d).max(0) as usize;
        let end = match c.within {
            Some(w) => (prev_end as i64 + d + w as i64).max(0) as usize,
            None => len,
        };
        (start, end)
    } else if c.startswith {
        (0, plen)
    } else {
        let off = c.offset.unwrap_or(0) as usize;
        let end = match c.depth {
            Some(d) => off + d as usize,
            None => len,
        };
        (off, end)
    };
    let end = end.min(len);
    if c.endswith {
        // Only an occurrence ending at the end of the buffer counts.
        let s = len.checked_sub(plen)?;
        if s < start || len > end {
            return None;
        }
        return Some((s, len));
    }
    if start + plen > end {
        return None;
    }
    Some((start, end))
}

/// Result of matching the rest of a list from some position.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Match,
    /// No match from here; a later previous match might still give one.
    Retry,
    /// No match from here nor from any later previous match: stop retrying (this is what keeps
    /// a content that occurs thousands of times from costing thousands of scans).
    Final,
}

/// A content whose window only shrinks as the previous match moves right.
fn monotone(c: &Content) -> bool {
    !c.relative() || (c.within.is_none() && c.distance.unwrap_or(0) >= 0)
}

/// Match `list[i..]` with the previous match ending at `prev_end`; `reach` is the furthest
/// end of a content, pcre or jump so far.
fn go(
    buf: &[u8],
    list: &[Matcher],
    i: usize,
    prev_end: usize,
    reach: usize,
    w: &mut Walk,
) -> Outcome {
    use Outcome::*;
    let Some(m) = list.get(i) else {
        // Not reaching far enough: a later occurrence of an earlier content may.
        return if reach >= w.need { Match } else { Retry };
    };
    if w.budget == 0 {
        return Final;
    }
    w.budget -= 1;
    match m {
        Matcher::Content(c) => {
            // A later previous match can still reach further when a reach is needed.
            let fail = if monotone(c) && w.need == 0 {
                Final
            } else {
                Retry
            };
            let found = window(c, buf.len(), prev_end)
                .and_then(|(s, e)| c.finder.find(buf, s, e).map(|p| (p, e)));
            if c.negated {
                return match found {
                    Some(_) => fail,
                    None => go(buf, list, i + 1, prev_end, reach, w),
                };
            }
            let Some((mut pos, end)) = found else {
                return fail;
            };
            let retry = w.need > 0 || list.get(i + 1).is_some_and(is_relative);
            loop {
                let at = pos + c.pattern.len();
                match go(buf, list, i + 1, at, reach.max(at), w) {
                    Match => return Match,
                    Final => return Final,
                    Retry => {}
                }
                if !retry || w.budget == 0 {
                    return fail;
                }
                w.budget -= 1;
                match c.finder.find(buf, pos + 1, end) {
                    Some(p) => pos = p,
                    None => return fail,
                }
            }
        }
        Matcher::Pcre {
            regex,
            negated,
            relative,
        } => {
            let start = if *relative {
                prev_end.min(buf.len())
            } else {
                0
            };
            let fail = if *relative { Retry } else { Final };
            match (regex.find(&buf[start..]), negated) {
                (Some(_), true) => fail,
                (None, true) => go(buf, list, i + 1, prev_end, reach, w),
                (None, false) => fail,
                (Some(first), false) => {
                    // Where a reach is needed, the later matches too (one step each).
                    let hay = &buf[start..];
                    let mut m = first;
                    loop {
                        let at = start + m.end();
                        let r = go(buf, list, i + 1, at, reach.max(at), w);
                        if r != Retry || w.need == 0 || w.budget == 0 || m.start() >= hay.len() {
                            return r;
                        }
                        w.budget -= 1;
                        match regex.find_at(hay, m.start() + 1) {
                            Some(next) => m = next,
                            None => return Retry,
                        }
                    }
                }
            }
        }
        Matcher::IsDataAt {
            n,
            relative,
            negated,
        } => {
            // Absolute: a byte exists at offset n. Relative: n more bytes follow the previous
            // match (Suricata's arithmetic, checked against it on the corpus).
            let ok = if *relative {
                prev_end + *n as usize <= buf.len()
            } else {
                (*n as usize) < buf.len()
            };
            if ok != *negated {
                go(buf, list, i + 1, prev_end, reach, w)
            } else if *relative && *negated {
                Retry
            } else {
                Final
            }
        }
        Matcher::Bsize(c) => {
            if c.test(buf.len() as u64) {
                go(buf, list, i + 1, prev_end, reach, w)
            } else {
                Final
            }
        }
        Matcher::ByteTest(t) => {
            let fail = if t.read.relative { Retry } else { Final };
            match t.read.read(buf, prev_end) {
                Some((v, _)) if t.test(v) => go(buf, list, i + 1, prev_end, reach, w),
                _ => fail,
            }
        }
        Matcher::ByteJump(j) => {
            let fail = if j.read.relative { Retry } else { Final };
            match j.jump(buf, prev_end) {
                Some(pos) => go(buf, list, i + 1, pos, reach.max(pos), w),
                None => fail,
            }
        }
        Matcher::DotPrefix => go(buf, list, i + 1, prev_end, reach, w),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::addr::Vars;
    use crate::detect::rule::{Buffer, parse_rule};

    fn matches(opts: &str, buf: &[u8]) -> bool {
        let r = parse_rule(
            &format!("alert tcp any any -> any any ({opts} sid:1;)"),
            &Vars::default(),
        )
        .unwrap();
        match_list(buf, r.list(Buffer::Payload).unwrap())
    }

    #[test]
    fn absolute_windows() {
        assert!(matches(r#"content:"abc"; depth:5;"#, b"xxabc"));
        assert!(!matches(r#"content:"abc"; depth:4;"#, b"xxabc"));
        assert!(matches(r#"content:"abc"; offset:2;"#, b"xxabc"));
        assert!(!matches(r#"content:"abc"; offset:3;"#, b"xxabc"));
        assert!(matches(r#"content:"ABC"; nocase;"#, b"xxabc"));
        assert!(matches(r#"content:"xx"; startswith;"#, b"xxabc"));
        assert!(!matches(r#"content:"ab"; startswith;"#, b"xxabc"));
        assert!(matches(r#"content:"bc"; endswith;"#, b"xxabc"));
        assert!(!matches(r#"content:"ab"; endswith;"#, b"xxabc"));
        assert!(matches(
            r#"content:"data|0a 0a|"; startswith; endswith;"#,
            b"data\n\n"
        ));
        assert!(!matches(
            r#"content:"data|0a 0a|"; startswith; endswith;"#,
            b"data\n\nx"
        ));
    }

    #[test]
    fn a_stream_match_must_reach_the_new_bytes() {
        let reaching = |opts: &str, buf: &[u8], fresh: usize| {
            let r = parse_rule(
                &format!("alert tcp any any -> any any ({opts} sid:1;)"),
                &Vars::default(),
            )
            .unwrap();
            match_list_reaching(buf, r.list(Buffer::Payload).unwrap(), fresh)
        };
        // "MAIL FROM:" inspected with an earlier packet, new bytes after offset 12.
        let buf = b"MAIL FROM:x\r\nRCPT TO:y\r\n";
        assert!(!reaching(r#"content:"mail from|3a|"; nocase;"#, buf, 12));
        assert!(reaching(r#"content:"mail from|3a|"; nocase;"#, buf, 0));
        assert!(reaching(r#"content:"rcpt"; nocase;"#, buf, 12));
        // A pattern that straddles the seam reaches the new bytes.
        assert!(reaching(r#"content:"x|0d 0a|RCPT";"#, buf, 12));
        // A later occurrence of a content is found when the first is all old.
        assert!(reaching(r#"content:"ab";"#, b"ab--ab", 3));
        // Two contents, the first old and the second new, with and without distance.
        assert!(reaching(r#"content:"MAIL"; content:"RCPT";"#, buf, 12));
        assert!(reaching(
            r#"content:"MAIL"; content:"RCPT"; distance:0;"#,
            buf,
            12
        ));
        // Both old: the second's only occurrence is old and the first's later one too.
        assert!(!reaching(r#"content:"MAIL"; content:"FROM";"#, buf, 12));
        // A pcre's later match is tried when its first is all old.
        assert!(reaching(r#"pcre:"/[A-Z]{4}/";"#, buf, 12));
        assert!(!reaching(r#"pcre:"/FROM/";"#, buf, 12));
    }

    #[test]
    fn relative_windows_retry_later_occurrences() {
        // The first "a" is followed by "x", the second by "b": the rule must find the second.
        assert!(matches(
            r#"content:"a"; content:"b"; distance:0; within:1;"#,
            b"axab"
        ));
        assert!(!matches(
            r#"content:"a"; content:"b"; distance:0; within:1;"#,
            b"axaxb"
        ));
        assert!(matches(
            r#"content:"AllWork"; content:"Dull"; distance:1; within:7;"#,
            b"AllWork xDull"
        ));
        assert!(matches(
            r#"content:"b"; content:"a"; distance:-2; within:1;"#,
            b"ab"
        ));
        assert!(matches(
            r#"content:"a"; content:!"b"; distance:0; within:1;"#,
            b"ac"
        ));
        assert!(!matches(r#"content:"a"; content:!"b"; within:1;"#, b"ab"));
    }

    #[test]
    fn byte_test_byte_jump_and_dotprefix() {
        // Big-endian 16-bit 0x0102 = 258 at offset 1.
        let buf = b"\x00\x01\x02\x03abc";
        assert!(matches("byte_test:2,=,258,1;", buf));
        assert!(matches("byte_test:2,>,257,1;", buf));
        assert!(!matches("byte_test:2,!=,258,1;", buf));
        assert!(matches("byte_test:2,=,513,1,little;", buf));
        assert!(matches("byte_test:1,&,0x02,2;", buf));
        assert!(!matches("byte_test:2,=,1,7;", buf), "past the end");
        assert!(matches(
            r#"content:"12"; byte_test:2,=,34,0,relative,string,dec;"#,
            b"1234"
        ));
        // Length byte 3 at offset 0, jump over it, then "abc".
        assert!(matches(
            r#"byte_jump:1,0; content:"abc"; within:3;"#,
            b"\x03xyzabc"
        ));
        assert!(!matches(
            r#"byte_jump:1,0; content:"abc"; within:3;"#,
            b"\x02xyzabc"
        ));
        assert!(matches(
            "byte_jump:1,0,from_beginning,post_offset 1; isdataat:!1,relative;",
            b"\x02xy"
        ));
        let r = parse_rule(
            r#"alert dns any any -> any any (dns.query; dotprefix; content:".example.com"; endswith; sid:1;)"#,
            &Vars::default(),
        )
        .unwrap();
        let l = r.list(Buffer::DnsQuery).unwrap();
        assert!(match_list(b"example.com", l));
        assert!(match_list(b"www.example.com", l));
        assert!(!match_list(b"badexample.com", l));
    }

    #[test]
    fn isdataat_and_pcre() {
        assert!(matches("isdataat:3;", b"abcd"));
        assert!(!matches("isdataat:4;", b"abcd"));
        assert!(matches(
            r#"content:"a"; depth:1; isdataat:2,relative;"#,
            b"abcd"
        ));
        assert!(matches(
            r#"content:"a"; depth:1; isdataat:3,relative;"#,
            b"abcd"
        ));
        assert!(!matches(
            r#"content:"a"; depth:1; isdataat:4,relative;"#,
            b"abcd"
        ));
        assert!(matches(
            r#"content:"a"; depth:1; isdataat:!4,relative;"#,
            b"abcd"
        ));
        assert!(matches(r#"content:"ab"; pcre:"/^c\d/R";"#, b"abc1"));
        assert!(!matches(r#"content:"ab"; pcre:"/^\d/R";"#, b"abc1"));
        assert!(matches(r#"pcre:!"/zz/";"#, b"abc"));
    }
}
