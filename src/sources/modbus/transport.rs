//! Opening a Modbus transport: TCP, RTU on a serial port, or RTU frames over TCP (serial
//! device servers and DTUs).

use std::io;

use tokio::net::TcpStream;
use tokio_modbus::client::{rtu, tcp, Context};
use tokio_serial::SerialPortBuilderExt;

use crate::config::{Connection, Parity, Transport};

pub async fn connect(conn: &Connection) -> io::Result<Context> {
    match &conn.transport {
        Transport::Tcp { address } => {
            let stream = TcpStream::connect(address.as_str()).await?;
            stream.set_nodelay(true)?;
            Ok(tcp::attach(stream))
        }
        Transport::RtuOverTcp { address } => {
            let stream = TcpStream::connect(address.as_str()).await?;
            stream.set_nodelay(true)?;
            Ok(rtu::attach(stream))
        }
        Transport::Rtu(s) => {
            let port = tokio_serial::new(&s.port, s.baud_rate)
                .parity(match s.parity {
                    Parity::None => tokio_serial::Parity::None,
                    Parity::Even => tokio_serial::Parity::Even,
                    Parity::Odd => tokio_serial::Parity::Odd,
                })
                .data_bits(if s.data_bits == 7 {
                    tokio_serial::DataBits::Seven
                } else {
                    tokio_serial::DataBits::Eight
                })
                .stop_bits(if s.stop_bits == 2 {
                    tokio_serial::StopBits::Two
                } else {
                    tokio_serial::StopBits::One
                })
                .open_native_async()
                .map_err(io::Error::other)?;
            Ok(rtu::attach(port))
        }
    }
}
