//! What every target shares: a reader that turns fuzz bytes into choices, the shipped
//! configuration (compiled once per process), a profile with every Modbus type and byte order,
//! TOML string quoting and the tokio runtime.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use propwatch::config::{self, Site};

/// Fuzz bytes as a sequence of choices; past the end every read is zero / empty, so any input
/// is a complete program.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let head = self.bytes(N);
        out[..head.len()].copy_from_slice(head);
        out
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.array())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.array())
    }

    pub fn f64(&mut self) -> f64 {
        f64::from_bits(self.u64())
    }

    /// A string of at most `max` bytes: a length byte, then that many bytes (lossy UTF-8).
    pub fn short_str(&mut self, max: usize) -> String {
        let n = usize::from(self.u8()).min(max);
        String::from_utf8_lossy(self.bytes(n)).into_owned()
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        let all = self.data;
        self.data = &[];
        all
    }
}

/// Index `i` into a collection of `len` (> 0) elements.
pub fn pick(i: impl Into<usize>, len: usize) -> usize {
    i.into() % len
}

/// The shipped profiles, embedded (the same files `propwatch demo` embeds).
pub const SHIPPED_PROFILES: [(&str, &str); 6] = [
    (
        "chnt-dtsu666.toml",
        include_str!("../../config/profiles/chnt-dtsu666.toml"),
    ),
    (
        "gb26875-fire-panel.toml",
        include_str!("../../config/profiles/gb26875-fire-panel.toml"),
    ),
    (
        "mqtt-lift-terminal.toml",
        include_str!("../../config/profiles/mqtt-lift-terminal.toml"),
    ),
    (
        "sim-elevator.toml",
        include_str!("../../config/profiles/sim-elevator.toml"),
    ),
    (
        "sim-pump-room.toml",
        include_str!("../../config/profiles/sim-pump-room.toml"),
    ),
    (
        "sim-switchgear.toml",
        include_str!("../../config/profiles/sim-switchgear.toml"),
    ),
];

pub const DEMO_SITE: &str = include_str!("../../config/demo.toml");

/// A Modbus profile with every data type in every byte order, bits of a register (0 and 15),
/// coils and discrete inputs at both ends of the address space, scales that overflow to
/// infinity and a decimal scale with an offset.
pub fn all_types_profile() -> String {
    let mut s = String::from(
        "[profile]\nid = \"fuzz-all-types\"\nname = \"every type and byte order\"\nkind = \"fuzz_types\"\n",
    );
    let mut address = 0u32;
    let point = |s: &mut String, id: &str, body: &str| {
        s.push_str(&format!("[[points]]\nid = \"{id}\"\n{body}\n"));
    };
    for ty in ["u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64"] {
        let words = match ty {
            "u16" | "i16" => 1,
            "u32" | "i32" | "f32" => 2,
            _ => 4,
        };
        for order in ["ABCD", "CDAB", "BADC", "DCBA"] {
            point(
                &mut s,
                &format!("hr_{ty}_{order}"),
                &format!(
                    "function = 3\naddress = {address}\ntype = \"{ty}\"\nbyte_order = \"{order}\""
                ),
            );
            address += words;
        }
    }
    point(
        &mut s,
        "hr_bit0",
        &format!("function = 3\naddress = {address}\ntype = \"bool\"\nbit = 0"),
    );
    point(
        &mut s,
        "hr_bit15",
        &format!("function = 3\naddress = {address}\ntype = \"bool\"\nbit = 15"),
    );
    point(
        &mut s,
        "ir_f32_huge",
        "function = 4\naddress = 0\ntype = \"f32\"\nscale = 1e300",
    );
    point(
        &mut s,
        "ir_u64_huge",
        "function = 4\naddress = 2\ntype = \"u64\"\nscale = 1e300",
    );
    point(
        &mut s,
        "ir_i16_scaled",
        "function = 4\naddress = 6\ntype = \"i16\"\nscale = 0.1\noffset = -40.0",
    );
    point(
        &mut s,
        "ir_f64_top",
        "function = 4\naddress = 65532\ntype = \"f64\"\nbyte_order = \"DCBA\"",
    );
    point(
        &mut s,
        "coil_0",
        "function = 1\naddress = 0\ntype = \"bool\"",
    );
    point(
        &mut s,
        "coil_7",
        "function = 1\naddress = 7\ntype = \"bool\"",
    );
    point(
        &mut s,
        "coil_8",
        "function = 1\naddress = 8\ntype = \"bool\"",
    );
    point(
        &mut s,
        "coil_far",
        "function = 1\naddress = 1990\ntype = \"bool\"",
    );
    point(
        &mut s,
        "di_top",
        "function = 2\naddress = 65535\ntype = \"bool\"",
    );
    s
}

/// The demo site plus one device of [`all_types_profile`] carrying tags that need escaping.
pub fn demo_site_text() -> String {
    let mut s = DEMO_SITE.to_string();
    s.push_str(
        "\n[[rooms]]\nid = \"fuzz-room\"\nname = \"fuzz 机房, a=b\"\n\n[[rooms.devices]]\n\
         id = \"fuzz-1\"\nprofile = \"fuzz-all-types\"\nconnection = \"pump-room-plc\"\nunit_id = 9\n\
         tags = { \"楼栋\" = \"3 栋,东\", \"a=b\" = \"x\\\"y\", \"sp ace\" = \"a b=c, d\" }\n",
    );
    s
}

pub fn profile_texts() -> Vec<(PathBuf, String)> {
    let mut v: Vec<(PathBuf, String)> = SHIPPED_PROFILES
        .iter()
        .map(|(name, text)| (PathBuf::from("profiles").join(name), text.to_string()))
        .collect();
    v.push((
        PathBuf::from("profiles/fuzz-all-types.toml"),
        all_types_profile(),
    ));
    v
}

/// The demo site compiled once per process through the config compiler (no file is read).
pub fn demo_site() -> Arc<Site> {
    static SITE: OnceLock<Arc<Site>> = OnceLock::new();
    SITE.get_or_init(|| {
        let site = config::from_texts(
            Path::new("/nonexistent/propwatch-fuzz/site.toml"),
            &demo_site_text(),
            &profile_texts(),
        )
        .unwrap_or_else(|e| panic!("the fuzz fixture site does not compile:\n{e}"));
        Arc::new(site)
    })
    .clone()
}

/// `s` as a TOML basic string, quotes included.
pub fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One current-thread runtime per process (a runtime per input would cost more than the
/// input).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}
