//! `propwatch read`: one ad-hoc read of a device, decoded with any type, byte order, scale
//! and offset: what integrators use mbpoll or modpoll for while commissioning, through the
//! same transports, timeouts and codec as the daemon. One request, never a write.

use std::time::Duration;

use tokio::time::timeout;
use tokio_modbus::client::Client;
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{Request, Slave};

use super::codec::{self, ByteOrder, DataType};
use super::decode::{self, ReadData};
use super::plan::{Function, Limits};
use crate::config::{Connection, Parity, SerialSettings, Transport};

/// Where the device or the bus is (`read` and `scan`): one of `--tcp`, `--rtu-over-tcp`,
/// `--serial`, with the serial line's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct LinkArgs {
    /// Modbus TCP: HOST:PORT.
    #[arg(long, group = "link")]
    pub tcp: Option<String>,
    /// RTU frames over TCP (a serial device server, a DTU): HOST:PORT.
    #[arg(long, group = "link")]
    pub rtu_over_tcp: Option<String>,
    /// RS-485 RTU on a serial port, e.g. /dev/ttyUSB0.
    #[arg(long, group = "link")]
    pub serial: Option<String>,
    #[arg(long, default_value_t = 9600)]
    pub baud: u32,
    /// none, even or odd.
    #[arg(long, default_value = "none")]
    pub parity: String,
    #[arg(long, default_value_t = 8)]
    pub data_bits: u8,
    #[arg(long, default_value_t = 1)]
    pub stop_bits: u8,
}

impl LinkArgs {
    /// The connection to open, waiting `timeout_ms` for each answer; a serial port at
    /// `line` (baud rate, parity: a scan's sweep) or at `--baud`/`--parity`.
    pub(crate) fn connection(
        &self,
        timeout_ms: u64,
        line: Option<(u32, &str)>,
    ) -> Result<Connection, ReadError> {
        let (baud, parity) = line.unwrap_or((self.baud, self.parity.as_str()));
        let transport = match (&self.tcp, &self.rtu_over_tcp, &self.serial) {
            (Some(t), None, None) => Transport::Tcp { address: t.clone() },
            (None, Some(t), None) => Transport::RtuOverTcp { address: t.clone() },
            (None, None, Some(port)) => Transport::Rtu(SerialSettings {
                port: port.clone(),
                baud_rate: baud,
                parity: match parity {
                    "none" => Parity::None,
                    "even" => Parity::Even,
                    "odd" => Parity::Odd,
                    p => return Err(ReadError::Usage(format!("parity {p:?}: none, even or odd"))),
                },
                data_bits: self.data_bits,
                stop_bits: self.stop_bits,
            }),
            _ => {
                return Err(ReadError::Usage(
                    "say where the device is: --tcp, --rtu-over-tcp or --serial".into(),
                ))
            }
        };
        let t = Duration::from_millis(timeout_ms.clamp(1, 60_000));
        Ok(Connection {
            id: "read".into(),
            transport,
            timeout: t,
            connect_timeout: t.max(Duration::from_secs(3)),
            retries: 0,
            inter_request_delay: Duration::ZERO,
            baud_rate: baud,
            reconnect_backoff_max: Duration::from_secs(1),
            device_backoff_max: Duration::from_secs(1),
            limits: Limits {
                max_registers: 125,
                max_bits: 2000,
                max_gap_registers: 0,
                max_gap_bits: 0,
            },
            devices: Vec::new(),
        })
    }
}

/// What to read and how to show it (`propwatch read --help`).
#[derive(Debug, Clone, clap::Args)]
pub struct ReadArgs {
    #[command(flatten)]
    pub link: LinkArgs,
    /// The unit (slave) id.
    #[arg(long, default_value_t = 1)]
    pub unit: u8,
    /// 1 coils, 2 discrete inputs, 3 holding registers, 4 input registers.
    #[arg(long, default_value_t = 3)]
    pub function: u8,
    /// The first address (0-based, as on the wire).
    #[arg(long)]
    pub address: u16,
    /// Registers (or bits) to read; default: one value of --type.
    #[arg(long)]
    pub count: Option<u16>,
    /// u16, i16, u32, i32, u64, i64, f32, f64 (registers), bool (bits).
    #[arg(long = "type", default_value = "u16")]
    pub data_type: String,
    /// Byte/word order of multi-register values: ABCD, CDAB, BADC, DCBA.
    #[arg(long, default_value = "ABCD")]
    pub order: String,
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    #[arg(long, default_value_t = 0.0)]
    pub offset: f64,
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// Print JSON (one object per value) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One decoded value.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Row {
    pub address: u16,
    /// The register words it was decoded from (empty for bits).
    pub words: Vec<u16>,
    /// The value before scale and offset.
    pub raw: f64,
    /// `raw * scale + offset`.
    pub value: f64,
}

/// Why a read gave no values.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no reply within {0} ms")]
    Timeout(u64),
    #[error("the device answered with an exception: {0}")]
    Exception(tokio_modbus::ExceptionCode),
    #[error("a garbled reply: {0}")]
    Garbled(String),
}

impl ReadError {
    /// The process exit code: 64 for a usage mistake, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            ReadError::Usage(_) => 64,
            _ => 1,
        }
    }
}

/// The checked request: function, type, order, count.
struct Plan {
    function: Function,
    data_type: DataType,
    order: ByteOrder,
    count: u16,
}

fn plan(a: &ReadArgs) -> Result<Plan, ReadError> {
    let usage = |m: String| Err(ReadError::Usage(m));
    let Some(function) = Function::from_code(i64::from(a.function)) else {
        return usage(format!("--function {} is not 1, 2, 3 or 4", a.function));
    };
    let Some(data_type) = DataType::parse(&a.data_type) else {
        return usage(format!(
            "--type {:?}: use u16, i16, u32, i32, u64, i64, f32, f64 or bool",
            a.data_type
        ));
    };
    let Some(order) = ByteOrder::parse(&a.order) else {
        return usage(format!(
            "--order {:?}: use ABCD, CDAB, BADC or DCBA",
            a.order
        ));
    };
    if function.is_bit_access() != (data_type == DataType::Bool) {
        return usage(format!(
            "--type {} does not go with --function {}: bits (1, 2) are bool, registers (3, 4) are numbers",
            a.data_type, a.function
        ));
    }
    let width = if function.is_bit_access() {
        1
    } else {
        data_type.words()
    };
    let count = a.count.unwrap_or(width);
    let max = if function.is_bit_access() { 2000 } else { 125 };
    if count == 0 || count > max || count % width != 0 {
        return usage(format!(
            "--count {count}: 1..={max}, a whole number of {} ({width} each)",
            if function.is_bit_access() {
                "bits"
            } else {
                "values"
            }
        ));
    }
    if u32::from(a.address) + u32::from(count) > 65536 {
        return usage(format!(
            "--address {} + --count {count} passes 65535",
            a.address
        ));
    }
    if !a.scale.is_finite() || a.scale == 0.0 || !a.offset.is_finite() {
        return usage("--scale must be finite and not 0, --offset finite".into());
    }
    Ok(Plan {
        function,
        data_type,
        order,
        count,
    })
}

/// Decode what the device answered.
fn rows(a: &ReadArgs, p: &Plan, data: ReadData) -> Result<Vec<Row>, ReadError> {
    let scaled = |raw: f64| codec::scale(raw, a.scale, a.offset);
    match data {
        ReadData::Bits(bits) if p.function.is_bit_access() => Ok(bits
            .iter()
            .take(usize::from(p.count))
            .enumerate()
            .map(|(i, b)| {
                let raw = f64::from(u8::from(*b));
                Row {
                    address: a.address + i as u16,
                    words: Vec::new(),
                    raw,
                    value: raw,
                }
            })
            .collect()),
        ReadData::Words(words) if !p.function.is_bit_access() => {
            if words.len() != usize::from(p.count) {
                return Err(ReadError::Garbled(format!(
                    "{} registers asked, {} in the reply",
                    p.count,
                    words.len()
                )));
            }
            let width = usize::from(p.data_type.words());
            words
                .chunks(width)
                .enumerate()
                .map(|(i, w)| {
                    let raw = codec::decode_raw(w, p.data_type, p.order).ok_or_else(|| {
                        ReadError::Garbled(format!("{w:?} is not a {}", p.data_type))
                    })?;
                    Ok(Row {
                        address: a.address + (i * width) as u16,
                        words: w.to_vec(),
                        raw,
                        value: scaled(raw),
                    })
                })
                .collect()
        }
        _ => Err(ReadError::Garbled(
            "a reply of the wrong kind for the function".into(),
        )),
    }
}

/// Connect, send the one request, decode the answer.
pub async fn read(a: &ReadArgs) -> Result<Vec<Row>, ReadError> {
    let p = plan(a)?;
    let conn = a.link.connection(a.timeout_ms, None)?;
    let mut ctx = match timeout(conn.connect_timeout, super::transport::connect(&conn)).await {
        Ok(Ok(ctx)) => ctx,
        Ok(Err(e)) => return Err(ReadError::Connect(e.to_string())),
        Err(_) => {
            return Err(ReadError::Connect(format!(
                "no connection within {} ms",
                conn.connect_timeout.as_millis()
            )))
        }
    };
    ctx.set_slave(Slave(a.unit));
    let request = match p.function {
        Function::Coils => Request::ReadCoils(a.address, p.count),
        Function::DiscreteInputs => Request::ReadDiscreteInputs(a.address, p.count),
        Function::HoldingRegisters => Request::ReadHoldingRegisters(a.address, p.count),
        Function::InputRegisters => Request::ReadInputRegisters(a.address, p.count),
    };
    // `call`, not the `Reader` helpers: they assert the reply's length
    let data = match timeout(conn.timeout, ctx.call(request)).await {
        Err(_) => return Err(ReadError::Timeout(conn.timeout.as_millis() as u64)),
        Ok(Err(e)) => return Err(ReadError::Garbled(e.to_string())),
        Ok(Ok(Err(code))) => return Err(ReadError::Exception(code)),
        Ok(Ok(Ok(r))) => decode::read_data(r),
    };
    let _ = ctx.disconnect().await;
    rows(a, &p, data)
}

/// The rows as a table for a terminal: address, words (hex), raw, value.
pub fn table(a: &ReadArgs, rows: &[Row]) -> String {
    let mut out = format!(
        "unit {} function {} address {} type {} order {}\n{:>7}  {:<24} {:>16} {:>16}\n",
        a.unit, a.function, a.address, a.data_type, a.order, "address", "words", "raw", "value"
    );
    for r in rows {
        let words: Vec<String> = r.words.iter().map(|w| format!("{w:04X}")).collect();
        out.push_str(&format!(
            "{:>7}  {:<24} {:>16} {:>16}\n",
            r.address,
            words.join(" "),
            r.raw,
            r.value
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: ReadArgs,
    }

    fn args(line: &str) -> ReadArgs {
        Cli::parse_from(std::iter::once("read").chain(line.split_whitespace())).a
    }

    #[test]
    fn requests_are_checked_before_anything_is_sent() {
        for (line, want) in [
            ("--tcp h:1 --address 0 --function 5", "is not 1, 2, 3 or 4"),
            ("--tcp h:1 --address 0 --type f16", "--type \"f16\""),
            ("--tcp h:1 --address 0 --order ACBD", "--order \"ACBD\""),
            ("--tcp h:1 --address 0 --function 1", "does not go with"),
            (
                "--tcp h:1 --address 0 --type f32 --count 3",
                "a whole number of values",
            ),
            ("--tcp h:1 --address 0 --count 126", "1..=125"),
            ("--tcp h:1 --address 65535 --count 2", "passes 65535"),
            ("--tcp h:1 --address 0 --scale 0", "--scale"),
        ] {
            let e = plan(&args(line)).err().expect(line);
            assert!(e.to_string().contains(want), "{line}: {e}");
            assert_eq!(e.exit_code(), 64);
        }
        let e = args("--address 0").link.connection(1000, None).unwrap_err();
        assert!(e.to_string().contains("--tcp, --rtu-over-tcp or --serial"));
        let a = args("--serial /dev/x --parity mark --address 0");
        let e = a.link.connection(1000, None).unwrap_err();
        assert!(e.to_string().contains("parity \"mark\""));
        assert_eq!(
            plan(&args("--tcp h:1 --address 4 --type f64"))
                .unwrap()
                .count,
            4
        );
    }

    #[test]
    fn a_reply_of_the_wrong_length_is_refused_not_decoded() {
        let a = args("--tcp h:1 --address 0 --type u32 --count 4");
        let p = plan(&a).unwrap();
        let e = rows(&a, &p, ReadData::Words(vec![1, 2, 3])).unwrap_err();
        assert!(e.to_string().contains("4 registers asked, 3"), "{e}");
        let r = rows(&a, &p, ReadData::Words(vec![0, 1, 0, 2])).unwrap();
        assert_eq!(
            r.iter().map(|r| (r.address, r.raw)).collect::<Vec<_>>(),
            vec![(0, 1.0), (2, 2.0)]
        );
        assert!(rows(&a, &p, ReadData::Bits(vec![true])).is_err());
    }
}
