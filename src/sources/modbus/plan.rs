//! Request coalescing: turn a device's points into the fewest Modbus reads, within the
//! per-read limits (125 registers / 2000 bits by default), a maximum gap of unused addresses,
//! and the profile's blocks that a read must never cross.
//!
//! Greedy left-to-right merging over points sorted by address is optimal here: every read
//! starts at the first point not yet covered and extends as far as the limits allow.

use std::fmt;

/// Modbus read function codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Function {
    Coils = 1,
    DiscreteInputs = 2,
    HoldingRegisters = 3,
    InputRegisters = 4,
}

impl Function {
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            1 => Function::Coils,
            2 => Function::DiscreteInputs,
            3 => Function::HoldingRegisters,
            4 => Function::InputRegisters,
            _ => return None,
        })
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    /// Coils and discrete inputs address bits; the others address 16-bit registers.
    pub fn is_bit_access(self) -> bool {
        matches!(self, Function::Coils | Function::DiscreteInputs)
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FC{:02}", self.code())
    }
}

/// What the planner needs to know about one point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub function: Function,
    pub start: u16,
    /// Registers (or bits) covered; bit-of-register points cover their one register.
    pub len: u16,
}

impl Span {
    fn end(&self) -> u32 {
        u32::from(self.start) + u32::from(self.len)
    }
}

/// An address range a read may not leave (profile `[[blocks]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub function: Function,
    pub start: u16,
    pub count: u16,
}

impl Block {
    pub fn contains(&self, span: &Span) -> bool {
        span.function == self.function
            && span.start >= self.start
            && span.end() <= u32::from(self.start) + u32::from(self.count)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    pub max_registers: u16,
    pub max_bits: u16,
    pub max_gap_registers: u16,
    pub max_gap_bits: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_registers: 125,
            max_bits: 2000,
            max_gap_registers: 10,
            max_gap_bits: 64,
        }
    }
}

/// One planned transaction and the points (indices into the input) it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub function: Function,
    pub start: u16,
    pub count: u16,
    pub points: Vec<usize>,
}

/// Plan the reads for `spans`. Spans must already be valid (inside the address space and,
/// when blocks exist for their function, inside one block: config validation checks that).
pub fn plan(spans: &[Span], blocks: &[Block], limits: &Limits) -> Vec<Read> {
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by_key(|&i| (spans[i].function, spans[i].start, spans[i].len));

    let block_of = |span: &Span| blocks.iter().position(|b| b.contains(span));

    let mut reads: Vec<Read> = Vec::new();
    let mut current: Option<(Read, Option<usize>)> = None;
    for i in order {
        let span = spans[i];
        let block = block_of(&span);
        let (max_count, max_gap) = if span.function.is_bit_access() {
            (u32::from(limits.max_bits), u32::from(limits.max_gap_bits))
        } else {
            (
                u32::from(limits.max_registers),
                u32::from(limits.max_gap_registers),
            )
        };
        if let Some((read, read_block)) = current.as_mut() {
            let read_end = u32::from(read.start) + u32::from(read.count);
            let gap = u32::from(span.start).saturating_sub(read_end);
            let new_end = read_end.max(span.end());
            if read.function == span.function
                && *read_block == block
                && gap <= max_gap
                && new_end - u32::from(read.start) <= max_count
            {
                read.count = (new_end - u32::from(read.start)) as u16;
                read.points.push(i);
                continue;
            }
        }
        if let Some((read, _)) = current.take() {
            reads.push(read);
        }
        current = Some((
            Read {
                function: span.function,
                start: span.start,
                count: span.len,
                points: vec![i],
            },
            block,
        ));
    }
    if let Some((read, _)) = current {
        reads.push(read);
    }
    reads
}

#[cfg(test)]
mod tests {
    use super::*;
    use Function::*;

    fn s(function: Function, start: u16, len: u16) -> Span {
        Span {
            function,
            start,
            len,
        }
    }

    /// (function, start, count) of each read.
    fn check(spans: &[Span], blocks: &[Block], limits: Limits, expected: &[(Function, u16, u16)]) {
        let reads = plan(spans, blocks, &limits);
        let got: Vec<_> = reads
            .iter()
            .map(|r| (r.function, r.start, r.count))
            .collect();
        assert_eq!(got, expected, "spans {spans:?}");
        // every point is served exactly once, by a read that covers it
        let mut served = vec![0; spans.len()];
        for r in &reads {
            for &p in &r.points {
                served[p] += 1;
                let sp = spans[p];
                assert_eq!(sp.function, r.function);
                assert!(sp.start >= r.start && sp.end() <= u32::from(r.start) + u32::from(r.count));
            }
        }
        assert!(served.iter().all(|&n| n == 1), "served {served:?}");
    }

    #[test]
    fn planner_cases() {
        let d = Limits::default();
        let tight = Limits {
            max_gap_registers: 0,
            max_gap_bits: 0,
            ..d
        };
        let small = Limits {
            max_registers: 10,
            max_bits: 16,
            ..d
        };
        // (spans, blocks, limits, expected reads)
        type Case = (Vec<Span>, Vec<Block>, Limits, Vec<(Function, u16, u16)>);
        let cases: Vec<Case> = vec![
            // nothing to read
            (vec![], vec![], d, vec![]),
            // adjacent registers merge
            (
                vec![s(HoldingRegisters, 0, 2), s(HoldingRegisters, 2, 2)],
                vec![],
                d,
                vec![(HoldingRegisters, 0, 4)],
            ),
            // input order does not matter
            (
                vec![s(HoldingRegisters, 2, 2), s(HoldingRegisters, 0, 2)],
                vec![],
                d,
                vec![(HoldingRegisters, 0, 4)],
            ),
            // a gap within max_gap is read through
            (
                vec![s(HoldingRegisters, 0, 1), s(HoldingRegisters, 11, 1)],
                vec![],
                d,
                vec![(HoldingRegisters, 0, 12)],
            ),
            // a gap beyond max_gap splits
            (
                vec![s(HoldingRegisters, 0, 1), s(HoldingRegisters, 12, 1)],
                vec![],
                d,
                vec![(HoldingRegisters, 0, 1), (HoldingRegisters, 12, 1)],
            ),
            // gap 0 allowed: adjacent still merge, a one-register hole splits
            (
                vec![
                    s(HoldingRegisters, 0, 1),
                    s(HoldingRegisters, 1, 1),
                    s(HoldingRegisters, 3, 1),
                ],
                vec![],
                tight,
                vec![(HoldingRegisters, 0, 2), (HoldingRegisters, 3, 1)],
            ),
            // function codes never merge
            (
                vec![s(HoldingRegisters, 0, 1), s(InputRegisters, 1, 1)],
                vec![],
                d,
                vec![(HoldingRegisters, 0, 1), (InputRegisters, 1, 1)],
            ),
            // bits of one register share the read
            (
                vec![
                    s(HoldingRegisters, 5, 1),
                    s(HoldingRegisters, 5, 1),
                    s(HoldingRegisters, 5, 1),
                ],
                vec![],
                d,
                vec![(HoldingRegisters, 5, 1)],
            ),
            // the 125-register limit splits a long map
            (
                (0..130).map(|a| s(InputRegisters, a, 1)).collect(),
                vec![],
                d,
                vec![(InputRegisters, 0, 125), (InputRegisters, 125, 5)],
            ),
            // a 2-register value is never split across reads
            (
                vec![s(HoldingRegisters, 0, 9), s(HoldingRegisters, 9, 2)],
                vec![],
                small,
                vec![(HoldingRegisters, 0, 9), (HoldingRegisters, 9, 2)],
            ),
            // coils: 2000-bit limit and bit gap
            (
                (0..2001).map(|a| s(Coils, a, 1)).collect(),
                vec![],
                d,
                vec![(Coils, 0, 2000), (Coils, 2000, 1)],
            ),
            (
                vec![
                    s(DiscreteInputs, 0, 1),
                    s(DiscreteInputs, 64, 1),
                    s(DiscreteInputs, 200, 1),
                ],
                vec![],
                d,
                vec![(DiscreteInputs, 0, 65), (DiscreteInputs, 200, 1)],
            ),
            (
                vec![s(Coils, 0, 1), s(Coils, 17, 1)],
                vec![],
                small,
                vec![(Coils, 0, 1), (Coils, 17, 1)],
            ),
            // blocks: two points 1 apart but in different blocks stay apart
            (
                vec![
                    s(HoldingRegisters, 0x1FFF, 1),
                    s(HoldingRegisters, 0x2000, 2),
                ],
                vec![
                    Block {
                        function: HoldingRegisters,
                        start: 0x1F00,
                        count: 0x100,
                    },
                    Block {
                        function: HoldingRegisters,
                        start: 0x2000,
                        count: 0x50,
                    },
                ],
                d,
                vec![(HoldingRegisters, 0x1FFF, 1), (HoldingRegisters, 0x2000, 2)],
            ),
            // blocks of one function do not constrain another function
            (
                vec![
                    s(HoldingRegisters, 0, 1),
                    s(HoldingRegisters, 1, 1),
                    s(InputRegisters, 0, 1),
                    s(InputRegisters, 1, 1),
                ],
                vec![
                    Block {
                        function: HoldingRegisters,
                        start: 0,
                        count: 1,
                    },
                    Block {
                        function: HoldingRegisters,
                        start: 1,
                        count: 1,
                    },
                ],
                d,
                vec![
                    (HoldingRegisters, 0, 1),
                    (HoldingRegisters, 1, 1),
                    (InputRegisters, 0, 2),
                ],
            ),
            // the top of the address space
            (
                vec![s(HoldingRegisters, 65534, 2)],
                vec![],
                d,
                vec![(HoldingRegisters, 65534, 2)],
            ),
        ];
        for (spans, blocks, limits, expected) in cases {
            check(&spans, &blocks, limits, &expected);
        }
    }

    #[test]
    fn dtsu666_map_is_one_read() {
        // Uab..Ubc..Ua..Ia..P..PF..Hz of a DTSU666: 0x2000..0x2045 in float32 pairs
        let addrs = [
            0x2000, 0x2002, 0x2004, 0x2006, 0x2008, 0x200A, 0x200C, 0x200E, 0x2010, 0x2012, 0x202A,
            0x2044,
        ];
        let spans: Vec<_> = addrs.iter().map(|&a| s(HoldingRegisters, a, 2)).collect();
        let l = Limits {
            max_gap_registers: 30,
            ..Limits::default()
        };
        check(&spans, &[], l, &[(HoldingRegisters, 0x2000, 0x46)]);
    }
}
