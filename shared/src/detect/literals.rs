//! Which of many literals occur in a buffer, ignoring ASCII case: the engine's prefilter.
//!
//! An Aho-Corasick automaton follows one transition per byte through tables of a megabyte or
//! more for a thousand patterns, and that walk was most of the engine's time. The prefilter
//! only needs to know which fast patterns occur, so this uses the idea behind Hyperscan's
//! FDR instead: each literal is represented by one short window of itself (the rarest
//! looking), windows are hashed into a bit table that stays in the L1 cache, and a buffer
//! position is verified only where its window's bit is set.
//!
//! - Literals of 4 bytes or more: a 4-byte window, 2^16-bit hashed table.
//! - 2 and 3 bytes: a 2-byte window, 2^16-bit table indexed directly.
//! - 1 byte: a 256-bit table.
//!
//! Case is folded by setting bit 5 of every byte (`| 0x20`). That maps upper-case letters to
//! lower case and also merges some other pairs (`@` and `` ` ``, NUL and space): merged pairs
//! only cost a verification, which compares bytes properly.

/// One literal's window: its slot in the bit table, its folded value, the literal, and where
/// the window starts in it. Sorted by slot first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    slot: u16,
    key: u32,
    literal: u32,
    offset: u16,
}

/// Slots per directory cell.
const CELL_SHIFT: usize = 4;

/// A window table: a bit per (hashed) window value, and the entries sorted by slot with a
/// directory from each cell of 16 slots to its entries.
#[derive(Clone, Debug)]
struct Table {
    /// 2^16 bits (fixed, so that indexing needs no bounds check).
    bits: Box<[u64; 1024]>,
    entries: Vec<Entry>,
    /// `cells[c]..cells[c + 1]`: the entries of slots `c << CELL_SHIFT` and up.
    cells: Vec<u32>,
}

impl Table {
    fn new() -> Table {
        Table {
            bits: Box::new([0u64; 1024]),
            entries: vec![],
            cells: vec![],
        }
    }

    fn set(&mut self, slot: usize, e: Entry) {
        self.bits[(slot >> 6) & 1023] |= 1 << (slot & 63);
        self.entries.push(Entry {
            slot: slot as u16,
            ..e
        });
    }

    /// Sort the entries and build the directory; after the last `set`.
    fn finish(&mut self) {
        self.entries.sort_unstable();
        self.entries.dedup();
        let cells = (1usize << 16) >> CELL_SHIFT;
        self.cells = Vec::with_capacity(cells + 1);
        let mut at = 0usize;
        for c in 0..=cells {
            while at < self.entries.len() && usize::from(self.entries[at].slot) >> CELL_SHIFT < c {
                at += 1;
            }
            self.cells.push(at as u32);
        }
    }

    fn is_set(&self, slot: usize) -> bool {
        self.bits[(slot >> 6) & 1023] & (1 << (slot & 63)) != 0
    }

    /// The entries of a slot's cell (those of the window itself among them).
    fn cell(&self, slot: usize) -> &[Entry] {
        let c = slot >> CELL_SHIFT;
        match (self.cells.get(c), self.cells.get(c + 1)) {
            (Some(&a), Some(&b)) => self.entries.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }
}

const FOLD4: u32 = 0x2020_2020;
const FOLD2: u32 = 0x2020;

fn fold(b: u8) -> u8 {
    b | 0x20
}

/// The 16-bit slot of a folded 4-byte window.
fn slot4(key: u32) -> usize {
    (key.wrapping_mul(0x9E37_79B1) >> 16) as usize
}

/// How common a folded byte looks in traffic (lower is rarer). NUL and space (one folded
/// value), 0xff, letters, digits, and the punctuation of text protocols and JSON are
/// everywhere; most control and high bytes and the rarer punctuation are not.
fn commonness(b: u8) -> u32 {
    match fold(b) {
        // NUL and space; 0xff.
        0x20 | 0xff => 8,
        // Quote, colon, comma, slash, dot, `=`, `&`; `-` with CR, `*` with LF, `!` with 0x01.
        b'"' | b':' | b',' | b'/' | b'.' | b'=' | b'&' | b'-' | b'*' | b'!' => 5,
        b'e' | b't' | b'a' | b'o' | b'i' | b'n' | b's' | b'r' | b'h' | b'l' | b'0'..=b'9' => 4,
        b'a'..=b'z' => 3,
        _ => 1,
    }
}

/// The start of the rarest-looking `width`-byte window of `literal`.
fn rarest_window(literal: &[u8], width: usize) -> usize {
    (0..=literal.len() - width)
        .min_by_key(|&k| {
            let w = &literal[k..k + width];
            // A window of one repeated byte matches all along a run of it.
            let repeated = if w.iter().all(|&b| fold(b) == fold(w[0])) {
                16
            } else {
                0
            };
            w.iter().map(|&b| commonness(b)).sum::<u32>() + repeated
        })
        .unwrap_or(0)
}

/// A set of literals, matched ignoring ASCII case.
#[derive(Clone, Debug)]
pub struct LiteralSet {
    /// The literals, lower-cased.
    literals: Vec<Box<[u8]>>,
    long: Table,
    short: Table,
    one: Table,
    has_short: bool,
    has_one: bool,
}

impl LiteralSet {
    /// Empty literals are ignored (they match everywhere; the caller handles them).
    pub fn new<P: AsRef<[u8]>>(literals: &[P]) -> LiteralSet {
        let mut set = LiteralSet {
            literals: literals
                .iter()
                .map(|l| l.as_ref().to_ascii_lowercase().into_boxed_slice())
                .collect(),
            long: Table::new(),
            short: Table::new(),
            one: Table::new(),
            has_short: false,
            has_one: false,
        };
        for (i, l) in set.literals.iter().enumerate() {
            let literal = i as u32;
            match l.len() {
                0 => {}
                1 => {
                    let key = u32::from(fold(l[0]));
                    set.one.set(
                        key as usize,
                        Entry {
                            slot: 0,
                            key,
                            literal,
                            offset: 0,
                        },
                    );
                    set.has_one = true;
                }
                2 | 3 => {
                    let k = rarest_window(l, 2);
                    let key = u32::from(u16::from_le_bytes([l[k], l[k + 1]])) | FOLD2;
                    set.short.set(
                        key as usize,
                        Entry {
                            slot: 0,
                            key,
                            literal,
                            offset: k as u16,
                        },
                    );
                    set.has_short = true;
                }
                _ => {
                    let k = rarest_window(l, 4).min(usize::from(u16::MAX));
                    let key = u32::from_le_bytes([l[k], l[k + 1], l[k + 2], l[k + 3]]) | FOLD4;
                    set.long.set(
                        slot4(key),
                        Entry {
                            slot: 0,
                            key,
                            literal,
                            offset: k as u16,
                        },
                    );
                }
            }
        }
        for t in [&mut set.long, &mut set.short, &mut set.one] {
            t.finish();
        }
        set
    }

    /// Heap bytes held.
    pub fn memory_usage(&self) -> usize {
        let tables = [&self.long, &self.short, &self.one];
        let entries: usize = tables.iter().map(|t| t.entries.len()).sum();
        let cells: usize = tables.iter().map(|t| t.cells.len()).sum();
        tables.iter().map(|t| t.bits.len()).sum::<usize>() * 8
            + cells * 4
            + entries * std::mem::size_of::<Entry>()
            + self.literals.iter().map(|l| l.len() + 16).sum::<usize>()
    }

    /// Call `found` with the index of each literal that occurs in `data`, at least once (in
    /// no particular order; a literal that occurs often may be reported more than once).
    pub fn for_each_match(&self, data: &[u8], mut found: impl FnMut(usize)) {
        // Literals found in this buffer (the first few), and window values all of whose
        // literals were: in a run of one byte, or a repeated header, the same window comes
        // back at every position and needs no verification after the first.
        let mut seen = [u32::MAX; 16];
        let mut seen_len = 0usize;
        let mut exhausted = [u32::MAX; 8];
        let mut verify = |table: &Table, slot: usize, key: u32, at: usize| {
            let cache = (key as usize ^ (key as usize >> 16)) & 7;
            if exhausted[cache] == key {
                return;
            }
            let mut all_seen = true;
            for e in table.cell(slot) {
                if e.key != key || seen[..seen_len].contains(&e.literal) {
                    continue;
                }
                let hit = at.checked_sub(usize::from(e.offset)).is_some_and(|start| {
                    let l = &self.literals[e.literal as usize];
                    data.get(start..start + l.len())
                        .is_some_and(|d| d.eq_ignore_ascii_case(l))
                });
                if hit {
                    found(e.literal as usize);
                    if seen_len < seen.len() {
                        seen[seen_len] = e.literal;
                        seen_len += 1;
                    } else {
                        all_seen = false;
                    }
                } else {
                    all_seen = false;
                }
            }
            if all_seen {
                exhausted[cache] = key;
            }
        };
        let n = data.len();
        // Whole 4-byte windows first: the hot loop.
        if n >= 4 {
            for (i, w) in data.windows(4).enumerate() {
                let key = u32::from_le_bytes([w[0], w[1], w[2], w[3]]) | FOLD4;
                let slot = slot4(key);
                if self.long.is_set(slot) {
                    verify(&self.long, slot, key, i);
                }
                if self.has_short {
                    let key2 = key & 0xffff;
                    if self.short.is_set(key2 as usize) {
                        verify(&self.short, key2 as usize, key2, i);
                    }
                }
                if self.has_one {
                    let key1 = key & 0xff;
                    if self.one.is_set(key1 as usize) {
                        verify(&self.one, key1 as usize, key1, i);
                    }
                }
            }
        }
        // The last positions, where fewer than 4 bytes remain (all of them when n < 4).
        for i in n.saturating_sub(3)..n {
            if self.has_short && i + 2 <= n {
                let key2 = u32::from(u16::from_le_bytes([data[i], data[i + 1]])) | FOLD2;
                if self.short.is_set(key2 as usize) {
                    verify(&self.short, key2 as usize, key2, i);
                }
            }
            if self.has_one {
                let key1 = u32::from(fold(data[i]));
                if self.one.is_set(key1 as usize) {
                    verify(&self.one, key1 as usize, key1, i);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every (literal, start) where it occurs, the slow way.
    fn naive(literals: &[&[u8]], data: &[u8]) -> BTreeSet<(usize, usize)> {
        let mut out = BTreeSet::new();
        for (li, l) in literals.iter().enumerate() {
            if l.is_empty() || l.len() > data.len() {
                continue;
            }
            for s in 0..=data.len() - l.len() {
                if data[s..s + l.len()].eq_ignore_ascii_case(l) {
                    out.insert((li, s));
                }
            }
        }
        out
    }

    fn found(set: &LiteralSet, data: &[u8]) -> BTreeSet<usize> {
        let mut out = BTreeSet::new();
        set.for_each_match(data, |l| {
            out.insert(l);
        });
        out
    }

    #[test]
    fn finds_every_literal_that_occurs_whatever_its_length_case_and_place() {
        let literals: Vec<&[u8]> = vec![
            b"User-Agent: ",
            b"|00 00|",
            b"\x00\x00\x00\x00",
            b"\x18\x03",
            b"\x05\x00\x00",
            b"x",
            b"EM=",
            b"",
            b"evil.example",
            b"@`",
        ];
        let set = LiteralSet::new(&literals);
        let data: &[u8] =
            b"GET / HTTP/1.1\r\nuser-agent: x\r\nHost: EVIL.Example\r\n\r\n\x18\x03\x05\x00\x00\x00\x00em=";
        let expect: BTreeSet<usize> = naive(&literals, data).into_iter().map(|(l, _)| l).collect();
        assert_eq!(found(&set, data), expect);
        assert!(expect.contains(&0) && expect.contains(&2) && expect.contains(&6));
        // At the very start, at the very end, and in buffers shorter than a window.
        assert_eq!(found(&set, b"X"), BTreeSet::from([5]));
        assert_eq!(found(&set, b"\x18\x03"), BTreeSet::from([3]));
        assert_eq!(found(&set, b"aem="), BTreeSet::from([6]));
        assert!(found(&set, b"").is_empty());
        // Folding merges `@` with `` ` ``: the verification does not.
        assert_eq!(found(&set, b"``"), BTreeSet::new());
        assert_eq!(found(&set, b"@`"), BTreeSet::from([9]));
    }

    #[test]
    fn agrees_with_a_naive_search_on_random_literals_and_data() {
        // A small deterministic generator: bytes from a narrow alphabet, so that literals
        // occur often and windows collide.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b"aAbB\x00 \xff\r\n@`1";
        for round in 0..200 {
            let literals: Vec<Vec<u8>> = (0..1 + next() % 40)
                .map(|_| {
                    (0..next() % 9)
                        .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                        .collect()
                })
                .collect();
            let data: Vec<u8> = (0..next() % 300)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let refs: Vec<&[u8]> = literals.iter().map(Vec::as_slice).collect();
            let set = LiteralSet::new(&refs);
            let mut got = BTreeSet::new();
            set.for_each_match(&data, |l| {
                got.insert(l);
            });
            let expect: BTreeSet<usize> = naive(&refs, &data).into_iter().map(|(l, _)| l).collect();
            assert_eq!(got, expect, "round {round}: {literals:?} in {data:?}");
        }
    }
}
