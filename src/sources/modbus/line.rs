//! The floor of an RTU line's poll cycle: how long the wire itself needs to carry one poll of
//! every device on it, for `check-config`. Device turnaround (the time a device takes to start
//! answering) is device-specific and not included, so a real cycle is always longer.

use std::time::Duration;

use super::plan::{Function, Read};
use crate::config::{Connection, Transport};

/// Bytes of an RTU request for FC1-4: unit id, function, start (2), count (2), CRC (2).
pub const RTU_REQUEST_BYTES: u32 = 8;

/// Bytes of an RTU reply to a read of `count` registers or bits: unit id, function, byte
/// count, the data, CRC (2).
pub fn rtu_reply_bytes(function: Function, count: u16) -> u32 {
    let data = if function.is_bit_access() {
        u32::from(count).div_ceil(8)
    } else {
        2 * u32::from(count)
    };
    5 + data
}

/// Bits per character on the line: start + data + parity + stop bits. A serial connection
/// has its configured framing; RTU over TCP assumes 8E1 (11 bits), the Modbus default.
pub fn bits_per_char(conn: &Connection) -> u32 {
    match &conn.transport {
        Transport::Rtu(s) => {
            let parity = u32::from(s.parity != crate::config::Parity::None);
            1 + u32::from(s.data_bits) + parity + u32::from(s.stop_bits)
        }
        _ => 11,
    }
}

/// The line's baud rate: the serial settings', or the configured `baud_rate` of RTU over TCP.
pub fn baud_rate(conn: &Connection) -> u32 {
    match &conn.transport {
        Transport::Rtu(s) => s.baud_rate,
        _ => conn.baud_rate,
    }
}

/// The least time one full poll cycle (every device polled once) takes on an RTU line.
#[derive(Debug, Clone, PartialEq)]
pub struct CycleFloor {
    pub baud: u32,
    pub bits_per_char: u32,
    /// Transactions (planned reads) in one cycle.
    pub transactions: usize,
    /// Request + reply bytes of all of them.
    pub frame_bytes: u64,
    /// The frames on the wire.
    pub frames: Duration,
    /// The 3.5-character silence before each request.
    pub silence: Duration,
    /// The configured `inter_request_delay` before each request.
    pub delay: Duration,
    /// The share of the line the devices' poll intervals ask for: the sum over devices of
    /// (its own floor / its poll interval). Above 1.0 the bus cannot keep up.
    pub load: f64,
    /// The shortest poll interval of the devices on the line.
    pub shortest_interval: Option<Duration>,
}

impl CycleFloor {
    pub fn total(&self) -> Duration {
        self.frames + self.silence + self.delay
    }

    /// One line for `check-config`.
    pub fn describe(&self, conn: &Connection, devices: usize) -> String {
        let n = self.transactions.max(1) as u32;
        format!(
            "connection {:?} ({}, {} baud, {}-bit characters): one poll of its {devices} device(s) takes at least {} on the line: {} transaction(s), {} frame bytes ({}), {} x {:.2} ms silence, {} x {} ms inter_request_delay; device turnaround not included; the poll intervals ask for {:.0} % of the line",
            conn.id,
            conn.transport.kind(),
            self.baud,
            self.bits_per_char,
            ms(self.total()),
            self.transactions,
            self.frame_bytes,
            ms(self.frames),
            self.transactions,
            (self.silence / n).as_secs_f64() * 1e3,
            self.transactions,
            conn.inter_request_delay.as_millis(),
            self.load * 100.0,
        )
    }

    /// A warning when the devices' poll intervals ask for more than the line can carry. With
    /// one poll interval for every device this is when it is shorter than the full cycle.
    pub fn warning(&self, conn: &Connection) -> Option<String> {
        (self.load > 1.0).then(|| {
            format!(
                "connection {:?}: the poll intervals of its devices ask for {:.0} % of the line (shortest {} ms; one poll of every device takes at least {}): the bus cannot keep up; lengthen poll_interval_ms, raise the baud rate or split the line",
                conn.id,
                self.load * 100.0,
                self.shortest_interval.unwrap_or_default().as_millis(),
                ms(self.total()),
            )
        })
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// The floor of one full poll cycle on `conn`, given each device's planned reads and poll
/// interval. `None` for a connection without RTU framing (Modbus TCP has no line to model).
///
/// Each transaction costs its request and reply frames at `bits_per_char / baud` a character,
/// plus the silence and inter-request delay the poller keeps before every request
/// (`super::rtu_silence`: 3.5 characters, fixed at 1.75 ms above 19200 baud).
pub fn cycle_floor<'a>(
    conn: &Connection,
    devices: impl IntoIterator<Item = (&'a [Read], Duration)>,
) -> Option<CycleFloor> {
    if !conn.transport.is_rtu() {
        return None;
    }
    let baud = baud_rate(conn).max(1);
    let bits = bits_per_char(conn);
    let char_time = f64::from(bits) / f64::from(baud);
    let gap = super::rtu_silence(conn) + conn.inter_request_delay;
    let mut floor = CycleFloor {
        baud,
        bits_per_char: bits,
        transactions: 0,
        frame_bytes: 0,
        frames: Duration::ZERO,
        silence: Duration::ZERO,
        delay: Duration::ZERO,
        load: 0.0,
        shortest_interval: None,
    };
    for (reads, interval) in devices {
        let bytes: u64 = reads
            .iter()
            .map(|r| u64::from(RTU_REQUEST_BYTES + rtu_reply_bytes(r.function, r.count)))
            .sum();
        let n = reads.len();
        let device_time = bytes as f64 * char_time + gap.as_secs_f64() * n as f64;
        floor.transactions += n;
        floor.frame_bytes += bytes;
        if !interval.is_zero() {
            floor.load += device_time / interval.as_secs_f64();
        }
        floor.shortest_interval = Some(
            floor
                .shortest_interval
                .map_or(interval, |s| s.min(interval)),
        );
    }
    let n = floor.transactions as u32;
    floor.frames = Duration::from_secs_f64(floor.frame_bytes as f64 * char_time);
    floor.silence = super::rtu_silence(conn) * n;
    floor.delay = conn.inter_request_delay * n;
    Some(floor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Parity;
    use crate::sources::modbus::config::test_fixtures::{conn, serial};

    fn over_tcp() -> Transport {
        Transport::RtuOverTcp {
            address: "x:1".into(),
        }
    }

    fn read(function: Function, count: u16) -> Read {
        Read {
            function,
            start: 0,
            count,
            points: vec![],
        }
    }

    /// The CHNT DTSU666 plan: 20 registers, then three reads of 2.
    fn dtsu666() -> Vec<Read> {
        vec![
            read(Function::HoldingRegisters, 20),
            read(Function::HoldingRegisters, 2),
            read(Function::HoldingRegisters, 2),
            read(Function::HoldingRegisters, 2),
        ]
    }

    fn assert_micros(got: Duration, want: u128, what: &str) {
        assert!(
            got.as_micros().abs_diff(want) <= 1,
            "{what}: {} us, expected {want}",
            got.as_micros()
        );
    }

    #[test]
    fn reply_bytes_per_function() {
        assert_eq!(rtu_reply_bytes(Function::HoldingRegisters, 1), 7);
        assert_eq!(rtu_reply_bytes(Function::InputRegisters, 125), 255);
        assert_eq!(rtu_reply_bytes(Function::Coils, 1), 6);
        assert_eq!(rtu_reply_bytes(Function::Coils, 8), 6);
        assert_eq!(rtu_reply_bytes(Function::DiscreteInputs, 9), 7);
        assert_eq!(rtu_reply_bytes(Function::Coils, 2000), 255);
    }

    #[test]
    fn bits_per_char_follow_the_framing() {
        assert_eq!(
            bits_per_char(&conn(serial(9600, Parity::None, 1), 9600, 0)),
            10
        );
        assert_eq!(
            bits_per_char(&conn(serial(9600, Parity::Even, 1), 9600, 0)),
            11
        );
        assert_eq!(
            bits_per_char(&conn(serial(9600, Parity::Odd, 1), 9600, 0)),
            11
        );
        assert_eq!(
            bits_per_char(&conn(serial(9600, Parity::None, 2), 9600, 0)),
            11
        );
        assert_eq!(bits_per_char(&conn(over_tcp(), 9600, 0)), 11);
    }

    #[test]
    fn ten_meters_on_one_line_at_9600_8e1() {
        // Per meter: 4 requests of 8 bytes; replies 5+40, 5+4, 5+4, 5+4 = 72 bytes; 104 bytes.
        // 10 meters: 40 transactions, 1040 bytes x 11 bits / 9600 = 1191.667 ms; silence
        // 40 x 3.5 x 11 / 9600 = 40 x 4.0104 ms = 160.417 ms; total 1352.083 ms.
        let c = conn(over_tcp(), 9600, 0);
        let reads = dtsu666();
        let devices = (0..10).map(|_| (reads.as_slice(), Duration::from_secs(1)));
        let f = cycle_floor(&c, devices).unwrap();
        assert_eq!((f.baud, f.bits_per_char), (9600, 11));
        assert_eq!(f.transactions, 40);
        assert_eq!(f.frame_bytes, 1040);
        assert_micros(f.frames, 1_191_667, "frames");
        assert_micros(f.silence, 160_417, "silence");
        assert_eq!(f.delay, Duration::ZERO);
        assert_micros(f.total(), 1_352_083, "total");
        // at 1 s each, the ten meters ask for 135.2 % of the line
        assert!((f.load - 1.352083).abs() < 1e-5, "load {}", f.load);
        assert_eq!(f.shortest_interval, Some(Duration::from_secs(1)));
    }

    #[test]
    fn serial_8n1_with_an_inter_request_delay() {
        // One bench-40 device (64 registers, 18 coils): requests 16 bytes, replies 133 + 8;
        // 157 bytes x 10 bits / 19200 = 81.771 ms; silence 2 x 3.5 x 10 / 19200 = 3.646 ms;
        // delay 2 x 5 ms = 10 ms; total 95.417 ms. At 100 ms: 95.4 % of the line.
        let c = conn(serial(19200, Parity::None, 1), 19200, 5);
        let reads = [
            read(Function::HoldingRegisters, 64),
            read(Function::Coils, 18),
        ];
        let f = cycle_floor(&c, [(&reads[..], Duration::from_millis(100))]).unwrap();
        assert_eq!(f.bits_per_char, 10);
        assert_eq!((f.transactions, f.frame_bytes), (2, 157));
        assert_micros(f.frames, 81_771, "frames");
        assert_micros(f.silence, 3_646, "silence");
        assert_eq!(f.delay, Duration::from_millis(10));
        assert_micros(f.total(), 95_417, "total");
        assert!((f.load - 0.95417).abs() < 1e-5, "load {}", f.load);
    }

    #[test]
    fn fast_lines_keep_the_fixed_silence_and_load_weighs_each_interval() {
        // 115200 baud 8E1: one FC03 of 2 registers = 17 bytes x 11 / 115200 = 1.623 ms, plus
        // the fixed 1.75 ms silence = 3.373 ms. One device at 10 ms, one at 1 s: the line is
        // 33.7 % + 0.34 % loaded although the 10 ms device polls faster than a full cycle.
        let c = conn(over_tcp(), 115_200, 0);
        let reads = [read(Function::HoldingRegisters, 2)];
        let f = cycle_floor(
            &c,
            [
                (&reads[..], Duration::from_millis(10)),
                (&reads[..], Duration::from_secs(1)),
            ],
        )
        .unwrap();
        assert_micros(f.silence, 3_500, "silence");
        assert_micros(f.total(), 6_746, "total");
        assert!((f.load - 0.340_69).abs() < 1e-4, "load {}", f.load);
        assert_eq!(f.shortest_interval, Some(Duration::from_millis(10)));
    }

    #[test]
    fn check_config_line_and_warning() {
        let c = conn(over_tcp(), 9600, 0);
        let reads = dtsu666();
        let slow = (0..10).map(|_| (reads.as_slice(), Duration::from_secs(2)));
        let f = cycle_floor(&c, slow).unwrap();
        assert_eq!(
            f.describe(&c, 10),
            "connection \"c\" (rtu_over_tcp, 9600 baud, 11-bit characters): one poll of its 10 \
             device(s) takes at least 1352.1 ms on the line: 40 transaction(s), 1040 frame bytes \
             (1191.7 ms), 40 x 4.01 ms silence, 40 x 0 ms inter_request_delay; device \
             turnaround not included; the poll intervals ask for 68 % of the line"
        );
        assert_eq!(f.warning(&c), None);
        let fast = (0..10).map(|_| (reads.as_slice(), Duration::from_secs(1)));
        let w = cycle_floor(&c, fast).unwrap().warning(&c).unwrap();
        assert!(w.contains("ask for 135 % of the line (shortest 1000 ms; one poll of every device takes at least 1352.1 ms): the bus cannot keep up"), "{w}");
    }

    #[test]
    fn tcp_has_no_line() {
        let c = conn(
            Transport::Tcp {
                address: "x:1".into(),
            },
            9600,
            0,
        );
        assert_eq!(cycle_floor(&c, []), None);
    }

    #[test]
    fn an_empty_line_costs_nothing() {
        let f = cycle_floor(&conn(over_tcp(), 9600, 0), []).unwrap();
        assert_eq!(
            (f.transactions, f.total(), f.load),
            (0, Duration::ZERO, 0.0)
        );
        assert_eq!(f.shortest_interval, None);
    }
}
