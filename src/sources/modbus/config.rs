//! The Modbus side of the configuration: how a connection reaches its devices
//! ([`Transport`]: TCP, RTU over TCP, a serial line) and where a profile point's value is
//! ([`ModbusAddr`]), with the checks of a Modbus profile's points. The site compiler
//! (`config`) calls [`point_source`] for every point of a Modbus profile.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::codec::{ByteOrder, DataType};
use super::plan::{self, Block, Function, Limits, Read, Span};
use crate::config::{
    valid_id, Part, PointSource, Problems, Profile, ProfilePoint, Site, ValueKind, ID_RULE,
};
use crate::model::DeviceId;

/// One Modbus connection: a TCP endpoint, an RS-485 serial bus, or a serial device server
/// carrying RTU frames over TCP. One request at a time travels on a connection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionCfg {
    pub id: String,
    /// `tcp`, `rtu` or `rtu_over_tcp`.
    pub transport: String,
    /// `host:port` for `tcp` and `rtu_over_tcp`.
    #[serde(default)]
    pub address: Option<String>,
    /// Serial device path for `rtu`, e.g. `/dev/ttyUSB0`.
    #[serde(default)]
    pub serial_port: Option<String>,
    #[serde(default = "default_baud_rate")]
    pub baud_rate: u32,
    /// `none`, `even` or `odd`.
    #[serde(default = "default_parity")]
    pub parity: String,
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Deadline for one request/response.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Extra attempts for a read that timed out, for a device that was healthy until then.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Pause after each transaction, on top of the RTU 3.5-character silence (slow devices,
    /// shared buses).
    #[serde(default)]
    pub inter_request_delay_ms: u64,
    #[serde(default = "default_reconnect_backoff_max_ms")]
    pub reconnect_backoff_max_ms: u64,
    /// Longest pause between probes of a device that stopped answering: a device that comes
    /// back is seen online within this (plus one poll).
    #[serde(default = "default_device_backoff_max_ms")]
    pub device_backoff_max_ms: u64,
    /// Unused registers a coalesced read may span to join two points.
    #[serde(default = "default_max_gap_registers")]
    pub max_gap_registers: u16,
    /// Unused coils/inputs a coalesced read may span to join two points.
    #[serde(default = "default_max_gap_bits")]
    pub max_gap_bits: u16,
    #[serde(default = "default_max_registers_per_read")]
    pub max_registers_per_read: u16,
    #[serde(default = "default_max_bits_per_read")]
    pub max_bits_per_read: u16,
}

fn default_baud_rate() -> u32 {
    9600
}
fn default_parity() -> String {
    "none".to_string()
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}
fn default_timeout_ms() -> u64 {
    1000
}
fn default_connect_timeout_ms() -> u64 {
    3000
}
fn default_retries() -> u32 {
    1
}
fn default_reconnect_backoff_max_ms() -> u64 {
    30_000
}
fn default_device_backoff_max_ms() -> u64 {
    15_000
}
fn default_max_gap_registers() -> u16 {
    10
}
fn default_max_gap_bits() -> u16 {
    64
}
fn default_max_registers_per_read() -> u16 {
    125
}
fn default_max_bits_per_read() -> u16 {
    2000
}

#[derive(Debug, Clone)]
pub struct Connection {
    pub id: String,
    pub transport: Transport,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub retries: u32,
    pub inter_request_delay: Duration,
    /// Baud rate of the RS-485 line behind the connection, for the 3.5-character silence
    /// (serial settings for `rtu`, the configured `baud_rate` for `rtu_over_tcp`).
    pub baud_rate: u32,
    pub reconnect_backoff_max: Duration,
    pub device_backoff_max: Duration,
    pub limits: Limits,
    pub devices: Vec<DeviceId>,
}

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

/// A Modbus profile's own keys: `[[blocks]]`, and in `[profile]` the default byte order and
/// tighter read limits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileKeys {
    #[serde(default)]
    blocks: Vec<BlockCfg>,
    /// Default byte/word order of multi-register values: ABCD, CDAB, BADC or DCBA.
    #[serde(default = "default_byte_order")]
    byte_order: String,
    /// Tighter per-read limits for devices that cannot serve full-size reads.
    #[serde(default)]
    max_registers_per_read: Option<u16>,
    #[serde(default)]
    max_bits_per_read: Option<u16>,
}

fn default_byte_order() -> String {
    "ABCD".to_string()
}

/// An address range a read may cover. When a profile declares blocks for a function code,
/// reads stay inside one block: for devices that reject reads across undefined addresses.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockCfg {
    pub function: i64,
    pub start: i64,
    pub count: i64,
}

/// What a Modbus profile adds to a profile (its `Part`).
#[derive(Debug, Clone)]
pub struct ModbusProfile {
    pub blocks: Vec<Block>,
    pub default_order: ByteOrder,
    pub max_registers_per_read: Option<u16>,
    pub max_bits_per_read: Option<u16>,
}

/// The Modbus part of a profile: its blocks, byte order and read limits, checked.
pub(crate) fn profile(
    ctx: &crate::sources::ProfileCtx<'_>,
    own: toml::Table,
    problems: &mut Problems,
) -> Option<Part> {
    let file = ctx.file;
    let keys: ProfileKeys = crate::sources::typed(own, file, "profile", problems)?;
    let default_order = ByteOrder::parse(&keys.byte_order).unwrap_or_else(|| {
        problems.add(
            file,
            "profile.byte_order",
            format!(
                "unknown byte order {:?}; use ABCD, CDAB, BADC or DCBA",
                keys.byte_order
            ),
        );
        ByteOrder::Abcd
    });
    if keys
        .max_registers_per_read
        .is_some_and(|n| n == 0 || n > 125)
    {
        problems.add(file, "profile.max_registers_per_read", "must be 1..=125");
    }
    if keys.max_bits_per_read.is_some_and(|n| n == 0 || n > 2000) {
        problems.add(file, "profile.max_bits_per_read", "must be 1..=2000");
    }
    let blocks = blocks(file, &keys.blocks, problems);
    Some(Part::new(
        super::SPEC.name,
        ModbusProfile {
            blocks,
            default_order,
            max_registers_per_read: keys.max_registers_per_read,
            max_bits_per_read: keys.max_bits_per_read,
        },
    ))
}

/// A Modbus point's own keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PointKeys {
    /// Function code used to read it: 1 coils, 2 discrete inputs, 3 holding registers, 4
    /// input registers.
    #[serde(default)]
    function: Option<i64>,
    #[serde(default)]
    address: Option<i64>,
    /// Overrides the profile's byte order.
    #[serde(default)]
    byte_order: Option<String>,
    /// Bit 0..15 of a register, for `bool` points read with function 3 or 4.
    #[serde(default)]
    bit: Option<i64>,
}

/// A point of a Modbus profile: function, address, type, byte order, bit; checked against
/// the points before it (overlaps) and the profile's blocks.
pub(crate) fn point_source(
    own: toml::Table,
    ctx: &crate::sources::PointCtx<'_>,
    problems: &mut Problems,
) -> Option<PointSource> {
    let (file, key, earlier) = (ctx.file, ctx.key, ctx.earlier);
    let pt: PointKeys = crate::sources::typed(own, file, key, problems)?;
    let profile = ctx.profile.and_then(Part::get::<ModbusProfile>);
    let default_order = profile.map_or(ByteOrder::Abcd, |p| p.default_order);
    let blocks: &[Block] = profile.map_or(&[], |p| &p.blocks);
    let before = problems.list.len();
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
    let data_type = DataType::parse(ctx.data_type);
    if data_type.is_none() {
        problems.add(
            file,
            format!("{key}.type"),
            format!(
                "unknown type {:?}; use bool, u16, i16, u32, i32, u64, i64, f32 or f64",
                ctx.data_type
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
    let span = addr.span();
    check_overlaps(file, key, &addr, earlier, problems);
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
    (problems.list.len() == before).then(|| PointSource {
        kind: if data_type == DataType::Bool {
            ValueKind::Bool
        } else {
            ValueKind::Number
        },
        part: Part::new(super::SPEC.name, addr),
    })
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

/// The site's `[[connections]]`: each checked (transport and its settings, timeouts, retries,
/// read limits), and an index by id for the devices that name one. Problems are reported at
/// `connections[i].<key>`; a connection with problems is still returned, so that its devices
/// are checked too.
pub(crate) fn compile_connections(
    file: &Path,
    cfgs: &[ConnectionCfg],
    problems: &mut Problems,
) -> (Vec<Connection>, HashMap<String, usize>) {
    let mut connections: Vec<Connection> = Vec::new();
    let mut conn_index: HashMap<String, usize> = HashMap::new();
    for (i, c) in cfgs.iter().enumerate() {
        let key = format!("connections[{i}]");
        if !valid_id(&c.id) {
            problems.add(file, format!("{key}.id"), format!("{:?} {ID_RULE}", c.id));
        } else if conn_index.contains_key(c.id.as_str()) {
            problems.add(
                file,
                format!("{key}.id"),
                format!("duplicate connection id {:?}", c.id),
            );
        }
        let transport = compile_transport(file, &key, c, problems);
        if c.baud_rate < 300 || c.baud_rate > 4_000_000 {
            problems.add(
                file,
                format!("{key}.baud_rate"),
                format!("{} is not a plausible baud rate", c.baud_rate),
            );
        }
        if c.timeout_ms == 0 || c.timeout_ms > 60_000 {
            problems.add(file, format!("{key}.timeout_ms"), "must be 1..=60000");
        }
        if c.connect_timeout_ms == 0 || c.connect_timeout_ms > 60_000 {
            problems.add(
                file,
                format!("{key}.connect_timeout_ms"),
                "must be 1..=60000",
            );
        }
        if c.retries > 5 {
            problems.add(
                file,
                format!("{key}.retries"),
                "more than 5 retries stalls a bus; use 0..=5",
            );
        }
        if c.max_registers_per_read == 0 || c.max_registers_per_read > 125 {
            problems.add(
                file,
                format!("{key}.max_registers_per_read"),
                "must be 1..=125",
            );
        }
        if c.max_bits_per_read == 0 || c.max_bits_per_read > 2000 {
            problems.add(file, format!("{key}.max_bits_per_read"), "must be 1..=2000");
        }
        conn_index.entry(c.id.clone()).or_insert(connections.len());
        connections.push(Connection {
            id: c.id.clone(),
            transport,
            timeout: Duration::from_millis(c.timeout_ms),
            connect_timeout: Duration::from_millis(c.connect_timeout_ms),
            retries: c.retries,
            inter_request_delay: Duration::from_millis(c.inter_request_delay_ms),
            baud_rate: c.baud_rate,
            reconnect_backoff_max: Duration::from_millis(c.reconnect_backoff_max_ms.max(100)),
            device_backoff_max: Duration::from_millis(c.device_backoff_max_ms.max(100)),
            limits: Limits {
                max_registers: c.max_registers_per_read,
                max_bits: c.max_bits_per_read,
                max_gap_registers: c.max_gap_registers,
                max_gap_bits: c.max_gap_bits,
            },
            devices: Vec::new(),
        });
    }
    (connections, conn_index)
}

/// The Modbus sections of a site file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteKeys {
    #[serde(default)]
    connections: Vec<ConnectionCfg>,
}

/// The Modbus part of a site: its connections, each listing its devices.
#[derive(Debug, Clone, Default)]
pub struct ModbusSite {
    pub connections: Vec<Connection>,
}

/// The site's Modbus connections (none when it has no Modbus part).
pub fn connections(site: &Site) -> &[Connection] {
    site.sources
        .get::<ModbusSite>()
        .map_or(&[], |m| &m.connections)
}

/// The site's Modbus connections, to change before the site is shared (the simulator binds
/// port-0 addresses).
pub fn connections_mut(site: &mut Site) -> Option<&mut Vec<Connection>> {
    site.sources
        .get_mut::<ModbusSite>()
        .map(|m| &mut m.connections)
}

/// The site's `[[connections]]` into the Modbus linker.
pub(crate) fn site(
    ctx: &crate::sources::SiteCtx<'_>,
    own: toml::Table,
    problems: &mut Problems,
) -> Box<dyn crate::sources::Linker> {
    let keys = crate::sources::typed::<SiteKeys>(own, ctx.file, "connections", problems);
    let cfgs = keys.map_or_else(Vec::new, |k| k.connections);
    Box::new(Devices::new(ctx.file, &cfgs, problems))
}

/// TCP connections on port 0: something the simulator (or the demo) may bind, but no
/// device a daemon can poll.
pub(crate) fn unbound(site: &Site) -> Vec<String> {
    connections(site)
        .iter()
        .filter(|c| match &c.transport {
            Transport::Tcp { address } | Transport::RtuOverTcp { address } => {
                address.ends_with(":0")
            }
            Transport::Rtu(_) => false,
        })
        .map(|c| c.id.clone())
        .collect()
}

/// A Modbus device's own keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceKeys {
    /// The connection the device hangs on.
    #[serde(default)]
    connection: Option<String>,
    /// Modbus unit (slave) id.
    #[serde(default = "default_unit_id")]
    unit_id: i64,
}

fn default_unit_id() -> i64 {
    1
}

impl crate::sources::Linker for Devices {
    fn link(
        &mut self,
        ctx: &crate::sources::DeviceCtx<'_>,
        own: toml::Table,
        problems: &mut Problems,
    ) -> Option<Part> {
        let keys: DeviceKeys = crate::sources::typed(own, ctx.file, ctx.key, problems)?;
        let at = self.check(ctx.file, ctx.key, &keys, ctx.cfg.enabled, problems)?;
        let (Some(index), Some(profile)) = (ctx.index, ctx.profile) else {
            return None;
        };
        Some(Part::new(super::SPEC.name, self.link(at, profile, index)))
    }

    fn finish(self: Box<Self>) -> Option<Part> {
        Some(Part::new(
            super::SPEC.name,
            ModbusSite {
                connections: self.connections,
            },
        ))
    }
}

/// What a Modbus device adds to a device: where it hangs and what is read from it.
#[derive(Debug, Clone)]
pub struct ModbusDevice {
    /// Index in `Site::connections`.
    pub connection: usize,
    pub unit_id: u8,
    /// The coalesced reads; `Read::points` index the profile's points. Shared by the devices
    /// of one profile on connections with the same limits.
    pub reads: Arc<[Read]>,
}

/// The Modbus side of the site's devices, while the site compiles: the connections, the
/// unit ids taken on each and the read plans made so far.
pub(crate) struct Devices {
    connections: Vec<Connection>,
    index: HashMap<String, usize>,
    units: HashMap<(usize, u8), String>,
    plans: HashMap<(String, Limits), Arc<[Read]>>,
}

impl Devices {
    pub(crate) fn new(file: &Path, cfgs: &[ConnectionCfg], problems: &mut Problems) -> Self {
        let (connections, index) = compile_connections(file, cfgs, problems);
        Devices {
            connections,
            index,
            units: HashMap::new(),
            plans: HashMap::new(),
        }
    }

    /// Check a Modbus device's connection and unit id (problems at `key`): its connection
    /// index and unit id, or None when either is wrong. A disabled device is checked but
    /// takes no unit id.
    fn check(
        &mut self,
        file: &Path,
        key: &str,
        d: &DeviceKeys,
        enabled: bool,
        problems: &mut Problems,
    ) -> Option<(usize, u8)> {
        let connection = match &d.connection {
            Some(c) => match self.index.get(c.as_str()) {
                Some(&ci) => Some(ci),
                None => {
                    problems.add(
                        file,
                        format!("{key}.connection"),
                        format!("unknown connection {c:?}"),
                    );
                    None
                }
            },
            None => {
                problems.add(
                    file,
                    format!("{key}.connection"),
                    "a Modbus device needs a connection",
                );
                None
            }
        };
        let unit_range = match connection.map(|ci| &self.connections[ci].transport) {
            Some(Transport::Tcp { .. }) => 0..=255,
            _ => 1..=247,
        };
        let mut unit_ok = true;
        if !unit_range.contains(&d.unit_id) {
            unit_ok = false;
            problems.add(
                file,
                format!("{key}.unit_id"),
                format!(
                    "unit id {} out of range {}..={} for this transport",
                    d.unit_id,
                    unit_range.start(),
                    unit_range.end()
                ),
            );
        }
        let unit_id = d.unit_id.clamp(0, 255) as u8;
        let ci = connection?;
        if enabled {
            if let Some(other) = self.units.get(&(ci, unit_id)) {
                problems.add(
                    file,
                    format!("{key}.unit_id"),
                    format!(
                        "unit id {unit_id} is already used on connection {:?} by {other}",
                        self.connections[ci].id
                    ),
                );
                unit_ok = false;
            } else {
                self.units.insert((ci, unit_id), key.to_string());
            }
        }
        unit_ok.then_some((ci, unit_id))
    }

    /// The Modbus part of device `index` of `profile`, checked by [`Devices::check`]: its
    /// reads planned within the connection's and the profile's limits (one plan per profile
    /// and limits), and the device listed on its connection.
    fn link(
        &mut self,
        (connection, unit_id): (usize, u8),
        profile: &Profile,
        index: DeviceId,
    ) -> ModbusDevice {
        let limits = self.connections[connection].limits;
        let own = profile.part.get::<ModbusProfile>();
        let limits = Limits {
            max_registers: own
                .and_then(|p| p.max_registers_per_read)
                .map_or(limits.max_registers, |m| m.min(limits.max_registers)),
            max_bits: own
                .and_then(|p| p.max_bits_per_read)
                .map_or(limits.max_bits, |m| m.min(limits.max_bits)),
            ..limits
        };
        let reads = self
            .plans
            .entry((profile.id.clone(), limits))
            .or_insert_with(|| plan_profile(profile, &limits))
            .clone();
        self.connections[connection].devices.push(index);
        ModbusDevice {
            connection,
            unit_id,
            reads,
        }
    }
}

/// The reads of one profile within `limits`; `Read::points` index the profile's points.
fn plan_profile(profile: &Profile, limits: &Limits) -> Arc<[Read]> {
    let (point_of_span, spans): (Vec<usize>, Vec<Span>) = profile
        .points
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.part::<ModbusAddr>().map(|m| (i, m.span())))
        .unzip();
    let blocks = profile
        .part
        .get::<ModbusProfile>()
        .map_or(&[][..], |m| &m.blocks);
    let mut reads = plan::plan(&spans, blocks, limits);
    for r in &mut reads {
        for p in &mut r.points {
            *p = point_of_span[*p];
        }
    }
    reads.into()
}

/// A connection's transport and its settings (`key` is `connections[i]`): an address for
/// TCP and RTU over TCP, a serial port with parity, data and stop bits for RTU.
fn compile_transport(
    file: &Path,
    key: &str,
    c: &ConnectionCfg,
    problems: &mut Problems,
) -> Transport {
    let address = |problems: &mut Problems| -> String {
        match &c.address {
            Some(a)
                // port 0: only for the simulator and the demo, which bind it themselves
                // (`propwatch run` refuses it: see `Site::unbound_connections`)
                if a.rsplit_once(':').is_some_and(|(h, p)| {
                    !h.is_empty() && p.parse::<u16>().is_ok()
                }) =>
            {
                a.clone()
            }
            Some(a) => {
                problems.add(
                    file,
                    format!("{key}.address"),
                    format!("{a:?} is not host:port"),
                );
                String::new()
            }
            None => {
                problems.add(
                    file,
                    format!("{key}.address"),
                    format!("transport {:?} needs address = \"host:port\"", c.transport),
                );
                String::new()
            }
        }
    };
    match c.transport.as_str() {
        "tcp" => Transport::Tcp {
            address: address(problems),
        },
        "rtu_over_tcp" => Transport::RtuOverTcp {
            address: address(problems),
        },
        "rtu" => {
            let parity = match c.parity.as_str() {
                "none" => Parity::None,
                "even" => Parity::Even,
                "odd" => Parity::Odd,
                other => {
                    problems.add(
                        file,
                        format!("{key}.parity"),
                        format!("{other:?} is not none, even or odd"),
                    );
                    Parity::None
                }
            };
            if !matches!(c.data_bits, 7 | 8) {
                problems.add(file, format!("{key}.data_bits"), "must be 7 or 8");
            }
            if !matches!(c.stop_bits, 1 | 2) {
                problems.add(file, format!("{key}.stop_bits"), "must be 1 or 2");
            }
            let port = c.serial_port.clone().unwrap_or_else(|| {
                problems.add(
                    file,
                    format!("{key}.serial_port"),
                    "transport \"rtu\" needs serial_port",
                );
                String::new()
            });
            Transport::Rtu(SerialSettings {
                port,
                baud_rate: c.baud_rate,
                parity,
                data_bits: c.data_bits,
                stop_bits: c.stop_bits,
            })
        }
        other => {
            problems.add(
                file,
                format!("{key}.transport"),
                format!("{other:?} is not tcp, rtu or rtu_over_tcp"),
            );
            Transport::Tcp {
                address: String::new(),
            }
        }
    }
}

/// A point's registers or bits against the points before it: only different bits of one
/// register may share it.
fn check_overlaps(
    file: &Path,
    key: &str,
    addr: &ModbusAddr,
    earlier: &[ProfilePoint],
    problems: &mut Problems,
) {
    let span = addr.span();
    for other in earlier {
        let Some(om) = other.part::<ModbusAddr>() else {
            continue;
        };
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
}

/// A connection and a serial line for the Modbus unit tests (line timing, RTU silence).
#[cfg(test)]
pub(crate) mod test_fixtures {
    use std::time::Duration;

    use super::{Connection, Parity, SerialSettings, Transport};

    /// A connection of `transport` at `baud_rate` with `delay_ms` between requests.
    pub(crate) fn conn(transport: Transport, baud_rate: u32, delay_ms: u64) -> Connection {
        Connection {
            id: "c".into(),
            transport,
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            retries: 0,
            inter_request_delay: Duration::from_millis(delay_ms),
            baud_rate,
            reconnect_backoff_max: Duration::from_secs(1),
            device_backoff_max: Duration::from_secs(1),
            limits: Default::default(),
            devices: vec![],
        }
    }

    /// An RS-485 line with 8 data bits.
    pub(crate) fn serial(baud_rate: u32, parity: Parity, stop_bits: u8) -> Transport {
        Transport::Rtu(SerialSettings {
            port: "/dev/null".into(),
            baud_rate,
            parity,
            data_bits: 8,
            stop_bits,
        })
    }
}
