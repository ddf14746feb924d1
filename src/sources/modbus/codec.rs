//! Register codec: Modbus words <-> typed values for every data type and byte/word order,
//! plus scale/offset. Pure functions; the simulator encodes with the same code the poller
//! decodes with, and the unit tests check both against known register values.

use std::fmt;

/// A point's value type on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

impl DataType {
    pub const ALL: [DataType; 9] = [
        DataType::Bool,
        DataType::U16,
        DataType::I16,
        DataType::U32,
        DataType::I32,
        DataType::U64,
        DataType::I64,
        DataType::F32,
        DataType::F64,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "bool" => DataType::Bool,
            "u16" => DataType::U16,
            "i16" => DataType::I16,
            "u32" => DataType::U32,
            "i32" => DataType::I32,
            "u64" => DataType::U64,
            "i64" => DataType::I64,
            "f32" => DataType::F32,
            "f64" => DataType::F64,
            _ => return None,
        })
    }

    /// Number of 16-bit registers the value occupies (a bool bit occupies its register).
    pub fn words(self) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DataType::F32 | DataType::F64)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            DataType::Bool => "bool",
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::U64 => "u64",
            DataType::I64 => "i64",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
        };
        f.write_str(s)
    }
}

/// Byte and word order of a multi-register value, named after how the big-endian bytes
/// `A B C D` of a 32-bit value appear on the wire. 64-bit values extend the same rule:
/// `CDAB`/`DCBA` reverse the word order, `BADC`/`DCBA` swap the bytes inside each word.
/// For 16-bit values only the byte swap matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    Abcd,
    Cdab,
    Badc,
    Dcba,
}

impl ByteOrder {
    pub const ALL: [ByteOrder; 4] = [
        ByteOrder::Abcd,
        ByteOrder::Cdab,
        ByteOrder::Badc,
        ByteOrder::Dcba,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_uppercase().as_str() {
            "ABCD" => ByteOrder::Abcd,
            "CDAB" => ByteOrder::Cdab,
            "BADC" => ByteOrder::Badc,
            "DCBA" => ByteOrder::Dcba,
            _ => return None,
        })
    }

    fn swap_bytes(self) -> bool {
        matches!(self, ByteOrder::Badc | ByteOrder::Dcba)
    }

    fn reverse_words(self) -> bool {
        matches!(self, ByteOrder::Cdab | ByteOrder::Dcba)
    }
}

/// Put the wire words into big-endian byte order (`A B C D ...`).
fn to_be_bytes(words: &[u16], order: ByteOrder, out: &mut [u8]) {
    let n = words.len();
    for i in 0..n {
        let w = if order.reverse_words() && n > 1 {
            words[n - 1 - i]
        } else {
            words[i]
        };
        let w = if order.swap_bytes() {
            w.swap_bytes()
        } else {
            w
        };
        out[2 * i..2 * i + 2].copy_from_slice(&w.to_be_bytes());
    }
}

/// Inverse of [`to_be_bytes`].
fn from_be_bytes(bytes: &[u8], order: ByteOrder) -> Vec<u16> {
    let n = bytes.len() / 2;
    let mut words: Vec<u16> = (0..n)
        .map(|i| {
            let w = u16::from_be_bytes([bytes[2 * i], bytes[2 * i + 1]]);
            if order.swap_bytes() {
                w.swap_bytes()
            } else {
                w
            }
        })
        .collect();
    if order.reverse_words() {
        words.reverse();
    }
    words
}

/// Decode a raw (unscaled) number from exactly `data_type.words()` registers.
/// Returns `None` when the slice has the wrong length (a malformed reply) or for `Bool`.
pub fn decode_raw(words: &[u16], data_type: DataType, order: ByteOrder) -> Option<f64> {
    if words.len() != usize::from(data_type.words()) || data_type == DataType::Bool {
        return None;
    }
    let mut b = [0u8; 8];
    to_be_bytes(words, order, &mut b[..words.len() * 2]);
    Some(match data_type {
        DataType::U16 => f64::from(u16::from_be_bytes([b[0], b[1]])),
        DataType::I16 => f64::from(i16::from_be_bytes([b[0], b[1]])),
        DataType::U32 => f64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        DataType::I32 => f64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        DataType::F32 => f64::from(f32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        DataType::U64 => u64::from_be_bytes(b) as f64,
        DataType::I64 => i64::from_be_bytes(b) as f64,
        DataType::F64 => f64::from_be_bytes(b),
        DataType::Bool => unreachable!("handled above"),
    })
}

/// Encode a raw number into registers (rounded and saturated for integer types).
pub fn encode_raw(raw: f64, data_type: DataType, order: ByteOrder) -> Vec<u16> {
    let bytes: Vec<u8> = match data_type {
        DataType::Bool => return vec![u16::from(raw != 0.0)],
        DataType::U16 => (raw.round() as u16).to_be_bytes().to_vec(),
        DataType::I16 => (raw.round() as i16).to_be_bytes().to_vec(),
        DataType::U32 => (raw.round() as u32).to_be_bytes().to_vec(),
        DataType::I32 => (raw.round() as i32).to_be_bytes().to_vec(),
        DataType::F32 => (raw as f32).to_be_bytes().to_vec(),
        DataType::U64 => (raw.round() as u64).to_be_bytes().to_vec(),
        DataType::I64 => (raw.round() as i64).to_be_bytes().to_vec(),
        DataType::F64 => raw.to_be_bytes().to_vec(),
    };
    from_be_bytes(&bytes, order)
}

/// Engineering value from a raw number. Decimal scales (0.1, 0.001, ...) divide by their
/// inverse so that 217 x 0.1 reads 21.7, not 21.700000000000003.
pub fn scale(raw: f64, scale: f64, offset: f64) -> f64 {
    let inverse = 1.0 / scale;
    let scaled = if scale.abs() < 1.0 && (inverse - inverse.round()).abs() < 1e-9 {
        raw / inverse.round()
    } else {
        raw * scale
    };
    scaled + offset
}

/// Raw number from an engineering value (inverse of [`scale`]).
pub fn unscale(value: f64, scale: f64, offset: f64) -> f64 {
    (value - offset) / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One known value per type, with its big-endian bytes.
    fn check(data_type: DataType, order: ByteOrder, words: &[u16], expected: f64) {
        let got = decode_raw(words, data_type, order)
            .unwrap_or_else(|| panic!("{data_type} {order:?} {words:04x?} did not decode"));
        assert!(
            got == expected || (got.is_nan() && expected.is_nan()),
            "{data_type} {order:?} {words:04x?}: got {got}, expected {expected}"
        );
        assert_eq!(
            encode_raw(expected, data_type, order),
            words,
            "{data_type} {order:?}: encode({expected}) differs"
        );
    }

    #[test]
    fn sixteen_bit_types_in_every_order() {
        for order in ByteOrder::ALL {
            let swapped = matches!(order, ByteOrder::Badc | ByteOrder::Dcba);
            let w = |x: u16| if swapped { x.swap_bytes() } else { x };
            check(DataType::U16, order, &[w(0x1234)], 4660.0);
            check(DataType::U16, order, &[w(0xFFFF)], 65535.0);
            check(DataType::I16, order, &[w(0xFFFE)], -2.0);
            check(DataType::I16, order, &[w(0x8000)], -32768.0);
        }
    }

    #[test]
    fn thirty_two_bit_types_in_every_order() {
        // 0x4048F5C3 = 3.14f32 (a sensor reading, not pi), 0xFFFFFFFE = -2i32, 0x12345678 = 305419896u32
        let cases: [(DataType, u32, f64); 3] = [
            (
                DataType::F32,
                0x4048_F5C3,
                f64::from(f32::from_bits(0x4048_F5C3)),
            ),
            (DataType::I32, 0xFFFF_FFFE, -2.0),
            (DataType::U32, 0x1234_5678, 305_419_896.0),
        ];
        for (dt, bits, value) in cases {
            let [a, b, c, d] = bits.to_be_bytes();
            let w = |x: u8, y: u8| u16::from_be_bytes([x, y]);
            check(dt, ByteOrder::Abcd, &[w(a, b), w(c, d)], value);
            check(dt, ByteOrder::Cdab, &[w(c, d), w(a, b)], value);
            check(dt, ByteOrder::Badc, &[w(b, a), w(d, c)], value);
            check(dt, ByteOrder::Dcba, &[w(d, c), w(b, a)], value);
        }
    }

    #[test]
    fn sixty_four_bit_types_in_every_order() {
        let cases: [(DataType, u64, f64); 3] = [
            (DataType::F64, 0x4009_21FB_5444_2D18, std::f64::consts::PI),
            (DataType::I64, 0xFFFF_FFFF_FFFF_FFFE, -2.0),
            (
                DataType::U64,
                0x0001_0203_0405_0607,
                0x0001_0203_0405_0607u64 as f64,
            ),
        ];
        for (dt, bits, value) in cases {
            let b = bits.to_be_bytes();
            let w = |x: u8, y: u8| u16::from_be_bytes([x, y]);
            let abcd = [w(b[0], b[1]), w(b[2], b[3]), w(b[4], b[5]), w(b[6], b[7])];
            let cdab = [abcd[3], abcd[2], abcd[1], abcd[0]];
            let badc = abcd.map(u16::swap_bytes);
            let dcba = cdab.map(u16::swap_bytes);
            check(dt, ByteOrder::Abcd, &abcd, value);
            check(dt, ByteOrder::Cdab, &cdab, value);
            check(dt, ByteOrder::Badc, &badc, value);
            check(dt, ByteOrder::Dcba, &dcba, value);
        }
    }

    #[test]
    fn dtsu666_voltage_float_abcd() {
        // DTSU666 reports Ua as float32 in 0.1 V: 2200.0 -> 220.0 V
        let words = encode_raw(2200.0, DataType::F32, ByteOrder::Abcd);
        assert_eq!(words, vec![0x4509, 0x8000]);
        let raw = decode_raw(&words, DataType::F32, ByteOrder::Abcd).unwrap();
        assert!((scale(raw, 0.1, 0.0) - 220.0).abs() < 1e-9);
    }

    #[test]
    fn wrong_word_count_is_rejected_not_panicking() {
        for dt in DataType::ALL {
            for n in [0usize, 1, 3, 5] {
                let words = vec![0u16; n];
                if n == usize::from(dt.words()) && dt != DataType::Bool {
                    continue;
                }
                assert_eq!(
                    decode_raw(&words, dt, ByteOrder::Abcd),
                    None,
                    "{dt} with {n} words"
                );
            }
        }
    }

    #[test]
    fn scale_and_offset_round_trip() {
        for (raw, s, o) in [(123.0, 0.1, 0.0), (-40.0, 0.5, -20.0), (1000.0, 0.001, 4.0)] {
            let v = scale(raw, s, o);
            assert!((unscale(v, s, o) - raw).abs() < 1e-9);
        }
    }

    #[test]
    fn names_parse_case_insensitively() {
        assert_eq!(ByteOrder::parse("cdab"), Some(ByteOrder::Cdab));
        assert_eq!(ByteOrder::parse("ABDC"), None);
        assert_eq!(DataType::parse("F32"), Some(DataType::F32));
        assert_eq!(DataType::parse("float"), None);
    }
}
