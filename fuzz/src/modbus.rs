//! `modbus_reply`: arbitrary bytes as the reply to one of the planned reads of a device of the
//! demo site (every shipped Modbus profile, plus a profile with every type and byte order).
//!
//! Two ways in, chosen by the first byte:
//! - the reply payload directly (`ReadData::Words` / `Bits` of any length, wrong kind included);
//! - the reply as bytes on the wire, through tokio-modbus's TCP or RTU client over an
//!   in-memory pipe (the harness reads the request, answers with the fuzz bytes, optionally
//!   with the MBAP header or the CRC made right so the payload gets past the framing), then
//!   `decode::read_data` as the poller does.
//!
//! Never a panic; a payload of the wrong kind or length is refused as such; every value a
//! point gets is finite, and a point gets no value only where its type or scale can produce
//! NaN or infinity.

use std::time::Duration;

use propwatch::config::{Device, ModbusAddr, ModbusDevice};
use propwatch::model::Value;
use propwatch::sources::modbus::codec::DataType;
use propwatch::sources::modbus::decode::{self, DecodeError, ReadData};
use propwatch::sources::modbus::plan::{Function, Read};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_modbus::client::Client;
use tokio_modbus::{Request, Slave};

use super::common::{demo_site, pick, runtime, Reader};

pub fn modbus_reply(data: &[u8]) {
    let site = demo_site();
    let devices: Vec<&Device> = site
        .devices
        .iter()
        .filter(|d| {
            d.part::<ModbusDevice>()
                .is_some_and(|m| !m.reads.is_empty())
        })
        .collect();
    let mut r = Reader::new(data);
    let device = devices[pick(r.u8(), devices.len())];
    let reads = &device.part::<ModbusDevice>().expect("filtered above").reads;
    let read = &reads[pick(r.u8(), reads.len())];
    let mode = r.u8();
    match mode % 4 {
        0 => {
            let n = length(&mut r, read.count);
            let body = r.rest();
            let words = (0..n)
                .map(|i| {
                    let at = 2 * i % body.len().max(1);
                    let hi = body.get(at).copied().unwrap_or(0);
                    let lo = body.get(at + 1).copied().unwrap_or(0);
                    u16::from_be_bytes([hi, lo])
                })
                .collect();
            check(device, read, &ReadData::Words(words));
        }
        1 => {
            let n = length(&mut r, read.count);
            let body = r.rest();
            let bits = (0..n)
                .map(|i| {
                    let byte = body.get(i / 8 % body.len().max(1)).copied().unwrap_or(0);
                    byte >> (i % 8) & 1 == 1
                })
                .collect();
            check(device, read, &ReadData::Bits(bits));
        }
        _ => wire(device, read, mode, r.rest()),
    }
}

/// The payload length: mostly the requested count, sometimes anything up to 2047.
fn length(r: &mut Reader, count: u16) -> usize {
    let sel = r.u8();
    match sel {
        0..=159 => usize::from(count),
        160..=191 => usize::from(count) + usize::from(sel - 160) % 9,
        192..=223 => usize::from(count).saturating_sub(usize::from(sel - 192) % 9),
        _ => usize::from(r.u16() % 2048),
    }
}

/// Decode and check the outcome against what the payload is.
fn check(device: &Device, read: &Read, data: &ReadData) {
    let profile = &device.profile;
    let result = decode::decode_read(profile, read, data);
    let bit_access = read.function.is_bit_access();
    let count = usize::from(read.count);
    let expected_err = match data {
        ReadData::Words(_) if bit_access => Some("kind"),
        ReadData::Bits(_) if !bit_access => Some("kind"),
        ReadData::Words(w) if w.len() != count => Some("length"),
        ReadData::Bits(b) if b.len() < count || b.len() > count.div_ceil(8) * 8 => Some("length"),
        _ => None,
    };
    let values = match (result, expected_err) {
        (Err(DecodeError::WrongKind), Some("kind")) => return,
        (Err(DecodeError::WrongLength { expected, .. }), Some("length")) => {
            assert_eq!(expected, read.count);
            return;
        }
        (Ok(values), None) => values,
        (other, expected) => panic!(
            "{} {:?}: decode gave {other:?}, expected {expected:?}",
            device.id, read
        ),
    };
    assert_eq!(
        values.len(),
        read.points.len(),
        "{}: one outcome per point of the read",
        device.id
    );
    for (&(pi, value), &want) in values.iter().zip(&read.points) {
        assert_eq!(
            pi, want,
            "{}: outcomes in the read's point order",
            device.id
        );
        let pp = &profile.points[pi];
        let m = pp.part::<ModbusAddr>().expect("a Modbus point");
        let is_bool = m.bit.is_some() || m.data_type == DataType::Bool;
        match value {
            Some(Value::Bool(_)) => assert!(is_bool, "{}: bool for {}", device.id, pp.id),
            Some(Value::Num(x)) => {
                assert!(!is_bool, "{}: number for bool {}", device.id, pp.id);
                assert!(x.is_finite(), "{}: {} = {x} passed", device.id, pp.id);
            }
            None => assert!(
                !is_bool && (m.data_type.is_float() || pp.scale.abs() > 1e200),
                "{}: {} refused though {} x {} cannot be NaN or infinite",
                device.id,
                pp.id,
                m.data_type,
                pp.scale
            ),
        }
    }
}

/// Modbus RTU CRC-16 (polynomial 0xA001 reflected, initial 0xFFFF), low byte first on the wire.
fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                crc >> 1 ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

fn request(read: &Read) -> Request<'static> {
    match read.function {
        Function::Coils => Request::ReadCoils(read.start, read.count),
        Function::DiscreteInputs => Request::ReadDiscreteInputs(read.start, read.count),
        Function::HoldingRegisters => Request::ReadHoldingRegisters(read.start, read.count),
        Function::InputRegisters => Request::ReadInputRegisters(read.start, read.count),
    }
}

/// The reply as bytes on the wire. `mode` bit 2: RTU (else TCP); bit 3: frame the payload
/// (the request's MBAP header with the right length, or the unit id and a good CRC); bit 4:
/// prefix the payload with the request's function code and the right byte count.
fn wire(device: &Device, read: &Read, mode: u8, reply: &[u8]) {
    let rtu = mode & 4 != 0;
    let frame = mode & 8 != 0;
    let head = mode & 16 != 0;
    let unit = device.part::<ModbusDevice>().map_or(0, |m| m.unit_id);
    let mut pdu = Vec::with_capacity(reply.len() + 2);
    if head {
        pdu.push(read.function.code());
        pdu.push(reply.len().min(255) as u8);
    }
    pdu.extend_from_slice(reply);
    let rt = runtime();
    rt.block_on(async {
        let (client_io, mut server_io) = tokio::io::duplex(1 << 16);
        let mut ctx = if rtu {
            tokio_modbus::client::rtu::attach_slave(client_io, Slave(unit))
        } else {
            tokio_modbus::client::tcp::attach_slave(client_io, Slave(unit))
        };
        let server = async move {
            let mut req = [0u8; 260];
            let n = server_io.read(&mut req).await.unwrap_or(0);
            let out = match (frame, rtu) {
                (false, _) => pdu,
                (true, false) => {
                    let mut out = Vec::with_capacity(pdu.len() + 7);
                    out.extend_from_slice(&req[..2.min(n)]);
                    out.resize(2, 0);
                    out.extend_from_slice(&[0, 0]);
                    out.extend_from_slice(&((pdu.len() + 1).min(0xFFFF) as u16).to_be_bytes());
                    out.push(unit);
                    out.extend_from_slice(&pdu);
                    out
                }
                (true, true) => {
                    let mut out = Vec::with_capacity(pdu.len() + 3);
                    out.push(unit);
                    out.extend_from_slice(&pdu);
                    out.extend_from_slice(&crc16(&out).to_le_bytes());
                    out
                }
            };
            let _ = server_io.write_all(&out).await;
            // dropping the pipe's end: the client reads end of file after the reply
        };
        let call = tokio::time::timeout(Duration::from_secs(2), ctx.call(request(read)));
        let (result, ()) = tokio::join!(call, server);
        match result {
            Ok(Ok(Ok(response))) => check(device, read, &decode::read_data(response)),
            // an exception reply, a protocol error, end of file: the poller's other branches
            Ok(_) => {}
            Err(_) => panic!("tokio-modbus did not finish a call on a closed pipe within 2 s"),
        }
    });
}
