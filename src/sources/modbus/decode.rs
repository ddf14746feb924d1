//! Turning one read's reply into point values, defensively: a reply of the wrong size is an
//! error, never an out-of-bounds index; a NaN or infinite value is rejected per point.

use std::fmt;

use crate::config::{ModbusAddr, Profile};
use crate::model::Value;

use super::codec;
use super::plan::Read;

/// The payload of a successful read.
#[derive(Debug, Clone)]
pub enum ReadData {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    WrongLength { expected: u16, got: usize },
    WrongKind,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::WrongLength { expected, got } => {
                write!(f, "expected {expected} values, got {got}")
            }
            DecodeError::WrongKind => {
                write!(f, "registers where bits were expected or the reverse")
            }
        }
    }
}

/// The payload of a reply as tokio-modbus hands it over. `Client::call` has already refused
/// a reply whose function differs from the request's; anything else is an empty payload,
/// which [`decode_read`] refuses as the wrong length.
pub fn read_data(response: tokio_modbus::Response) -> ReadData {
    use tokio_modbus::Response;
    match response {
        Response::ReadCoils(bits) | Response::ReadDiscreteInputs(bits) => ReadData::Bits(bits),
        Response::ReadHoldingRegisters(words) | Response::ReadInputRegisters(words) => {
            ReadData::Words(words)
        }
        _ => ReadData::Words(Vec::new()),
    }
}

/// Decode the points a read serves. Yields `(profile point index, value)`; the value is
/// `None` when it decoded to NaN or infinity.
pub fn decode_read(
    profile: &Profile,
    read: &Read,
    data: &ReadData,
) -> Result<Vec<(usize, Option<Value>)>, DecodeError> {
    let mut out = Vec::with_capacity(read.points.len());
    match data {
        ReadData::Words(words) => {
            if read.function.is_bit_access() {
                return Err(DecodeError::WrongKind);
            }
            if words.len() != usize::from(read.count) {
                return Err(DecodeError::WrongLength {
                    expected: read.count,
                    got: words.len(),
                });
            }
            for &pi in &read.points {
                let pp = &profile.points[pi];
                let Some(p) = pp.part::<ModbusAddr>() else {
                    continue;
                };
                let off = usize::from(p.address - read.start);
                if let Some(bit) = p.bit {
                    out.push((pi, Some(Value::Bool(words[off] >> bit & 1 == 1))));
                    continue;
                }
                let n = usize::from(p.data_type.words());
                let value = codec::decode_raw(&words[off..off + n], p.data_type, p.byte_order)
                    .map(|raw| codec::scale(raw, pp.scale, pp.offset))
                    .filter(|v| v.is_finite())
                    .map(Value::Num);
                out.push((pi, value));
            }
        }
        ReadData::Bits(bits) => {
            if !read.function.is_bit_access() {
                return Err(DecodeError::WrongKind);
            }
            // Bits come packed in bytes: a reply may carry padding up to the next multiple of 8.
            if bits.len() < usize::from(read.count)
                || bits.len() > usize::from(read.count).div_ceil(8) * 8
            {
                return Err(DecodeError::WrongLength {
                    expected: read.count,
                    got: bits.len(),
                });
            }
            for &pi in &read.points {
                let Some(p) = profile.points[pi].part::<ModbusAddr>() else {
                    continue;
                };
                let off = usize::from(p.address - read.start);
                out.push((pi, Some(Value::Bool(bits[off]))));
            }
        }
    }
    Ok(out)
}
