//! Prometheus exposition of point values: one gauge family per unit, named with the unit
//! (`propwatch_point_volts`, `propwatch_point_megapascals`, ...), labelled
//! site/room/device/point. Built from the live table at scrape time, so 100k points cost no
//! per-point metric objects. Points without a good value are left out (stale, not zero).
//! Unit names avoid the non-base units `promtool check metrics` rejects (hours, milligrams):
//! kWh is `kilowatthours`, mg/L is `grams_per_cubic_meter` (numerically identical).

use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};

use crate::config::Site;
use crate::live::LiveTable;
use crate::model::Quality;

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

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_string());
    l.set_value(value.to_string());
    l
}

/// Gauge families for every point with a good value.
pub fn point_families(site: &Site, table: &LiveTable) -> Vec<MetricFamily> {
    let mut families: std::collections::BTreeMap<String, Vec<Metric>> = Default::default();
    table.with_points(|states| {
        for p in &site.points {
            let state = states[p.index as usize];
            let (Quality::Good, Some(value)) = (state.quality, state.value) else {
                continue;
            };
            let device = &site.devices[p.device as usize];
            let pp = &device.profile.points[p.profile_point];
            let mut g = Gauge::default();
            g.set_value(value.as_f64());
            let mut m = Metric::default();
            m.set_label(vec![
                label("device", &device.id),
                label("point", &p.id),
                label("room", &site.rooms[device.room].id),
                label("site", &site.id),
            ]);
            m.set_gauge(g);
            families
                .entry(point_metric_name(pp.unit.as_deref()))
                .or_default()
                .push(m);
        }
    });
    families
        .into_iter()
        .map(|(name, metrics)| {
            let mut f = MetricFamily::default();
            f.set_help(format!(
                "Point values measured in the unit named by the metric ({name})."
            ));
            f.set_name(name);
            f.set_field_type(MetricType::GAUGE);
            f.set_metric(metrics);
            f
        })
        .collect()
}

/// The full /metrics text: the daemon's own metrics and every point.
pub fn render(site: &Site, table: &LiveTable, registry: &prometheus::Registry) -> String {
    use prometheus::Encoder;
    let mut families = registry.gather();
    families.extend(point_families(site, table));
    let mut buf = Vec::new();
    if let Err(e) = prometheus::TextEncoder::new().encode(&families, &mut buf) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    String::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

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
