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
        table.with_points(|states| {
            for (name, points) in &self.families {
                let _ = writeln!(
                    out,
                    "# HELP {name} Point values in the unit the metric name gives."
                );
                let _ = writeln!(out, "# TYPE {name} gauge");
                for &pi in points {
                    let state = states[pi as usize];
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
                    out.push_str("\",room=\"");
                    escape_label(&site.rooms[device.room].id, out);
                    out.push_str("\",site=\"");
                    escape_label(&site.id, out);
                    let _ = writeln!(out, "\"}} {}", value.as_f64());
                }
            }
        });
    }
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

/// The full /metrics text: the daemon's own metrics and every point.
pub fn render(
    site: &Site,
    points: &PointFamilies,
    table: &LiveTable,
    registry: &prometheus::Registry,
) -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    if let Err(e) = prometheus::TextEncoder::new().encode(&registry.gather(), &mut buf) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    let mut out = String::from_utf8(buf).unwrap_or_default();
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
}
