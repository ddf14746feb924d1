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
use crate::config::Connection;

/// What to scan (`propwatch scan --help`).
#[derive(Debug, Clone, clap::Args)]
pub struct ScanArgs {
    #[command(flatten)]
    pub link: super::read::LinkArgs,
    /// Sweep these baud rates on a serial port, e.g. 9600,19200 (instead of --baud; every
    /// baud rate with every parity).
    #[arg(long, value_delimiter = ',')]
    pub bauds: Vec<u32>,
    /// Sweep these parities on a serial port: none, even, odd (instead of --parity).
    #[arg(long, value_delimiter = ',')]
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

/// The connections to try: one, or on a serial port one per baud rate and parity swept.
fn links(a: &ScanArgs) -> Result<Vec<(Connection, Option<String>)>, ReadError> {
    if a.link.serial.is_none() {
        return Ok(vec![(a.link.connection(a.timeout_ms, None)?, None)]);
    }
    let bauds = if a.bauds.is_empty() {
        vec![a.link.baud]
    } else {
        a.bauds.clone()
    };
    let parities = if a.parities.is_empty() {
        vec![a.link.parity.clone()]
    } else {
        a.parities.clone()
    };
    let mut out = Vec::new();
    for &baud in &bauds {
        for p in &parities {
            let conn = a.link.connection(a.timeout_ms, Some((baud, p)))?;
            out.push((conn, Some(format!("{baud} {p}"))));
        }
    }
    Ok(out)
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
            // progress on stderr (a sweep of a bus takes minutes; the table comes at the end);
            // a closed stderr (a pipe whose reader left) is no reason to stop
            {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "found unit {unit}{}: {answer}",
                    serial
                        .as_ref()
                        .map_or(String::new(), |s| format!(" at {s}"))
                );
            }
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
