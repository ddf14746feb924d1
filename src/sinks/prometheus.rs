//! Prometheus exposition of point values: one gauge family per unit, named with the unit
//! (`propwatch_point_volts`, `propwatch_point_megapascals`, ...), labelled
//! site/room/device/point. Written as text straight from the live table at scrape time: no
//! per-point metric objects, and no per-scrape allocation per label (measured: building
//! protobuf families for 20k points cost ~15 MiB per scrape). Points without a good value
//! are left out (stale, not zero).
//! Unit names avoid the non-base units `promtool check metrics` rejects (hours, milligrams):
//! kWh is `kilowatthours`, mg/L is `grams_per_cubic_meter` (numerically identical).

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::config::Site;
use crate::live::LiveTable;
use crate::model::{PointId, Quality};

/// Metric-name suffix for a unit string as written in profiles.
pub fn unit_suffix(unit: Option<&str>) -> String {
    let Some(unit) = unit else {
        return "value".to_string();
    };
    let known = match unit.trim() {
        "" => "value",
        "V" => "volts",
        "kV" => "kilovolts",
        "A" => "amperes",
        "W" => "watts",
        "kW" => "kilowatts",
        "kvar" | "kVar" => "kilovars",
        "kVA" => "kilovoltamperes",
        "kWh" => "kilowatthours",
        "Hz" => "hertz",
        "MPa" => "megapascals",
        "kPa" => "kilopascals",
        "bar" => "bars",
        "m" => "meters",
        "mm" => "millimeters",
        "m/s" => "meters_per_second",
        "m3/h" | "m³/h" => "cubic_meters_per_hour",
        "m3" | "m³" => "cubic_meters",
        "degC" | "°C" | "℃" => "celsius",
        "%" => "percent",
        "%RH" => "percent_relative_humidity",
        // 1 mg/L is exactly 1 g/m3: a base unit promtool accepts, same number
        "mg/L" => "grams_per_cubic_meter",
        "NTU" => "ntu",
        "s" => "seconds",
        "h" => "hours",
        "floor" => "floor",
        other => {
            let s: String = other
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_lowercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            let s = s.trim_matches('_').to_string();
            return if s.is_empty() { "value".to_string() } else { s };
        }
    };
    known.to_string()
}

pub fn point_metric_name(unit: Option<&str>) -> String {
    format!("propwatch_point_{}", unit_suffix(unit))
}

/// The point gauge families of a site, grouped once at startup: which points go under which
/// unit-named metric. Rendering then writes text directly, without building a metric object
/// (and four owned label strings) per point on every scrape.
pub struct PointFamilies {
    families: Vec<(String, Vec<PointId>)>,
}

impl PointFamilies {
    pub fn new(site: &Site) -> Self {
        let mut by_name: BTreeMap<String, Vec<PointId>> = BTreeMap::new();
        for p in &site.points {
            let device = &site.devices[p.device as usize];
            let unit = device.profile.points[p.profile_point].unit.as_deref();
            by_name
                .entry(point_metric_name(unit))
                .or_default()
                .push(p.index);
        }
        Self {
            families: by_name.into_iter().collect(),
        }
    }

    /// Append the text exposition of every point with a good value.
    pub fn render(&self, site: &Site, table: &LiveTable, out: &mut String) {
        let mut at = Some(Cursor::default());
        while let Some(c) = at {
            at = self.render_chunk(site, table, c, usize::MAX, out);
        }
    }

    /// Append the exposition of up to `max` points from `at` (a family's HELP and TYPE lines
    /// where it starts), under one read lock of the live table; where to go on, `None` when
    /// every family is done. `/metrics` streams its body in such chunks, so a scrape of a
    /// large estate never holds the whole text (about 10 MB at 100,000 points) in memory.
    pub fn render_chunk(
        &self,
        site: &Site,
        table: &LiveTable,
        at: Cursor,
        max: usize,
        out: &mut String,
    ) -> Option<Cursor> {
        table.with_points(|states| {
            let mut c = at;
            let mut n = 0;
            while let Some((name, points)) = self.families.get(c.family) {
                if n == max {
                    return Some(c); // before a family's header, not between it and its points
                }
                if c.pos == 0 {
                    let _ = writeln!(
                        out,
                        "# HELP {name} Point values in the unit the metric name gives."
                    );
                    let _ = writeln!(out, "# TYPE {name} gauge");
                }
                while let Some(&pi) = points.get(c.pos) {
                    if n == max {
                        return Some(c);
                    }
                    c.pos += 1;
                    n += 1;
                    let Some(state) = states.get(pi as usize) else {
                        continue;
                    };
                    let (Quality::Good, Some(value)) = (state.quality, state.value) else {
                        continue;
                    };
                    let p = &site.points[pi as usize];
                    let device = &site.devices[p.device as usize];
                    out.push_str(name);
                    out.push_str("{device=\"");
                    escape_label(&device.id, out);
                    out.push_str("\",point=\"");
                    escape_label(&p.id, out);
                    if let Some(r) = &site.region {
                        out.push_str("\",region=\"");
                        escape_label(r, out);
                    }
                    out.push_str("\",room=\"");
                    escape_label(&site.rooms[device.room].id, out);
                    out.push_str("\",site=\"");
                    escape_label(&site.id, out);
                    let _ = writeln!(out, "\"}} {}", value.as_f64());
                }
                c = Cursor {
                    family: c.family + 1,
                    pos: 0,
                };
            }
            None
        })
    }
}

/// Where a chunked render of the point families goes on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    family: usize,
    pos: usize,
}

/// Label-value escaping of the text exposition format: backslash, double quote, newline.
fn escape_label(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The daemon's own metrics (the registry), the head of `/metrics`.
pub fn render_registry(registry: &prometheus::Registry) -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    if let Err(e) = prometheus::TextEncoder::new().encode(&registry.gather(), &mut buf) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// The full /metrics text in one string: the daemon's own metrics and every point.
pub fn render(
    site: &Site,
    points: &PointFamilies,
    table: &LiveTable,
    registry: &prometheus::Registry,
) -> String {
    let mut out = render_registry(registry);
    out.reserve(site.points.len() * 96);
    points.render(site, table, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        escape_label("a\\b\"c\nd", &mut out);
        assert_eq!(out, "a\\\\b\\\"c\\nd");
    }

    #[test]
    fn unit_names() {
        for (unit, name) in [
            (None, "propwatch_point_value"),
            (Some("V"), "propwatch_point_volts"),
            (Some("MPa"), "propwatch_point_megapascals"),
            (Some("degC"), "propwatch_point_celsius"),
            (Some("%RH"), "propwatch_point_percent_relative_humidity"),
            (Some("m/s"), "propwatch_point_meters_per_second"),
            (Some("kWh"), "propwatch_point_kilowatthours"),
            (Some("mg/L"), "propwatch_point_grams_per_cubic_meter"),
            (Some("μS/cm"), "propwatch_point_s_cm"),
            (Some("度"), "propwatch_point_value"),
        ] {
            assert_eq!(point_metric_name(unit), name, "{unit:?}");
        }
    }

    /// `/metrics` streams the points in chunks: the chunks put together are exactly the text
    /// rendered at once, whatever the chunk size, with points without a good value left out.
    #[test]
    fn chunks_put_together_are_the_whole_text() {
        let dir = tempfile::tempdir().unwrap();
        let profile = r#"
[profile]
id = "t"
name = "t"
kind = "test"

[[points]]
id = "ua"
function = 3
address = 0
type = "u16"
unit = "V"

[[points]]
id = "ub"
function = 3
address = 1
type = "u16"
unit = "V"

[[points]]
id = "run"
function = 1
address = 0
type = "bool"

[[points]]
id = "p"
function = 3
address = 2
type = "u16"
unit = "MPa"
"#;
        let mut site = String::from(
            "[site]\nid = \"s\"\nname = \"s\"\n\n[[connections]]\nid = \"c\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:1502\"\n\n[[rooms]]\nid = \"r\"\nname = \"r\"\nkind = \"other\"\n",
        );
        for d in 1..=3 {
            site.push_str(&format!(
                "\n[[rooms.devices]]\nid = \"d{d}\"\nprofile = \"t\"\nconnection = \"c\"\nunit_id = {d}\n"
            ));
        }
        let site = crate::config::from_texts(
            &dir.path().join("site.toml"),
            &site,
            &[(dir.path().join("profiles/t.toml"), profile.to_string())],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let table = LiveTable::new(&site);
        for p in 0..site.points.len() as u32 {
            if p % 5 != 3 {
                // every fifth point from the fourth on has no value
                table.set_point(
                    p,
                    Some(crate::model::Value::Num(f64::from(p) + 0.5)),
                    Quality::Good,
                    std::time::SystemTime::now(),
                );
            }
        }
        let families = PointFamilies::new(&site);
        let mut whole = String::new();
        families.render(&site, &table, &mut whole);
        assert_eq!(whole.matches(" gauge\n").count(), 3, "{whole}");
        assert_eq!(
            whole.lines().filter(|l| !l.starts_with('#')).count(),
            site.points.len() - 2,
            "{whole}"
        );
        for max in [1, 2, 3, 5, 7, 1000] {
            let mut chunks = Vec::new();
            let mut at = Some(Cursor::default());
            while let Some(c) = at {
                let mut out = String::new();
                at = families.render_chunk(&site, &table, c, max, &mut out);
                assert!(
                    at.is_none() || out.lines().filter(|l| !l.starts_with('#')).count() <= max,
                    "max {max}: {out}"
                );
                chunks.push(out);
            }
            assert_eq!(chunks.concat(), whole, "max {max}");
        }
    }
}
