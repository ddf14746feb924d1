//! Modbus servers for the simulated devices, on tokio-modbus's server side: TCP, RTU over
//! TCP and RTU on a serial port. A unit id nobody simulates never answers, as on a real bus.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::{Connection, Parity, Transport};
use crate::sources::modbus::plan::{Function, Span};

use super::{Fault, Simulator};

#[derive(Clone)]
struct SimService {
    sim: Arc<Simulator>,
    conn: usize,
    /// Bit time of the emulated serial line, when emulating line timing.
    line_bit: Option<Duration>,
}

type Reply = Result<Option<Response>, ExceptionCode>;

impl Service for SimService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Reply> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let (fault, reply, frame_bytes) = self.answer(req.slave, &req.request);
        let line_bit = self.line_bit;
        Box::pin(async move {
            if let Some(bit) = line_bit {
                // request + reply on the wire, 11 bits a character, plus a 1 ms turnaround
                tokio::time::sleep(bit * (11 * frame_bytes) + Duration::from_millis(1)).await;
            }
            match fault {
                Fault::Offline => Ok(None),
                Fault::Slow(d) => {
                    tokio::time::sleep(d).await;
                    reply
                }
                _ => reply,
            }
        })
    }
}

impl SimService {
    fn answer(&self, unit: u8, request: &Request<'_>) -> (Fault, Reply, u32) {
        let Some(&idx) = self.sim.by_unit.get(&(self.conn, unit)) else {
            return (Fault::Offline, Ok(None), 8);
        };
        let (function, start, count) = match *request {
            Request::ReadCoils(a, n) => (Function::Coils, a, n),
            Request::ReadDiscreteInputs(a, n) => (Function::DiscreteInputs, a, n),
            Request::ReadHoldingRegisters(a, n) => (Function::HoldingRegisters, a, n),
            Request::ReadInputRegisters(a, n) => (Function::InputRegisters, a, n),
            _ => return (Fault::None, Err(ExceptionCode::IllegalFunction), 8),
        };
        let mut devices = self.sim.devices.lock().unwrap_or_else(|e| e.into_inner());
        let dev_ref = &mut devices[idx];
        let fault = self.sim.fault_of(dev_ref);
        let max = if function.is_bit_access() { 2000 } else { 125 };
        if count == 0 || count > max || u32::from(start) + u32::from(count) > 65536 {
            return (fault, Err(ExceptionCode::IllegalDataValue), 8);
        }
        // Devices that reject reads across undefined addresses: reads must stay in a block.
        let span = Span {
            function,
            start,
            len: count,
        };
        let blocks: Vec<_> = dev_ref
            .profile
            .part
            .get::<crate::sources::modbus::config::ModbusProfile>()
            .map_or(&[][..], |m| &m.blocks)
            .iter()
            .filter(|b| b.function == function)
            .collect();
        if !blocks.is_empty() && !blocks.iter().any(|b| b.contains(&span)) {
            return (fault, Err(ExceptionCode::IllegalDataAddress), 8);
        }
        let reply_bytes = if function.is_bit_access() {
            5 + u32::from(count).div_ceil(8)
        } else {
            5 + 2 * u32::from(count)
        };
        let reply = match function {
            Function::Coils => Response::ReadCoils(dev_ref.image.read_bits(function, start, count)),
            Function::DiscreteInputs => {
                Response::ReadDiscreteInputs(dev_ref.image.read_bits(function, start, count))
            }
            Function::HoldingRegisters => {
                Response::ReadHoldingRegisters(dev_ref.image.read_words(function, start, count))
            }
            Function::InputRegisters => {
                Response::ReadInputRegisters(dev_ref.image.read_words(function, start, count))
            }
        };
        let reply = if fault == Fault::Garbage {
            dev_ref.garbage_toggle = !dev_ref.garbage_toggle;
            garble(dev_ref.garbage_toggle, reply)
        } else {
            reply
        };
        (fault, Ok(Some(reply)), 8 + reply_bytes)
    }
}

/// A reply that is well framed but wrong: one value short, or another function's reply.
fn garble(short: bool, reply: Response) -> Response {
    match (short, reply) {
        (true, Response::ReadHoldingRegisters(mut w)) => {
            w.pop();
            Response::ReadHoldingRegisters(w)
        }
        (true, Response::ReadInputRegisters(mut w)) => {
            w.pop();
            Response::ReadInputRegisters(w)
        }
        (false, Response::ReadHoldingRegisters(w)) => Response::ReadInputRegisters(w),
        (false, Response::ReadInputRegisters(w)) => Response::ReadHoldingRegisters(w),
        (_, Response::ReadCoils(b)) => Response::ReadDiscreteInputs(b),
        (_, Response::ReadDiscreteInputs(b)) => Response::ReadCoils(b),
        (_, other) => other,
    }
}

fn line_bit(conn: &Connection, emulate: bool) -> Option<Duration> {
    (emulate && conn.transport.is_rtu())
        .then(|| Duration::from_secs_f64(1.0 / f64::from(conn.baud_rate.max(1))))
}

pub async fn serve_tcp(
    sim: Arc<Simulator>,
    conn: usize,
    listener: TcpListener,
    emulate_line_timing: bool,
    shutdown: CancellationToken,
) {
    let c = &crate::sources::modbus::config::connections(&sim.site)[conn];
    let service = SimService {
        line_bit: line_bit(c, emulate_line_timing),
        sim: sim.clone(),
        conn,
    };
    let on_connected = move |stream: tokio::net::TcpStream, addr| {
        let service = service.clone();
        async move {
            debug!(%addr, "client connected");
            let _ = stream.set_nodelay(true);
            Ok(Some((service, stream)))
        }
    };
    let on_error = |e: io::Error| debug!(error = %e, "client connection ended with an error");
    let result = match c.transport {
        Transport::RtuOverTcp { .. } => {
            tokio_modbus::server::rtu_over_tcp::Server::new(listener)
                .serve_until(&on_connected, on_error, async move {
                    shutdown.cancelled().await
                })
                .await
        }
        _ => {
            tokio_modbus::server::tcp::Server::new(listener)
                .serve_until(&on_connected, on_error, async move {
                    shutdown.cancelled().await
                })
                .await
        }
    };
    if let Err(e) = result {
        warn!(error = %e, "simulator server stopped");
    }
}

pub fn serial_server(
    path: &str,
    conn: &Connection,
) -> io::Result<tokio_modbus::server::rtu::Server> {
    use tokio_serial::SerialPortBuilderExt;
    let Transport::Rtu(s) = &conn.transport else {
        return Err(io::Error::other("not an RTU connection"));
    };
    let port = tokio_serial::new(path, s.baud_rate)
        .parity(match s.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        })
        .open_native_async()
        .map_err(io::Error::other)?;
    Ok(tokio_modbus::server::rtu::Server::new(port))
}

pub async fn serve_serial(
    sim: Arc<Simulator>,
    conn: usize,
    server: tokio_modbus::server::rtu::Server,
    shutdown: CancellationToken,
) {
    let service = SimService {
        sim,
        conn,
        line_bit: None,
    };
    if let Err(e) = server
        .serve_until(service, async move { shutdown.cancelled().await })
        .await
    {
        warn!(error = %e, "simulated serial bus stopped");
    }
}
