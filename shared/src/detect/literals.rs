//! Which of many literals occur in a buffer, ignoring ASCII case: the engine's prefilter.
//!
//! An Aho-Corasick automaton follows one transition per byte through tables of a megabyte or
//! more for a thousand patterns, and that walk was most of the engine's time. The prefilter
//! only needs to know which fast patterns occur, so this uses the idea behind Hyperscan's
//! FDR instead: each literal is represented by one short window of itself (the rarest
//! looking, and among those the ones no other literal took), windows are hashed into a bit
//! table that stays in the L1 cache, and a buffer position is verified only where its
//! window's bit is set.
//!
//! - Literals of 4 bytes or more: a 4-byte window, hashed into a table of 2^16 to 2^18 bits
//!   (about 256 bits per literal, so that few positions without a literal need verifying).
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
    slot: u32,
    key: u32,
    literal: u32,
    offset: u16,
    /// The literal's first 8 bytes folded (zero past its end) and how many there are: most
    /// window matches are not literal matches, and these reject them without reading the
    /// literal.
    head: u64,
    head_len: u8,
    /// The latest start at which the literal counts (`u32::MAX`: anywhere).
    limit: u32,
}

/// `bytes` (at most 8) folded, as a little-endian word, zero past them.
fn head(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .take(8)
        .rev()
        .fold(0u64, |h, &b| (h << 8) | u64::from(fold(b)))
}

/// The mask of a head's first `len` (at most 8) bytes.
fn head_mask(len: u8) -> u64 {
    u64::MAX
        .checked_shr(8 * (8 - u32::from(len.min(8))))
        .unwrap_or(0)
}

/// The largest bit table: 2^18 bits, 32 KiB, within the L1 data cache of current cores.
const MAX_TABLE_BITS: u32 = 18;
const WORDS: usize = 1 << (MAX_TABLE_BITS - 6);
/// Directory cells per table (each covers 2^(table bits - 12) slots).
const CELL_BITS: u32 = 12;

/// A window table: a bit per (hashed) window value, and the entries sorted by slot with a
/// directory from each cell of slots to its entries.
#[derive(Clone, Debug)]
struct Table {
    /// A bit per slot: 2^`table_bits` of them used, in an array of the largest size (so
    /// that indexing needs no bounds check; the pages past the used part are never touched).
    bits: Box<[u64; WORDS]>,
    table_bits: u32,
    entries: Vec<Entry>,
    /// `cells[c]..cells[c + 1]`: the entries of slots `c << cell_shift` and up.
    cells: Vec<u32>,
    cell_shift: u32,
}

impl Table {
    fn new(table_bits: u32) -> Table {
        let bits: Box<[u64]> = vec![0u64; WORDS].into_boxed_slice();
        Table {
            // A Vec of WORDS words always converts; the fallback is never taken.
            bits: bits.try_into().unwrap_or_else(|_| Box::new([0; WORDS])),
            table_bits,
            entries: vec![],
            cells: vec![],
            cell_shift: table_bits.saturating_sub(CELL_BITS),
        }
    }

    /// Literal `literal`'s window, of folded value `key`, `offset` bytes into it, in `slot`.
    fn set(&mut self, slot: usize, key: u32, literal: (u32, &[u8], u32), offset: usize) {
        self.bits[(slot >> 6) & (WORDS - 1)] |= 1 << (slot & 63);
        self.entries.push(Entry {
            slot: slot as u32,
            key,
            literal: literal.0,
            offset: offset as u16,
            head: head(literal.1),
            head_len: literal.1.len().min(8) as u8,
            limit: literal.2,
        });
    }

    /// Sort the entries and build the directory; after the last `set`.
    fn finish(&mut self) {
        self.entries.sort_unstable();
        self.entries.dedup();
        let cells = (1usize << self.table_bits) >> self.cell_shift;
        self.cells = Vec::with_capacity(cells + 1);
        let mut at = 0usize;
        for c in 0..=cells {
            while at < self.entries.len()
                && ((self.entries[at].slot >> self.cell_shift) as usize) < c
            {
                at += 1;
            }
            self.cells.push(at as u32);
        }
    }

    fn is_set(&self, slot: usize) -> bool {
        self.bits[(slot >> 6) & (WORDS - 1)] & (1 << (slot & 63)) != 0
    }

    /// The entries of a slot's cell (those of the window itself among them).
    fn cell(&self, slot: usize) -> &[Entry] {
        let c = slot >> self.cell_shift;
        match (self.cells.get(c), self.cells.get(c + 1)) {
            (Some(&a), Some(&b)) => self.entries.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }
}

const FOLD4: u32 = 0x2020_2020;
const FOLD8: u64 = 0x2020_2020_2020_2020;
const FOLD2: u32 = 0x2020;

fn fold(b: u8) -> u8 {
    b | 0x20
}

/// The slot of a folded 4-byte window in a table of 2^(32 - `shift`) bits.
fn slot4(key: u32, shift: u32) -> usize {
    (key.wrapping_mul(0x9E37_79B1) >> shift) as usize
}

/// How common a folded byte looks in traffic, roughly the negative log of its frequency
/// (lower is rarer). Text protocols, markup and JSON concentrate on spaces, lower-case
/// letters in English order, digits and a few punctuation marks; binary protocols on NUL
/// (folded with space) and 0xff. Control bytes fold onto punctuation and digits and share
/// their scores; the high bytes, spread evenly by compression and encryption, are rare.
fn commonness(b: u8) -> u32 {
    match fold(b) {
        b' ' => 10,
        b'e' => 9,
        b't' | b'a' | b'o' | b'i' | b'n' | b's' | b'r' => 8,
        0xff | b'l' | b'd' | b'c' | b'0' | b'1' | b'/' | b'.' | b'-' => 7,
        b'h' | b'u' | b'm' | b'p' | b'2' | b'=' | b':' | b'"' | b'*' => 6,
        b'f' | b'g' | b'w' | b'y' | b'b' | b'3'..=b'9' | b'&' | b',' | b'%' => 5,
        b'v' | b'k' | b'_' | b'?' | b';' | b'<' | b'>' | b'+' | b'\'' | b'!' => 4,
        b'x' | b'(' | b')' | b'#' | b'$' | b'[' | b']' | b'{' | b'}' | b'@' | b'\\' => 3,
        b'j' | b'q' | b'z' | b'|' | b'~' | b'^' => 2,
        _ => 1,
    }
}

/// The start of the rarest-looking `width`-byte window of `literal`; `taken` says how many
/// literals of the set already stand for a window value (sharing one costs a verification
/// of each wherever it occurs).
fn rarest_window(literal: &[u8], width: usize, taken: impl Fn(&[u8]) -> u32) -> usize {
    (0..=literal.len() - width)
        .min_by_key(|&k| {
            let w = &literal[k..k + width];
            // A window of one repeated byte matches all along a run of it.
            let repeated = if w.iter().all(|&b| fold(b) == fold(w[0])) {
                16
            } else {
                0
            };
            w.iter().map(|&b| commonness(b)).sum::<u32>() + repeated + 4 * taken(w)
        })
        .unwrap_or(0)
}

/// A set of literals, matched ignoring ASCII case.
#[derive(Clone, Debug)]
pub struct LiteralSet {
    /// The literals, lower-cased, and the latest start at which each counts.
    literals: Vec<Box<[u8]>>,
    limits: Vec<u32>,
    long: Table,
    /// `slot4`'s shift for the long table.
    long_shift: u32,
    short: Table,
    one: Table,
    has_short: bool,
    has_one: bool,
    /// The largest distance from a literal's start to its window.
    max_offset: usize,
}

impl LiteralSet {
    /// Empty literals are ignored (they match everywhere; the caller handles them).
    pub fn new<P: AsRef<[u8]>>(literals: &[P]) -> LiteralSet {
        let limited: Vec<(&[u8], u32)> = literals.iter().map(|l| (l.as_ref(), u32::MAX)).collect();
        LiteralSet::limited(&limited)
    }

    /// A set whose literals count only where they start at or before their limit (`u32::MAX`:
    /// anywhere), as a pattern anchored by `depth` or `startswith` does.
    pub fn limited<P: AsRef<[u8]>>(literals: &[(P, u32)]) -> LiteralSet {
        let limits: Vec<u32> = literals.iter().map(|(_, n)| *n).collect();
        let literals: Vec<Box<[u8]>> = literals
            .iter()
            .map(|(l, _)| l.as_ref().to_ascii_lowercase().into_boxed_slice())
            .collect();
        // The long table grows with its literals, to keep about one bit in 256 set (fewer
        // positions to verify where no literal is), up to the largest size.
        let long = literals.iter().filter(|l| l.len() >= 4).count();
        let bits = (long.max(1) * 256)
            .next_power_of_two()
            .trailing_zeros()
            .clamp(16, MAX_TABLE_BITS);
        let mut set = LiteralSet {
            literals,
            limits,
            long: Table::new(bits),
            long_shift: 32 - bits,
            short: Table::new(16),
            one: Table::new(8),
            has_short: false,
            has_one: false,
            max_offset: 0,
        };
        // Shortest first: they have the fewest windows to choose from, and the longer ones
        // then avoid the window values already taken.
        let mut order: Vec<usize> = (0..set.literals.len()).collect();
        order.sort_by_key(|&i| set.literals[i].len());
        let mut taken: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
        let key2 = |w: &[u8]| u32::from(u16::from_le_bytes([w[0], w[1]])) | FOLD2;
        let key4 = |w: &[u8]| u32::from_le_bytes([w[0], w[1], w[2], w[3]]) | FOLD4;
        for i in order {
            let l = &set.literals[i];
            let literal = (i as u32, &l[..], set.limits[i]);
            match l.len() {
                0 => {}
                1 => {
                    let key = u32::from(fold(l[0]));
                    set.one.set(key as usize, key, literal, 0);
                    set.has_one = true;
                }
                2 | 3 => {
                    let k = rarest_window(l, 2, |w| taken.get(&key2(w)).copied().unwrap_or(0));
                    let key = key2(&l[k..]);
                    *taken.entry(key).or_default() += 1;
                    set.short.set(key as usize, key, literal, k);
                    set.has_short = true;
                }
                _ => {
                    let k = rarest_window(l, 4, |w| taken.get(&key4(w)).copied().unwrap_or(0))
                        .min(usize::from(u16::MAX));
                    let key = key4(&l[k..]);
                    *taken.entry(key).or_default() += 1;
                    set.long.set(slot4(key, set.long_shift), key, literal, k);
                }
            }
        }
        for t in [&mut set.long, &mut set.short, &mut set.one] {
            t.finish();
            let far = t.entries.iter().map(|e| usize::from(e.offset)).max();
            set.max_offset = set.max_offset.max(far.unwrap_or(0));
        }
        set
    }

    /// One set of the literals of this set followed by those of `other` (literal `i` of
    /// `other` is literal `n + i` of the result, where this set holds `n`).
    pub fn union(&self, other: &LiteralSet) -> LiteralSet {
        let all: Vec<(&[u8], u32)> = self
            .literals
            .iter()
            .zip(&self.limits)
            .chain(other.literals.iter().zip(&other.limits))
            .map(|(l, n)| (&l[..], *n))
            .collect();
        LiteralSet::limited(&all)
    }

    /// Heap bytes held.
    pub fn memory_usage(&self) -> usize {
        let tables = [&self.long, &self.short, &self.one];
        let entries: usize = tables.iter().map(|t| t.entries.len()).sum();
        let cells: usize = tables.iter().map(|t| t.cells.len()).sum();
        tables.iter().map(|t| t.bits.len()).sum::<usize>() * 8
            + cells * 4
            + entries * std::mem::size_of::<Entry>()
            + self.literals.iter().map(|l| l.len() + 20).sum::<usize>()
    }

    /// Every whole 4-byte window of `data` against the tables (`SHORT` and `ONE`: whether
    /// the 2-byte and 1-byte tables hold anything), `verify` where a bit is set.
    #[inline(always)]
    fn windows<const SHORT: bool, const ONE: bool>(
        &self,
        data: &[u8],
        verify: &mut impl FnMut(&Table, usize, u32, usize),
    ) {
        for (i, w) in data.windows(4).enumerate() {
            let key = u32::from_le_bytes([w[0], w[1], w[2], w[3]]) | FOLD4;
            let slot = slot4(key, self.long_shift);
            if self.long.is_set(slot) {
                verify(&self.long, slot, key, i);
            }
            if SHORT {
                let key2 = key & 0xffff;
                if self.short.is_set(key2 as usize) {
                    verify(&self.short, key2 as usize, key2, i);
                }
            }
            if ONE {
                let key1 = key & 0xff;
                if self.one.is_set(key1 as usize) {
                    verify(&self.one, key1 as usize, key1, i);
                }
            }
        }
    }

    /// Call `found` with the index of each literal that occurs in `data`, at least once, and
    /// whether that occurrence starts at `split` or later; a literal that occurs on both
    /// sides of `split` is reported for each side (in no particular order; a literal that
    /// occurs often may be reported more than once). `split` past the end: one side.
    pub fn for_each_match(&self, data: &[u8], split: usize, mut found: impl FnMut(usize, bool)) {
        // Literals found in this buffer (the first few, tagged with their side of `split`),
        // and window values all of whose literals were: in a run of one byte, or a repeated
        // header, the same window comes back at every position and needs no verification
        // after the first.
        let mut seen = [u32::MAX; 16];
        let mut seen_len = 0usize;
        let mut exhausted = [u64::MAX; 8];
        let max_offset = self.max_offset;
        let mut verify = |table: &Table, slot: usize, key: u32, at: usize| {
            // Every literal of this window starts between `at - max_offset` and `at`: when
            // those are on one side of `split`, so are all of its literals.
            let side = if at < split {
                Some(0u64)
            } else if at - split >= max_offset {
                Some(1u64)
            } else {
                None
            };
            let cache = (key as usize ^ (key as usize >> 16)) & 7;
            if side.is_some_and(|s| exhausted[cache] == u64::from(key) | s << 32) {
                return;
            }
            let mut all_seen = true;
            for e in table.cell(slot) {
                if e.key != key {
                    continue;
                }
                let Some(start) = at
                    .checked_sub(usize::from(e.offset))
                    .filter(|s| *s <= e.limit as usize)
                else {
                    all_seen = false;
                    continue;
                };
                let later = start >= split;
                let tag = e.literal | u32::from(later) << 31;
                if seen[..seen_len].contains(&tag) {
                    continue;
                }
                // The first 8 bytes folded first (where 8 remain), then the literal itself.
                let near = data.get(start..start + 8).is_none_or(|w| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(w);
                    (u64::from_le_bytes(b) | FOLD8) & head_mask(e.head_len) == e.head
                });
                let l = &self.literals[e.literal as usize];
                let hit = near
                    && data
                        .get(start..start + l.len())
                        .is_some_and(|d| d.eq_ignore_ascii_case(l));
                if hit {
                    found(e.literal as usize, later);
                    if seen_len < seen.len() {
                        seen[seen_len] = tag;
                        seen_len += 1;
                    } else {
                        all_seen = false;
                    }
                } else {
                    all_seen = false;
                }
            }
            if all_seen && let Some(s) = side {
                exhausted[cache] = u64::from(key) | s << 32;
            }
        };
        let n = data.len();
        // Whole 4-byte windows first: the hot loop, compiled for each combination of tables
        // in use so that it tests no flag per position.
        if n >= 4 {
            match (self.has_short, self.has_one) {
                (false, false) => self.windows::<false, false>(data, &mut verify),
                (true, false) => self.windows::<true, false>(data, &mut verify),
                (false, true) => self.windows::<false, true>(data, &mut verify),
                (true, true) => self.windows::<true, true>(data, &mut verify),
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
        set.for_each_match(data, usize::MAX, |l, later| {
            assert!(!later);
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
            // Every tenth set is large, so that its long table is of the largest size.
            let count = if round % 10 == 0 {
                1000 + next() % 2000
            } else {
                1 + next() % 40
            };
            let literals: Vec<Vec<u8>> = (0..count)
                .map(|_| {
                    // Mostly short, some longer than a window with room to choose.
                    let len = if next() % 8 == 0 {
                        next() % 40
                    } else {
                        next() % 9
                    };
                    (0..len)
                        .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                        .collect()
                })
                .collect();
            // Random bytes with some of the literals put in, in either case.
            let mut data: Vec<u8> = vec![];
            let target = (next() % 300) as usize;
            while data.len() < target {
                if next() % 4 == 0 {
                    let l = &literals[(next() % count) as usize];
                    data.extend(l.iter().map(|b| {
                        if next() % 2 == 0 {
                            b.to_ascii_uppercase()
                        } else {
                            *b
                        }
                    }));
                } else {
                    data.push(alphabet[(next() % alphabet.len() as u64) as usize]);
                }
            }
            let refs: Vec<&[u8]> = literals.iter().map(Vec::as_slice).collect();
            // A third of the literals count only up to some start, as anchored patterns do.
            let limits: Vec<u32> = refs
                .iter()
                .map(|_| {
                    if next() % 3 == 0 {
                        (next() % 64) as u32
                    } else {
                        u32::MAX
                    }
                })
                .collect();
            let limited: Vec<(&[u8], u32)> = refs.iter().copied().zip(limits.clone()).collect();
            let set = LiteralSet::limited(&limited);
            // Each literal found on each side of a split point that occurs on it.
            let split = (next() % (data.len() as u64 + 2)) as usize;
            let mut got = BTreeSet::new();
            set.for_each_match(&data, split, |l, later| {
                got.insert((l, later));
            });
            let expect: BTreeSet<(usize, bool)> = naive(&refs, &data)
                .into_iter()
                .filter(|&(l, start)| start as u64 <= u64::from(limits[l]))
                .map(|(l, start)| (l, start >= split))
                .collect();
            assert_eq!(
                got, expect,
                "round {round} split {split}: {literals:?} in {data:?}"
            );
        }
    }
}
