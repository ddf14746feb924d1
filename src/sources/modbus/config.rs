//! The Modbus side of the configuration: how a connection reaches its devices
//! ([`Transport`]: TCP, RTU over TCP, a serial line) and where a profile point's value is
//! ([`ModbusAddr`]), with the checks of a Modbus profile's points. The site compiler
//! (`config`) calls [`point_source`] for every point of a Modbus profile.

use std::path::Path;

use super::codec::{ByteOrder, DataType};
use super::plan::{Block, Function, Span};
use crate::config::raw::{BlockCfg, PointCfg};
use crate::config::{PointSource, Problems, ProfilePoint};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Tcp { address: String },
    RtuOverTcp { address: String },
    Rtu(SerialSettings),
}

impl Transport {
    pub fn kind(&self) -> &'static str {
        match self {
            Transport::Tcp { .. } => "tcp",
            Transport::RtuOverTcp { .. } => "rtu_over_tcp",
            Transport::Rtu(_) => "rtu",
        }
    }

    /// RTU framing (serial line or serial server): needs the inter-frame silence.
    pub fn is_rtu(&self) -> bool {
        !matches!(self, Transport::Tcp { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    None,
    Even,
    Odd,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialSettings {
    pub port: String,
    pub baud_rate: u32,
    pub parity: Parity,
    pub data_bits: u8,
    pub stop_bits: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModbusAddr {
    pub function: Function,
    pub address: u16,
    pub data_type: DataType,
    pub byte_order: ByteOrder,
    pub bit: Option<u8>,
}

impl ModbusAddr {
    pub fn span(&self) -> Span {
        Span {
            function: self.function,
            start: self.address,
            len: if self.function.is_bit_access() {
                1
            } else {
                self.data_type.words()
            },
        }
    }
}

/// A point of a Modbus profile: function, address, type, byte order, bit; checked against
/// the points before it (overlaps) and the profile's blocks.
pub(crate) fn point_source(
    file: &Path,
    key: &str,
    pt: &PointCfg,
    default_order: ByteOrder,
    blocks: &[Block],
    earlier: &[ProfilePoint],
    problems: &mut Problems,
) -> Option<PointSource> {
    let before = problems.list.len();
    if pt.json_pointer.is_some() {
        problems.add(
            file,
            format!("{key}.json_pointer"),
            "json_pointer applies to MQTT profiles (protocol = \"mqtt\")",
        );
    }
    let function = match pt.function {
        Some(code) => {
            let f = Function::from_code(code);
            if f.is_none() {
                problems.add(
                    file,
                    format!("{key}.function"),
                    format!("function code {code} is not 1, 2, 3 or 4"),
                );
            }
            f
        }
        None => {
            problems.add(
                file,
                format!("{key}.function"),
                "a Modbus point needs function (1, 2, 3 or 4)",
            );
            None
        }
    };
    let Some(address) = pt.address else {
        problems.add(
            file,
            format!("{key}.address"),
            "a Modbus point needs address",
        );
        return None;
    };
    let data_type = DataType::parse(&pt.data_type);
    if data_type.is_none() {
        problems.add(
            file,
            format!("{key}.type"),
            format!(
                "unknown type {:?}; use bool, u16, i16, u32, i32, u64, i64, f32 or f64",
                pt.data_type
            ),
        );
    }
    let byte_order = match &pt.byte_order {
        None => default_order,
        Some(s) => ByteOrder::parse(s).unwrap_or_else(|| {
            problems.add(
                file,
                format!("{key}.byte_order"),
                format!("unknown byte order {s:?}; use ABCD, CDAB, BADC or DCBA"),
            );
            default_order
        }),
    };
    let (Some(function), Some(data_type)) = (function, data_type) else {
        return None;
    };
    let mut bit = None;
    if function.is_bit_access() {
        if data_type != DataType::Bool {
            problems.add(
                file,
                format!("{key}.type"),
                format!("{function} reads bits: type must be bool, not {data_type}"),
            );
        }
        if pt.bit.is_some() {
            problems.add(
                file,
                format!("{key}.bit"),
                format!("bit applies to registers (FC03/FC04), not {function}"),
            );
        }
    } else if data_type == DataType::Bool {
        match pt.bit {
            Some(b @ 0..=15) => bit = Some(b as u8),
            Some(b) => problems.add(file, format!("{key}.bit"), format!("bit {b} is not 0..=15")),
            None => problems.add(
                file,
                format!("{key}.bit"),
                "a bool point read from a register needs `bit` (0..=15)",
            ),
        }
    } else if pt.bit.is_some() {
        problems.add(
            file,
            format!("{key}.bit"),
            "bit applies only to bool points",
        );
    }
    let len = if function.is_bit_access() {
        1
    } else {
        i64::from(data_type.words())
    };
    if address < 0 || address + len > 65536 {
        problems.add(
            file,
            format!("{key}.address"),
            format!("address {address} with {len} register(s) does not fit in 0..=65535"),
        );
    }
    if problems.list.len() > before {
        return None;
    }
    let addr = ModbusAddr {
        function,
        address: address as u16,
        data_type,
        byte_order,
        bit,
    };
    // overlaps with earlier points: only different bits of one register may share it
    let span = addr.span();
    for other in earlier {
        let Some(om) = other.modbus() else { continue };
        let o = om.span();
        let overlap = o.function == span.function
            && u32::from(o.start) < u32::from(span.start) + u32::from(span.len)
            && u32::from(span.start) < u32::from(o.start) + u32::from(o.len);
        if !overlap {
            continue;
        }
        let bits_of_one_register = addr.bit.is_some() && om.bit.is_some() && o.start == span.start;
        if bits_of_one_register && addr.bit == om.bit {
            problems.add(
                file,
                format!("{key}.bit"),
                format!("same register and bit as point {:?}", other.id),
            );
        } else if !bits_of_one_register {
            problems.add(
                file,
                format!("{key}.address"),
                format!(
                    "{} {} overlaps point {:?} at {}",
                    span.function, span.start, other.id, o.start
                ),
            );
        }
    }
    let blocks_for_fn: Vec<&Block> = blocks.iter().filter(|b| b.function == function).collect();
    if !blocks_for_fn.is_empty() && !blocks_for_fn.iter().any(|b| b.contains(&span)) {
        problems.add(
            file,
            format!("{key}.address"),
            format!(
                "{function} {} lies outside every declared block for {function}",
                span.start
            ),
        );
    }
    (problems.list.len() == before).then_some(PointSource::Modbus(addr))
}

/// A Modbus profile's declared blocks (`[[blocks]]`: the register ranges a device answers,
/// which reads must not cross): each checked, none overlapping another of its function.
pub(crate) fn blocks(file: &Path, cfgs: &[BlockCfg], problems: &mut Problems) -> Vec<Block> {
    let mut blocks = Vec::new();
    for (i, b) in cfgs.iter().enumerate() {
        let key = format!("blocks[{i}]");
        let Some(function) = Function::from_code(b.function) else {
            problems.add(
                file,
                format!("{key}.function"),
                format!("function code {} is not 1, 2, 3 or 4", b.function),
            );
            continue;
        };
        let max = if function.is_bit_access() { 2000 } else { 125 };
        if !(0..=65535).contains(&b.start)
            || b.count < 1
            || b.count > max
            || b.start + b.count > 65536
        {
            problems.add(
                file,
                key,
                format!(
                    "block start {} count {} must lie in 0..65536 with 1..={max} addresses",
                    b.start, b.count
                ),
            );
            continue;
        }
        let block = Block {
            function,
            start: b.start as u16,
            count: b.count as u16,
        };
        if let Some(j) = blocks.iter().position(|o: &Block| {
            o.function == block.function
                && u32::from(o.start) < u32::from(block.start) + u32::from(block.count)
                && u32::from(block.start) < u32::from(o.start) + u32::from(o.count)
        }) {
            problems.add(file, key, format!("overlaps blocks[{j}]"));
            continue;
        }
        blocks.push(block);
    }
    blocks
}
