//! `config`: arbitrary UTF-8 through the config compiler, as the site file (with the shipped
//! profiles), as one of the profile files of the demo site (replacing a shipped one, so its
//! rules are compiled against the demo's devices), or as a profile on its own.
//!
//! Never a panic; the answer is a site or a non-empty list of problems, each with a message.
//! A site that compiles is one the daemon can start on: its coalesced reads stay within the
//! address space and the per-read limits, serve every Modbus point exactly once, and decode a
//! well-formed reply; the live table and the /metrics families build and render.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use propwatch::config::{self, ConfigErrors, ModbusAddr, ModbusDevice, Site};
use propwatch::live::LiveTable;
use propwatch::sinks::prometheus::PointFamilies;
use propwatch::sources::modbus::config::connections;
use propwatch::sources::modbus::decode::{self, ReadData};

use super::common::{demo_site_text, pick, profile_texts};

/// An empty directory for the site file to live in: secret and plan files it names relative
/// to itself are not there.
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
}

pub fn config(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let site_path = scratch().join("site.toml");
    match sel % 3 {
        0 => outcome(config::from_texts(&site_path, text, &profile_texts())),
        1 => {
            let mut profiles = profile_texts();
            let at = pick(sel / 3, profiles.len());
            profiles[at].1 = text.to_string();
            outcome(config::from_texts(&site_path, &demo_site_text(), &profiles));
        }
        _ => match config::profile_from_str(&PathBuf::from("profiles/fuzz.toml"), text) {
            Ok(p) => {
                for &o in &p.overview {
                    assert!(o < p.points.len(), "overview index {o} out of range");
                }
            }
            Err(e) => problems(&e),
        },
    }
}

fn problems(e: &ConfigErrors) {
    assert!(!e.0.is_empty(), "refused without a problem");
    for p in &e.0 {
        assert!(!p.message.is_empty(), "a problem without a message: {p:?}");
    }
    let _ = e.to_string();
}

fn outcome(result: Result<Site, ConfigErrors>) {
    match result {
        Ok(site) => check_site(&site),
        Err(e) => problems(&e),
    }
}

fn check_site(site: &Site) {
    // the point table is the devices' points, in order
    let mut next = 0u32;
    for (di, d) in site.devices.iter().enumerate() {
        assert_eq!(d.index as usize, di);
        assert_eq!(d.first_point, next, "{}: points out of order", d.id);
        assert_eq!(d.point_count as usize, d.profile.points.len());
        next += d.point_count;
        for (k, p) in site.points_of(d).iter().enumerate() {
            assert_eq!(p.device as usize, di);
            assert_eq!(p.profile_point, k);
        }
        let conn = d
            .part::<ModbusDevice>()
            .map(|m| &connections(site)[m.connection]);
        let mut served = vec![0u32; d.profile.points.len()];
        for read in d.part::<ModbusDevice>().map_or(&[][..], |m| &m.reads[..]) {
            let limits = conn.expect("a device with reads has a connection").limits;
            let max = if read.function.is_bit_access() {
                limits.max_bits
            } else {
                limits.max_registers
            };
            assert!(
                read.count >= 1 && read.count <= max,
                "{}: read of {} at {}",
                d.id,
                read.count,
                read.start
            );
            assert!(u32::from(read.start) + u32::from(read.count) <= 65536);
            for &pi in &read.points {
                served[pi] += 1;
                let m = d.profile.points[pi]
                    .part::<ModbusAddr>()
                    .expect("a Modbus point in a read");
                let span = m.span();
                assert_eq!(span.function, read.function);
                assert!(
                    span.start >= read.start
                        && u32::from(span.start) + u32::from(span.len)
                            <= u32::from(read.start) + u32::from(read.count),
                    "{}: point {} outside its read",
                    d.id,
                    d.profile.points[pi].id
                );
                if let Some(bit) = m.bit {
                    assert!(bit < 16);
                }
            }
            let reply = if read.function.is_bit_access() {
                ReadData::Bits(vec![false; usize::from(read.count)])
            } else {
                ReadData::Words(vec![0; usize::from(read.count)])
            };
            let values = decode::decode_read(&d.profile, read, &reply)
                .unwrap_or_else(|e| panic!("{}: a well-formed reply refused: {e}", d.id));
            assert_eq!(values.len(), read.points.len());
        }
        for (pi, p) in d.profile.points.iter().enumerate() {
            let want =
                u32::from(p.part::<ModbusAddr>().is_some() && d.part::<ModbusDevice>().is_some());
            assert_eq!(
                served[pi], want,
                "{}: {} read {} times",
                d.id, p.id, served[pi]
            );
        }
    }
    assert_eq!(next as usize, site.points.len());
    let table = LiveTable::new(site);
    let families = PointFamilies::new(site);
    let mut out = String::new();
    families.render(site, &table, &mut out);
}
