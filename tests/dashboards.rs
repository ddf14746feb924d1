//! Grafana dashboards (`dashboards/`): the committed JSON is what `dashboards/generate.py`
//! writes; every dashboard refers only to the provisioned data sources and to template
//! variables it defines (or Grafana's built-ins); and every query of every panel, annotation
//! and variable returns data from real back ends fed by the demo daemon on the simulator:
//! InfluxDB 1.x receiving its writes (InfluxQL through `/query`) and Prometheus scraping its
//! /metrics every second (PromQL through `promtool query`). Variables are resolved the way
//! Grafana does it (in order, each from its own query, "All" = every value as a regex
//! alternation); the time range is the last 15 minutes (or the panel's own `timeFrom`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::services::{Influxd, Prometheus};
use common::*;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_propwatch");
const SUBJECTS: [&str; 7] = [
    "overview",
    "pump-room",
    "distribution-room",
    "elevators",
    "fire-panel",
    "alarms",
    "fleet",
];
const FLAVOURS: [&str; 2] = ["influxql", "prometheus"];
/// Time range the dashboards are evaluated over (Grafana's `now-15m` to `now`).
const RANGE: Duration = Duration::from_secs(15 * 60);
/// `$__interval` as Grafana would compute it with the provisioned minimum intervals.
const INFLUX_INTERVAL: &str = "10s";
const PROM_INTERVAL: Duration = Duration::from_secs(15);
/// `$__rate_interval`: max(interval + scrape interval, 4 x scrape interval) with the
/// provisioned 15 s scrape interval.
const PROM_RATE_INTERVAL: &str = "1m";
/// How long the queries are retried until each returns data.
const QUERY_DEADLINE: Duration = Duration::from_secs(150);
const SETUP_DEADLINE: Duration = Duration::from_secs(60);

/// Grafana's global variables a query may use without defining them.
const BUILTINS: [&str; 20] = [
    "timeFilter",
    "__timeFilter",
    "interval",
    "__interval",
    "__interval_ms",
    "__rate_interval",
    "__rate_interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
    "__from",
    "__to",
    "__all",
    "__dashboard",
    "__org",
    "__user",
    "__name",
    "__timezone",
    "__auto",
    "__auto_interval",
];

fn dashboards_dir() -> PathBuf {
    repo().join("dashboards")
}

/// (flavour, file name, dashboard) for every committed dashboard, in a fixed order.
fn dashboards() -> Vec<(&'static str, String, Value)> {
    let mut out = Vec::new();
    for flavour in FLAVOURS {
        for subject in SUBJECTS {
            let file = format!("{flavour}/{subject}.json");
            let path = dashboards_dir().join(&file);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{file} does not parse: {e}"));
            out.push((flavour, file, v));
        }
    }
    out
}

fn json_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn committed_json_is_what_the_generator_writes() {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new("python3")
        .arg(dashboards_dir().join("generate.py"))
        .arg("--out")
        .arg(out.path())
        .status()
        .expect("python3 runs dashboards/generate.py");
    assert!(status.success(), "generate.py failed");
    for flavour in FLAVOURS {
        let generated = json_files(&out.path().join(flavour));
        let committed = json_files(&dashboards_dir().join(flavour));
        let want: BTreeSet<String> = SUBJECTS.iter().map(|s| format!("{s}.json")).collect();
        assert_eq!(generated, want, "dashboards the generator writes");
        assert_eq!(
            committed, want,
            "dashboards committed in dashboards/{flavour}"
        );
        for name in &want {
            let a = std::fs::read_to_string(out.path().join(flavour).join(name)).unwrap();
            let b = std::fs::read_to_string(dashboards_dir().join(flavour).join(name)).unwrap();
            assert!(
                a == b,
                "dashboards/{flavour}/{name} differs from what generate.py writes: run `python3 dashboards/generate.py` and commit"
            );
        }
    }
}

/// uid -> type of every data source in the provisioning file.
fn provisioned_datasources() -> BTreeMap<String, String> {
    let path = dashboards_dir().join("provisioning/datasources/propwatch.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = BTreeMap::new();
    let (mut uid, mut kind): (Option<String>, Option<String>) = (None, None);
    let mut flush = |uid: &mut Option<String>, kind: &mut Option<String>| {
        if let (Some(u), Some(k)) = (uid.take(), kind.take()) {
            out.insert(u, k);
        }
    };
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') {
            continue;
        }
        if t.starts_with("- ") {
            flush(&mut uid, &mut kind);
        }
        let t = t.trim_start_matches("- ");
        if let Some(v) = t.strip_prefix("uid:") {
            uid = Some(v.trim().trim_matches('"').to_string());
        } else if let Some(v) = t.strip_prefix("type:") {
            kind = Some(v.trim().trim_matches('"').to_string());
        }
    }
    flush(&mut uid, &mut kind);
    out
}

/// Names of the template variables `q` uses: `$name`, `${name}`, `${name:format}`, `[[name]]`.
fn var_refs(q: &str) -> Vec<String> {
    let mut out = Vec::new();
    substitute_with(q, &mut |name| {
        out.push(name.to_string());
        None
    });
    out
}

/// Replace every variable reference for which `f` returns a value.
fn substitute_with(q: &str, f: &mut dyn FnMut(&str) -> Option<String>) -> String {
    let b = q.as_bytes();
    let mut out = String::with_capacity(q.len());
    let mut i = 0;
    while i < b.len() {
        let (name, end) = if b[i] == b'$' && i + 1 < b.len() && b[i + 1] == b'{' {
            match q[i + 2..].find('}') {
                Some(j) => {
                    let inner = &q[i + 2..i + 2 + j];
                    (inner.split(':').next().unwrap_or(""), i + 3 + j)
                }
                None => ("", i + 1),
            }
        } else if b[i] == b'$' {
            let n = q[i + 1..]
                .bytes()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
                .count();
            (&q[i + 1..i + 1 + n], i + 1 + n)
        } else if q[i..].starts_with("[[") {
            match q[i + 2..].find("]]") {
                Some(j) => (&q[i + 2..i + 2 + j], i + 4 + j),
                None => ("", i + 1),
            }
        } else {
            ("", i + 1)
        };
        if !name.is_empty() {
            if let Some(v) = f(name) {
                out.push_str(&v);
                i = end;
                continue;
            }
            out.push_str(&q[i..end]);
            i = end;
            continue;
        }
        let ch = q[i..].chars().next().unwrap();
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Where a query sits in a dashboard, and how Grafana runs it.
#[derive(Clone, Debug)]
struct Item {
    what: String,
    query: String,
    /// PromQL: an instant query (else a range query with `step`)
    instant: bool,
    step: Duration,
    /// the panel's own time range (`timeFrom`) or the dashboard's
    range: Duration,
}

#[derive(Clone, Debug)]
struct Var {
    name: String,
    /// `None` for a custom variable (its values are `custom`)
    query: Option<String>,
    custom: Vec<String>,
    multi: bool,
}

struct Dash {
    file: String,
    influx: bool,
    vars: Vec<Var>,
    items: Vec<Item>,
}

fn parse_duration(s: &str) -> Duration {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("duration {s:?}"));
    Duration::from_secs(match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        other => panic!("duration unit {other:?} in {s:?}"),
    })
}

fn load(flavour: &str, file: String, d: &Value) -> Dash {
    let influx = flavour == "influxql";
    let key = if influx { "query" } else { "expr" };
    let mut vars = Vec::new();
    for v in d["templating"]["list"].as_array().unwrap() {
        let custom = v["type"] == "custom";
        vars.push(Var {
            name: v["name"].as_str().unwrap().to_string(),
            query: (!custom).then(|| v["query"].as_str().unwrap().to_string()),
            custom: if custom {
                v["query"]
                    .as_str()
                    .unwrap()
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .collect()
            } else {
                Vec::new()
            },
            multi: v["multi"] == true || v["includeAll"] == true,
        });
    }
    let mut items = Vec::new();
    for a in d["annotations"]["list"].as_array().unwrap() {
        let t = &a["target"];
        items.push(Item {
            what: format!("annotation {:?}", a["name"].as_str().unwrap()),
            query: t[key].as_str().unwrap().to_string(),
            instant: false,
            step: t["interval"].as_str().map_or(PROM_INTERVAL, parse_duration),
            range: RANGE,
        });
    }
    for p in d["panels"].as_array().unwrap() {
        let range = p["timeFrom"].as_str().map_or(RANGE, parse_duration);
        for t in p["targets"].as_array().into_iter().flatten() {
            items.push(Item {
                what: format!(
                    "panel {:?} target {}",
                    p["title"].as_str().unwrap(),
                    t["refId"].as_str().unwrap_or("?")
                ),
                query: t[key].as_str().unwrap().to_string(),
                instant: t["instant"] == true,
                step: PROM_INTERVAL,
                range,
            });
        }
    }
    Dash {
        file,
        influx,
        vars,
        items,
    }
}

#[test]
fn dashboards_use_provisioned_datasources_and_defined_variables() {
    let datasources = provisioned_datasources();
    assert_eq!(
        datasources,
        BTreeMap::from([
            ("propwatch-influxql".to_string(), "influxdb".to_string()),
            ("propwatch-prometheus".to_string(), "prometheus".to_string()),
        ]),
        "data sources in provisioning/datasources/propwatch.yaml"
    );
    let providers =
        std::fs::read_to_string(dashboards_dir().join("provisioning/dashboards/propwatch.yaml"))
            .unwrap();
    for flavour in FLAVOURS {
        assert!(
            providers.contains(&format!("/{flavour}\n")),
            "a dashboard provider reads the {flavour} folder"
        );
    }
    let mut problems = Vec::new();
    let mut uids = BTreeSet::new();
    for (flavour, file, d) in dashboards() {
        let own = if flavour == "influxql" {
            "propwatch-influxql"
        } else {
            "propwatch-prometheus"
        };
        if d["schemaVersion"] != 39 {
            problems.push(format!("{file}: schemaVersion {}", d["schemaVersion"]));
        }
        if !uids.insert(d["uid"].as_str().unwrap_or("").to_string()) {
            problems.push(format!("{file}: uid {} not unique", d["uid"]));
        }
        if d.get("id").is_some_and(|id| !id.is_null()) {
            problems.push(format!("{file}: a provisioned dashboard has no id"));
        }
        // every datasource reference, wherever it is
        let mut refs = Vec::new();
        walk(&d, "", &mut |path, v| {
            if let Some(ds) = v.get("datasource") {
                refs.push((path.to_string(), ds.clone()));
            }
        });
        for (path, ds) in &refs {
            let uid = ds["uid"].as_str().unwrap_or("");
            match datasources.get(uid) {
                None => problems.push(format!("{file} {path}: datasource {ds} not provisioned")),
                Some(kind) if ds["type"] != kind.as_str() => {
                    problems.push(format!("{file} {path}: datasource {ds} is a {kind}"))
                }
                Some(_) if uid != own => {
                    problems.push(format!("{file} {path}: a {flavour} dashboard uses {uid}"))
                }
                _ => {}
            }
        }
        let defined: Vec<String> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect();
        for v in d["templating"]["list"].as_array().unwrap() {
            if v["type"] == "query" && v["datasource"]["uid"] != own {
                problems.push(format!(
                    "{file}: variable {} has no {own} datasource",
                    v["name"]
                ));
            }
        }
        for a in d["annotations"]["list"].as_array().unwrap() {
            if a["datasource"]["uid"] != own {
                problems.push(format!(
                    "{file}: annotation {} has no {own} datasource",
                    a["name"]
                ));
            }
        }
        let mut ids = BTreeSet::new();
        for p in d["panels"].as_array().unwrap() {
            let title = p["title"].as_str().unwrap_or("");
            if !ids.insert(p["id"].as_i64().unwrap_or(-1)) {
                problems.push(format!("{file}: panel id {} repeated", p["id"]));
            }
            let g = &p["gridPos"];
            if g["x"].as_i64().unwrap_or(99) + g["w"].as_i64().unwrap_or(99) > 24 {
                problems.push(format!("{file}: panel {title:?} wider than the grid"));
            }
            if p["type"] == "row" {
                continue;
            }
            if p["datasource"]["uid"] != own {
                problems.push(format!("{file}: panel {title:?} has no {own} datasource"));
            }
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            if targets.is_empty() {
                problems.push(format!("{file}: panel {title:?} has no query"));
            }
            for t in &targets {
                if t["datasource"]["uid"] != own {
                    problems.push(format!("{file}: panel {title:?} target without {own}"));
                }
                if flavour == "influxql" && t["rawQuery"] != true {
                    problems.push(format!("{file}: panel {title:?}: InfluxQL target not raw"));
                }
            }
        }
        // every variable a query uses is defined (variables: defined before it) or built in
        let dash = load(flavour, file.clone(), &d);
        let mut checks: Vec<(String, String, usize)> = dash
            .items
            .iter()
            .map(|i| (i.what.clone(), i.query.clone(), defined.len()))
            .collect();
        for (k, v) in dash.vars.iter().enumerate() {
            if let Some(q) = &v.query {
                checks.push((format!("variable {}", v.name), q.clone(), k));
            }
        }
        for (what, q, visible) in checks {
            for name in var_refs(&q) {
                if !defined[..visible].contains(&name) && !BUILTINS.contains(&name.as_str()) {
                    problems.push(format!("{file} {what}: ${name} is not a variable: {q}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn walk(v: &Value, path: &str, f: &mut dyn FnMut(&str, &serde_json::Map<String, Value>)) {
    match v {
        Value::Object(m) => {
            f(path, m);
            for (k, x) in m {
                if k != "datasource" {
                    walk(x, &format!("{path}/{k}"), f);
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                walk(x, &format!("{path}/{i}"), f);
            }
        }
        _ => {}
    }
}

#[test]
fn variable_references_are_found_and_substituted() {
    assert_eq!(
        var_refs(
            r#"SELECT x FROM m WHERE "a" =~ /^$site$/ AND ${room:regex} [[device]] $__interval $"#
        ),
        vec!["site", "room", "device", "__interval"]
    );
    let mut env = |n: &str| (n == "site").then(|| "lvyuan".to_string());
    assert_eq!(
        substitute_with(r#"{site=~"$site"} ${site} $other 楼 $"#, &mut env),
        r#"{site=~"lvyuan"} lvyuan $other 楼 $"#
    );
}

// ------------------------------------------------------------------ running the queries

/// Regex-escape a value as Grafana does before putting it in a regex (`/^...$/` in InfluxQL,
/// `=~"..."` in PromQL, where the backslash itself needs escaping inside the string).
fn regex_escape(v: &str, influx: bool) -> String {
    let mut out = String::new();
    for c in v.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push_str(if influx { "\\" } else { "\\\\" });
        }
        out.push(c);
    }
    out
}

/// The text Grafana puts in for a variable with these values.
fn format_values(var: &Var, values: &[String], influx: bool) -> String {
    if !var.multi {
        return values.first().cloned().unwrap_or_default();
    }
    let escaped: Vec<String> = values.iter().map(|v| regex_escape(v, influx)).collect();
    if escaped.len() == 1 {
        escaped[0].clone()
    } else {
        format!("({})", escaped.join("|"))
    }
}

/// Whether an InfluxDB /query reply holds a value (besides time) in some row; the error
/// message if a statement failed.
fn influx_has_data(v: &Value) -> Result<bool, String> {
    let mut any = false;
    for r in v["results"].as_array().into_iter().flatten() {
        if let Some(e) = r["error"].as_str() {
            return Err(e.to_string());
        }
        for s in r["series"].as_array().into_iter().flatten() {
            let cols = s["columns"].as_array().cloned().unwrap_or_default();
            for row in s["values"].as_array().into_iter().flatten() {
                for (c, x) in cols.iter().zip(row.as_array().into_iter().flatten()) {
                    if c != "time" && !x.is_null() {
                        any = true;
                    }
                }
            }
        }
    }
    if let Some(e) = v["error"].as_str() {
        return Err(e.to_string());
    }
    Ok(any)
}

/// Tag values from a `SHOW TAG VALUES` reply (the `value` column of every series).
fn influx_values(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in v["results"].as_array().into_iter().flatten() {
        for s in r["series"].as_array().into_iter().flatten() {
            let col = s["columns"]
                .as_array()
                .and_then(|c| c.iter().position(|x| x == "value"))
                .unwrap_or(1);
            for row in s["values"].as_array().into_iter().flatten() {
                if let Some(x) = row[col].as_str() {
                    out.insert(x.to_string());
                }
            }
        }
    }
    out
}

struct Checker<'a> {
    influx: &'a Influxd,
    prom: &'a Prometheus,
    dashes: Vec<Dash>,
    /// resolved variable values per dashboard
    values: Vec<BTreeMap<String, Vec<String>>>,
    /// (dashboard, item) still without data -> what the last try gave
    pending: BTreeMap<(usize, usize), String>,
    /// (dashboard, variable) still without values -> what the last try gave
    pending_vars: BTreeMap<(usize, usize), String>,
}

impl Checker<'_> {
    fn builtins(influx: bool, item: Option<&Item>) -> BTreeMap<&'static str, String> {
        let range = item.map_or(RANGE, |i| i.range).as_secs();
        let mut b = BTreeMap::new();
        if influx {
            let tf = format!("time > now() - {range}s");
            b.insert("timeFilter", tf.clone());
            b.insert("__timeFilter", tf);
            b.insert("__interval", INFLUX_INTERVAL.to_string());
            b.insert("interval", INFLUX_INTERVAL.to_string());
        } else {
            b.insert("__interval", format!("{}s", PROM_INTERVAL.as_secs()));
            b.insert("__rate_interval", PROM_RATE_INTERVAL.to_string());
            b.insert("__range", format!("{range}s"));
            b.insert("__range_s", range.to_string());
            b.insert("__range_ms", (range * 1000).to_string());
        }
        b
    }

    /// `q` with the dashboard's variables (as resolved so far; "match anything" for those
    /// not yet resolved) and the built-ins filled in.
    fn substitute(&self, d: usize, q: &str, item: Option<&Item>) -> String {
        let dash = &self.dashes[d];
        let builtins = Self::builtins(dash.influx, item);
        substitute_with(q, &mut |name| {
            if let Some(var) = dash.vars.iter().find(|v| v.name == name) {
                return Some(match self.values[d].get(name) {
                    Some(vals) => format_values(var, vals, dash.influx),
                    None => ".*".to_string(),
                });
            }
            builtins.get(name).cloned()
        })
    }

    /// Run `q` (already substituted): Ok(true) if it returned data.
    async fn run(&self, influx: bool, q: &str, item: &Item) -> Result<bool, String> {
        if influx {
            let v = self.influx.try_query("propwatch", q).await?;
            influx_has_data(&v)
        } else if item.instant {
            Ok(!self.prom.instant(q).await?.is_empty())
        } else {
            let m = self.prom.range(q, item.range, item.step).await?;
            Ok(m.iter()
                .any(|s| s["values"].as_array().is_some_and(|v| !v.is_empty())))
        }
    }

    /// A variable's values: SHOW TAG VALUES for InfluxQL; for Grafana's
    /// `label_values(selector, label)` the selector run by promtool, and the label's values.
    async fn resolve(&self, d: usize, k: usize) -> Result<Vec<String>, String> {
        let dash = &self.dashes[d];
        let var = &dash.vars[k];
        let Some(q) = &var.query else {
            return Ok(var.custom.clone());
        };
        let q = self.substitute(d, q, None);
        let values: BTreeSet<String> = if dash.influx {
            let v = self.influx.try_query("propwatch", &q).await?;
            influx_has_data(&v).map_err(|e| format!("{e}: {q}"))?;
            influx_values(&v)
        } else {
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| format!("not label_values(selector, label): {q}"))?;
            let (selector, label) = inner
                .rsplit_once(',')
                .ok_or_else(|| format!("label_values without a selector: {q}"))?;
            let label = label.trim();
            let series = self.prom.instant(selector.trim()).await?;
            if series.is_empty() {
                return Err(format!("no series: {selector}"));
            }
            let vals: BTreeSet<String> = series
                .iter()
                .filter_map(|s| s["metric"][label].as_str().map(str::to_string))
                .collect();
            if vals.is_empty() {
                return Err(format!("label {label} absent from {selector}"));
            }
            vals
        };
        if values.is_empty() {
            return Err(format!("no values: {q}"));
        }
        Ok(values.into_iter().collect())
    }

    /// One pass: resolve the variables still open, run the queries still without data.
    async fn round(&mut self) {
        for d in 0..self.dashes.len() {
            for k in 0..self.dashes[d].vars.len() {
                if !self.pending_vars.contains_key(&(d, k)) {
                    continue;
                }
                match self.resolve(d, k).await {
                    Ok(vals) => {
                        let name = self.dashes[d].vars[k].name.clone();
                        self.values[d].insert(name, vals);
                        self.pending_vars.remove(&(d, k));
                    }
                    Err(e) => {
                        self.pending_vars.insert((d, k), e);
                    }
                }
            }
        }
        let keys: Vec<(usize, usize)> = self.pending.keys().copied().collect();
        for (d, i) in keys {
            let item = self.dashes[d].items[i].clone();
            let q = self.substitute(d, &item.query, Some(&item));
            match self.run(self.dashes[d].influx, &q, &item).await {
                Ok(true) => {
                    self.pending.remove(&(d, i));
                }
                Ok(false) => {
                    self.pending.insert((d, i), format!("no data: {q}"));
                }
                Err(e) => {
                    self.pending.insert((d, i), format!("error: {e}: {q}"));
                }
            }
        }
    }

    fn done(&self) -> bool {
        self.pending.is_empty() && self.pending_vars.is_empty()
    }

    fn report(&self) -> Vec<String> {
        let mut out = Vec::new();
        for ((d, k), why) in &self.pending_vars {
            let dash = &self.dashes[*d];
            out.push(format!(
                "{} · variable {}: {why}",
                dash.file, dash.vars[*k].name
            ));
        }
        for ((d, i), why) in &self.pending {
            let dash = &self.dashes[*d];
            out.push(format!("{} · {}: {why}", dash.file, dash.items[*i].what));
        }
        out
    }
}

/// The demo site (config/demo.toml) on ports it binds itself, writing to InfluxDB, its state
/// store in `dir`; returns the config path.
fn demo_with_influx(dir: &Path, influx_url: &str) -> PathBuf {
    demo_site(
        dir,
        &format!(
            "\n[influx]\napi = \"v1\"\nurl = \"{influx_url}\"\ndatabase = \"propwatch\"\nbatch_max_interval_ms = 200\nspool_dir = \"{}\"\n",
            dir.join("spool").display()
        ),
    )
    .path
}

const TOKEN: &str = "dashboards-operator-token-0123456789";

/// Acknowledge the estate's open fire incident and record the arrival on site.
async fn respond_to_fire(http: u16) {
    let base = format!("http://127.0.0.1:{http}/api/v1/incidents");
    let id = wait_for("the fire incident", SETUP_DEADLINE, || async {
        let list: Value = common::client()
            .get(&base)
            .bearer_auth(TOKEN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        list.as_array()?.iter().find(|i| i["plan"] == "fire")?["id"].as_i64()
    })
    .await;
    for step in ["ack", "arrive"] {
        let r = common::client()
            .post(format!("{base}/{id}/{step}"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"by": "值班员"}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{step}: {}", r.status());
    }
}

async fn scenario(sim_http: u16, path: &str) {
    let r = common::client()
        .post(format!("http://127.0.0.1:{sim_http}/scenarios/{path}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "scenario {path}: {}", r.status());
}

async fn wait_metric(addr: std::net::SocketAddr, what: &str, ok: impl Fn(&Metrics) -> bool) {
    wait_for(what, SETUP_DEADLINE, || async {
        let m = metrics(addr).await?;
        ok(&m).then_some(())
    })
    .await;
}

/// The demo estate runs for a few minutes through a power outage (cleared again), then an
/// entrapment, a fire and a flooded pump room, so that every panel has something to show;
/// then every query of every dashboard is run until it returns data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_from_influxdb_and_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["influxdb", "prometheus", "site"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let influx = Influxd::start(&dir.path().join("influxdb")).await;
    influx.query("", "CREATE DATABASE propwatch").await;
    // two estates into one InfluxDB and one Prometheus (the fleet dashboards compare them):
    // the demo, and the demo again as "lvyuan-east"
    let start = |sub: &'static str, site: &'static str| {
        let d = dir.path().join(sub);
        let config = demo_with_influx(&d, &influx.url());
        if site != "lvyuan" {
            let text = std::fs::read_to_string(&config).unwrap();
            assert!(text.contains("id = \"lvyuan\""));
            std::fs::write(
                &config,
                text.replacen("id = \"lvyuan\"", &format!("id = \"{site}\""), 1),
            )
            .unwrap();
        }
        let mut cmd = Command::new(BIN);
        cmd.args(["demo", "--config"])
            .arg(&config)
            .arg("--state-dir")
            .arg(d.join("state"))
            .env("PROPWATCH_DEMO_TOKEN", TOKEN);
        async move {
            spawn_daemon(
                cmd,
                &d.join("ports.json"),
                &d.join("daemon.log"),
                SETUP_DEADLINE,
            )
            .await
        }
    };
    std::fs::create_dir_all(dir.path().join("east")).unwrap();
    let (_daemon, ports) = start("site", "lvyuan").await;
    let (_east, east_ports) = start("east", "lvyuan-east").await;
    let (http, sim_http) = (ports.http(), ports.sim());
    let prom = Prometheus::start(
        &dir.path().join("prometheus"),
        &[
            format!("127.0.0.1:{http}"),
            format!("127.0.0.1:{}", east_ports.http()),
        ],
        Duration::from_secs(1),
    )
    .await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    wait_metric(addr, "every demo device online", |m| {
        let n = m.0.get("propwatch_device_up").map_or(0, Vec::len);
        n >= 10 && m.sum("propwatch_device_up", &[]) == n as f64
    })
    .await;

    // 停电: the outage incident opens and the ATS goes to the generator; then power is back
    scenario(sim_http, "power_outage").await;
    wait_metric(addr, "the outage incident and the generator", |m| {
        m.get("propwatch_incidents_open", &[("plan", "power_outage")]) >= Some(1.0)
            && m.get("propwatch_alarm_active", &[("rule", "ats_generator")]) == Some(1.0)
    })
    .await;
    let r = common::client()
        .delete(format!(
            "http://127.0.0.1:{sim_http}/scenarios/power_outage"
        ))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    wait_metric(addr, "mains back", |m| {
        m.get("propwatch_point_value", &[("point", "ats_mains")]) == Some(1.0)
    })
    .await;
    // 困人, 火警, 水浸
    scenario(sim_http, "entrapment?device=lift-3-2").await;
    scenario(sim_http, "fire").await;
    scenario(sim_http, "flooding").await;
    wait_metric(addr, "entrapment, fire and flooding incidents", |m| {
        ["entrapment", "fire", "flooding"]
            .iter()
            .all(|p| m.get("propwatch_incidents_open", &[("plan", p)]) >= Some(1.0))
    })
    .await;
    // the duty rooms respond: a fire at each estate acknowledged and attended (the fleet's
    // response times); the entrapment stays unacknowledged until its limit is overdue
    scenario(east_ports.sim(), "fire").await;
    for h in [http, east_ports.http()] {
        respond_to_fire(h).await;
    }

    let dashes: Vec<Dash> = dashboards()
        .into_iter()
        .map(|(flavour, file, d)| load(flavour, file, &d))
        .collect();
    let mut checker = Checker {
        influx: &influx,
        prom: &prom,
        values: dashes.iter().map(|_| BTreeMap::new()).collect(),
        pending: BTreeMap::new(),
        pending_vars: BTreeMap::new(),
        dashes,
    };
    let (mut influx_queries, mut prom_queries) = (0, 0);
    for (d, dash) in checker.dashes.iter().enumerate() {
        let n = dash.items.len() + dash.vars.iter().filter(|v| v.query.is_some()).count();
        if dash.influx {
            influx_queries += n;
        } else {
            prom_queries += n;
        }
        for i in 0..dash.items.len() {
            checker.pending.insert((d, i), "not run".into());
        }
        for k in 0..dash.vars.len() {
            checker.pending_vars.insert((d, k), "not run".into());
        }
    }
    let checker = tokio::sync::Mutex::new(checker);
    let give_up = tokio::time::Instant::now() + QUERY_DEADLINE;
    let failures = wait_for(
        "every dashboard query tried until it returns data",
        QUERY_DEADLINE + Duration::from_secs(120),
        || async {
            let mut c = checker.lock().await;
            c.round().await;
            (c.done() || tokio::time::Instant::now() >= give_up).then(|| c.report())
        },
    )
    .await;
    assert!(
        failures.is_empty(),
        "{} of {} dashboard queries returned no data:\n{}",
        failures.len(),
        influx_queries + prom_queries,
        failures.join("\n")
    );
    eprintln!(
        "every dashboard query returned data: {influx_queries} InfluxQL queries against InfluxDB, {prom_queries} PromQL queries through promtool against Prometheus"
    );
    // the fleet dashboards saw both estates, in both flavours
    let sites = prom
        .instant("count by (site) (propwatch_incident_response_seconds_count{stage=\"arrive\"})")
        .await
        .unwrap();
    assert_eq!(sites.len(), 2, "both estates' response times: {sites:?}");
    let v = influx
        .query(
            "propwatch",
            "SELECT mean(\"seconds\") FROM \"alarm_events\" WHERE \"kind\" = 'incident_acked' GROUP BY \"site\"",
        )
        .await;
    let series = v["results"][0]["series"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        series.len(),
        2,
        "both estates' acknowledgements in InfluxDB: {v}"
    );
}
