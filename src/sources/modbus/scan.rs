//! `propwatch scan`: which unit ids answer on a bus or behind an endpoint (and, on a serial
//! port, at which baud rate and parity when asked to sweep), with each device's
//! identification (FC 43/14, basic objects) where it has one. Polite to a live bus: one
//! request at a time, a pause between requests on top of the RTU silence, a fresh transport
//! after every timeout (a late reply must not be taken for the next answer); bounded (the
//! units and settings given); Ctrl-C ends it with what it found so far.

use std::time::Duration;

use tokio::time::timeout;
use tokio_modbus::client::{Client, Context};
use tokio_modbus::prelude::{ReadCode, SlaveContext};
use tokio_modbus::{Request, Response, Slave};

use super::read::ReadError;
use crate::config::{Connection, Parity, Transport};

/// What to scan (`propwatch scan --help`).
#[derive(Debug, Clone, clap::Args)]
pub struct ScanArgs {
    /// Modbus TCP: HOST:PORT.
    #[arg(long, group = "link")]
    pub tcp: Option<String>,
    /// RTU frames over TCP (a serial device server, a DTU): HOST:PORT.
    #[arg(long, group = "link")]
    pub rtu_over_tcp: Option<String>,
    /// RS-485 RTU on a serial port, e.g. /dev/ttyUSB0.
    #[arg(long, group = "link")]
    pub serial: Option<String>,
    /// Baud rates to try on a serial port, e.g. 9600,19200 (the sweep is every baud rate
    /// with every parity).
    #[arg(long, value_delimiter = ',', default_value = "9600")]
    pub bauds: Vec<u32>,
    /// Parities to try on a serial port: none, even, odd.
    #[arg(long, value_delimiter = ',', default_value = "none")]
    pub parities: Vec<String>,
    /// Unit ids to try: FIRST-LAST (default 1-247).
    #[arg(long, default_value = "1-247")]
    pub units: String,
    /// The register each unit is asked for (function 3): an answer or an exception reply
    /// both mean a device is there.
    #[arg(long, default_value_t = 0)]
    pub probe_address: u16,
    /// Wait this long for each answer.
    #[arg(long, default_value_t = 300)]
    pub timeout_ms: u64,
    /// Pause after each request (on top of the RTU 3.5-character silence).
    #[arg(long, default_value_t = 20)]
    pub delay_ms: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A unit that answered.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Found {
    pub unit: u8,
    /// Serial settings it answered at (`9600 none`); absent over TCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// What the probe read drew: `registers` or the exception it answered with.
    pub answer: String,
    /// FC 43/14 basic identification: vendor, product code, revision (None: not supported).
    pub identification: Option<Vec<String>>,
}

/// What a scan found, and whether it ran to its end.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Scan {
    pub found: Vec<Found>,
    pub requests: u32,
    pub interrupted: bool,
}

fn units(s: &str) -> Result<std::ops::RangeInclusive<u8>, ReadError> {
    let bad = || {
        ReadError::Usage(format!(
            "--units {s:?}: FIRST-LAST within 0-255, e.g. 1-247"
        ))
    };
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (a, b): (u8, u8) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a > b {
        return Err(bad());
    }
    Ok(a..=b)
}

/// The connections to try: one for TCP, one per baud rate and parity on serial.
fn links(a: &ScanArgs) -> Result<Vec<(Connection, Option<String>)>, ReadError> {
    let base = |transport: Transport, baud: u32| {
        let read = super::read::ReadArgs {
            tcp: Some(String::new()),
            rtu_over_tcp: None,
            serial: None,
            baud,
            parity: "none".into(),
            data_bits: 8,
            stop_bits: 1,
            unit: 1,
            function: 3,
            address: 0,
            count: None,
            data_type: "u16".into(),
            order: "ABCD".into(),
            scale: 1.0,
            offset: 0.0,
            timeout_ms: a.timeout_ms,
            json: false,
        };
        super::read::connection(&read).map(|mut c| {
            c.transport = transport;
            c
        })
    };
    match (&a.tcp, &a.rtu_over_tcp, &a.serial) {
        (Some(t), None, None) => Ok(vec![(
            base(Transport::Tcp { address: t.clone() }, 9600)?,
            None,
        )]),
        (None, Some(t), None) => Ok(vec![(
            base(Transport::RtuOverTcp { address: t.clone() }, 9600)?,
            None,
        )]),
        (None, None, Some(port)) => {
            let mut out = Vec::new();
            for &baud in &a.bauds {
                for p in &a.parities {
                    let parity = match p.as_str() {
                        "none" => Parity::None,
                        "even" => Parity::Even,
                        "odd" => Parity::Odd,
                        other => {
                            return Err(ReadError::Usage(format!(
                                "--parities {other:?}: none, even or odd"
                            )))
                        }
                    };
                    let t = Transport::Rtu(crate::config::SerialSettings {
                        port: port.clone(),
                        baud_rate: baud,
                        parity,
                        data_bits: 8,
                        stop_bits: 1,
                    });
                    out.push((base(t, baud)?, Some(format!("{baud} {p}"))));
                }
            }
            Ok(out)
        }
        _ => Err(ReadError::Usage(
            "say where the bus is: --tcp, --rtu-over-tcp or --serial".into(),
        )),
    }
}

async fn open(conn: &Connection) -> Result<Context, ReadError> {
    match timeout(conn.connect_timeout, super::transport::connect(conn)).await {
        Ok(Ok(ctx)) => Ok(ctx),
        Ok(Err(e)) => Err(ReadError::Connect(e.to_string())),
        Err(_) => Err(ReadError::Connect("no connection in time".into())),
    }
}

/// Scan; `stop` (Ctrl-C) ends it early with what was found.
pub async fn scan(
    a: &ScanArgs,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<Scan, ReadError> {
    let units = units(&a.units)?;
    let links = links(a)?;
    let mut out = Scan {
        found: Vec::new(),
        requests: 0,
        interrupted: false,
    };
    'links: for (conn, serial) in &links {
        let pause = Duration::from_millis(a.delay_ms)
            + if conn.transport.is_rtu() {
                super::rtu_silence(conn)
            } else {
                Duration::ZERO
            };
        let mut ctx: Option<Context> = None;
        for unit in units.clone() {
            if stop.is_cancelled() {
                out.interrupted = true;
                break 'links;
            }
            if ctx.is_none() {
                ctx = Some(open(conn).await?);
            }
            let c = ctx.as_mut().expect("opened above");
            c.set_slave(Slave(unit));
            out.requests += 1;
            let probe = Request::ReadHoldingRegisters(a.probe_address, 1);
            let answer = tokio::select! {
                () = stop.cancelled() => { out.interrupted = true; break 'links; }
                r = timeout(conn.timeout, c.call(probe)) => r,
            };
            let answer = match answer {
                Ok(Ok(Ok(_))) => "registers".to_string(),
                // a gateway saying nobody answered behind it: no device at this unit
                Ok(Ok(Err(
                    tokio_modbus::ExceptionCode::GatewayPathUnavailable
                    | tokio_modbus::ExceptionCode::GatewayTargetDevice,
                ))) => {
                    tokio::time::sleep(pause).await;
                    continue;
                }
                Ok(Ok(Err(code))) => format!("exception: {code}"),
                // no answer, or a garbled one: a fresh transport for the next unit
                _ => {
                    ctx = None;
                    tokio::time::sleep(pause).await;
                    continue;
                }
            };
            tokio::time::sleep(pause).await;
            out.requests += 1;
            let ident = Request::ReadDeviceIdentification(ReadCode::Basic, 0);
            let identification = match timeout(conn.timeout, c.call(ident)).await {
                Ok(Ok(Ok(Response::ReadDeviceIdentification(r)))) => Some(
                    r.device_id_objects
                        .iter()
                        .map(|o| o.value_as_str().unwrap_or("?").to_string())
                        .collect(),
                ),
                Ok(Ok(_)) => None,
                _ => {
                    ctx = None;
                    None
                }
            };
            out.found.push(Found {
                unit,
                serial: serial.clone(),
                answer,
                identification,
            });
            tokio::time::sleep(pause).await;
        }
    }
    Ok(out)
}

/// The scan as a table for a terminal.
pub fn table(s: &Scan) -> String {
    let mut out = format!(
        "{:>4}  {:<14} {:<30} identification\n",
        "unit", "serial", "answer"
    );
    for f in &s.found {
        out.push_str(&format!(
            "{:>4}  {:<14} {:<30} {}\n",
            f.unit,
            f.serial.as_deref().unwrap_or("-"),
            f.answer,
            f.identification
                .as_ref()
                .map_or("(not supported)".to_string(), |i| i.join(" / "))
        ));
    }
    out.push_str(&format!(
        "{} unit(s) answered; {} request(s){}\n",
        s.found.len(),
        s.requests,
        if s.interrupted { "; interrupted" } else { "" }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_ranges_are_checked() {
        assert_eq!(units("1-247").unwrap(), 1..=247);
        assert_eq!(units("5").unwrap(), 5..=5);
        for bad in ["0-300", "9-3", "a-b", ""] {
            assert!(units(bad).is_err(), "{bad}");
        }
    }
}
