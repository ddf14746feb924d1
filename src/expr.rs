//! Rule expressions, compiled and evaluated: a leaf module that the site compiler (dry runs
//! of every rule) and the alarm engine both use. Evaluating compiled rule expressions: an [`evalexpr::Context`] over the engine's current
//! values (`#<point>`, `@<device>`), plus the functions rules may call:
//!
//! | function | meaning |
//! |---|---|
//! | `fall_pct("p", secs)` | drop of `p` from its highest value within `secs`, in % of that value |
//! | `rise_pct("p", secs)` | rise of `p` above its lowest value within `secs`, in % |
//! | `delta("p", secs)` | current value minus the oldest value within `secs` |
//! | `slope("p", secs)` | least-squares slope of `p` over `secs`, per second |
//! | `trend("p", secs)` | the current rate of `p`, per second: the least-squares slope since its present rise or fall began (the last time within `secs` it was near its highest value, when falling, or its lowest, when rising), so a flat stretch before a fall does not dilute it |
//! | `trend_secs("p", secs)` | how many seconds of samples `trend` fitted |
//! | `time_to("p", target, secs)` | seconds until `p` reaches `target` at its `trend`; unknown when it is not moving towards it |
//! | `age("p")` | seconds since `p` last had a good sample |
//! | `count(a, b, ...)` | how many of the arguments are true |
//! | `hour()` | the site's local hour of day, 0-23 |
//!
//! Missing data (a point never read, bad quality, too little history) makes the evaluation
//! `Unknown`: the alarm holds its state instead of deciding on nothing.

use std::collections::{HashMap, VecDeque};

use evalexpr::error::EvalexprResultValue;
use evalexpr::{Context, DefaultNumericTypes, EvalexprError, EvalexprResult, Value as EValue};

use crate::model::Value;

/// A compiled rule expression: point names already replaced by `#<point index>` and device
/// names by `@<device index>` (the site compiler does it, `config::alarms`).
pub type Expr = evalexpr::Node<DefaultNumericTypes>;

/// Recent good samples of the points some rule reads the history of.
#[derive(Debug, Default)]
pub struct History {
    series: HashMap<u32, VecDeque<(i64, f64)>>,
    keep_ms: i64,
}

impl History {
    pub fn new(points: impl IntoIterator<Item = u32>, keep_ms: i64) -> Self {
        Self {
            series: points.into_iter().map(|p| (p, VecDeque::new())).collect(),
            keep_ms,
        }
    }

    pub fn tracks(&self, point: u32) -> bool {
        self.series.contains_key(&point)
    }

    /// Record a sample taken at `at_ms` (ignored if not newer than the last one).
    pub fn push(&mut self, point: u32, at_ms: i64, v: f64) {
        let Some(s) = self.series.get_mut(&point) else {
            return;
        };
        if s.back().is_some_and(|(t, _)| *t >= at_ms) || !v.is_finite() {
            return;
        }
        s.push_back((at_ms, v));
        while s.front().is_some_and(|(t, _)| *t < at_ms - self.keep_ms) {
            s.pop_front();
        }
    }

    fn window(&self, point: u32, now_ms: i64, secs: f64) -> impl Iterator<Item = (i64, f64)> + '_ {
        let from = now_ms - (secs * 1000.0) as i64;
        self.series
            .get(&point)
            .into_iter()
            .flat_map(move |s| s.iter().copied().filter(move |(t, _)| *t >= from))
    }
}

/// Least-squares slope of the samples, per second; `None` for fewer than two distinct times.
fn least_squares(w: &[(i64, f64)]) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let n = w.len() as f64;
    let t0 = w[0].0;
    let xs: Vec<f64> = w.iter().map(|(t, _)| (t - t0) as f64 / 1000.0).collect();
    let mx = xs.iter().sum::<f64>() / n;
    let my = w.iter().map(|(_, v)| v).sum::<f64>() / n;
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = xs
        .iter()
        .zip(w)
        .map(|(x, (_, y))| (x - mx) * (y - my))
        .sum();
    Some(sxy / sxx)
}

/// Where the present rise or fall began: falling (the value nearer its lowest than its
/// highest), the last sample within a tenth of the drop of the highest; rising, the same from
/// the lowest. A flat series starts at its first sample.
fn trend_start(w: &[(i64, f64)]) -> usize {
    let Some(&(_, cur)) = w.last() else {
        return 0;
    };
    let max = w.iter().map(|(_, v)| *v).fold(f64::MIN, f64::max);
    let min = w.iter().map(|(_, v)| *v).fold(f64::MAX, f64::min);
    if max - min <= 0.0 {
        return 0;
    }
    let start = if max - cur >= cur - min {
        let near = max - (max - cur) * 0.1;
        w.iter().rposition(|(_, v)| *v >= near)
    } else {
        let near = min + (cur - min) * 0.1;
        w.iter().rposition(|(_, v)| *v <= near)
    };
    // at least two samples to fit
    start.unwrap_or(0).min(w.len().saturating_sub(2))
}

/// The outcome of evaluating a condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    True,
    False,
    /// Missing data: hold the alarm's state.
    Unknown,
    /// The rule itself is wrong at run time (e.g. comparing a bool with a number).
    Error(String),
}

pub fn to_evalue(v: Value, is_enum: bool) -> EValue {
    match v {
        Value::Bool(b) => EValue::Boolean(b),
        Value::Num(x) if is_enum && x.fract() == 0.0 && x.abs() < 9e15 => EValue::Int(x as i64),
        Value::Num(x) => EValue::Float(x),
    }
}

pub struct EvalCtx<'a> {
    pub points: &'a [Option<EValue>],
    pub online: &'a [Option<EValue>],
    pub last_good_ms: &'a [Option<i64>],
    pub history: &'a History,
    pub now_ms: i64,
    pub start_ms: i64,
    pub utc_offset_seconds: i32,
}

const NO_DATA: &str = "no data";

/// Whether an evaluation failed only for missing data (the value is unknown, not wrong).
pub fn is_no_data(e: &EvalexprError) -> bool {
    matches!(e, EvalexprError::CustomMessage(m) if m == NO_DATA)
}

fn no_data<T>() -> EvalexprResult<T, DefaultNumericTypes> {
    Err(EvalexprError::CustomMessage(NO_DATA.into()))
}

fn point_ref(v: &EValue) -> EvalexprResult<u32, DefaultNumericTypes> {
    match v {
        EValue::String(s) => s
            .strip_prefix('#')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| EvalexprError::CustomMessage(format!("not a point: {s}"))),
        other => Err(EvalexprError::CustomMessage(format!(
            "expected a quoted point name, got {other}"
        ))),
    }
}

fn args(v: &EValue) -> Vec<EValue> {
    match v {
        EValue::Tuple(t) => t.clone(),
        EValue::Empty => Vec::new(),
        other => vec![other.clone()],
    }
}

impl EvalCtx<'_> {
    fn history_fn(
        &self,
        name: &str,
        argument: &EValue,
    ) -> EvalexprResultValue<DefaultNumericTypes> {
        let a = args(argument);
        let point = point_ref(a.first().unwrap_or(&EValue::Empty))?;
        if name == "age" {
            let since = self
                .last_good_ms
                .get(point as usize)
                .copied()
                .flatten()
                .unwrap_or(self.start_ms);
            return Ok(EValue::Float((self.now_ms - since).max(0) as f64 / 1000.0));
        }
        let secs = match a.get(if name == "time_to" { 2 } else { 1 }) {
            Some(v) => v.as_number()?,
            None => {
                return Err(EvalexprError::CustomMessage(format!(
                    "{name}() needs a window in seconds, e.g. {name}(\"p\", 60)"
                )))
            }
        };
        let w: Vec<(i64, f64)> = self.history.window(point, self.now_ms, secs).collect();
        let Some(&(_, cur)) = w.last() else {
            return no_data();
        };
        let r = match name {
            "fall_pct" => {
                let max = w.iter().map(|(_, v)| *v).fold(f64::MIN, f64::max);
                if max > 0.0 {
                    (max - cur) / max * 100.0
                } else {
                    0.0
                }
            }
            "rise_pct" => {
                let min = w.iter().map(|(_, v)| *v).fold(f64::MAX, f64::min);
                if min > 0.0 {
                    (cur - min) / min * 100.0
                } else {
                    0.0
                }
            }
            "delta" => cur - w[0].1,
            "slope" => match least_squares(&w) {
                Some(s) => s,
                None => return no_data(),
            },
            "trend" | "trend_secs" | "time_to" => {
                let since = &w[trend_start(&w)..];
                let Some(rate) = least_squares(since) else {
                    return no_data();
                };
                match name {
                    "trend" => rate,
                    "trend_secs" => (since[since.len() - 1].0 - since[0].0) as f64 / 1000.0,
                    _ => {
                        let target = match a.get(1) {
                            Some(v) => v.as_number()?,
                            None => {
                                return Err(EvalexprError::CustomMessage(
                                    "time_to() needs a point, a target and a window, e.g. time_to(\"p\", 0.5, 600)".into(),
                                ))
                            }
                        };
                        let to_go = target - cur;
                        if to_go == 0.0 {
                            0.0
                        } else if rate == 0.0 || to_go.signum() != rate.signum() {
                            return no_data();
                        } else {
                            to_go / rate
                        }
                    }
                }
            }
            _ => return Err(EvalexprError::FunctionIdentifierNotFound(name.into())),
        };
        Ok(EValue::Float(r))
    }
}

impl Context for EvalCtx<'_> {
    type NumericTypes = DefaultNumericTypes;

    fn get_value(&self, identifier: &str) -> Option<&EValue> {
        let (kind, n) = identifier.split_at(1);
        let n: usize = n.parse().ok()?;
        match kind {
            "#" => self.points.get(n)?.as_ref(),
            "@" => self.online.get(n)?.as_ref(),
            _ => None,
        }
    }

    fn call_function(
        &self,
        identifier: &str,
        argument: &EValue,
    ) -> EvalexprResultValue<DefaultNumericTypes> {
        match identifier {
            "count" => {
                let mut n = 0;
                for a in args(argument) {
                    if a.as_boolean()? {
                        n += 1;
                    }
                }
                Ok(EValue::Int(n))
            }
            "hour" => {
                let local = self.now_ms / 1000 + i64::from(self.utc_offset_seconds);
                Ok(EValue::Int(local.rem_euclid(86_400) / 3600))
            }
            "fall_pct" | "rise_pct" | "delta" | "slope" | "trend" | "trend_secs" | "time_to"
            | "age" => self.history_fn(identifier, argument),
            other => Err(EvalexprError::FunctionIdentifierNotFound(other.into())),
        }
    }

    fn are_builtin_functions_disabled(&self) -> bool {
        false
    }

    fn set_builtin_functions_disabled(
        &mut self,
        _disabled: bool,
    ) -> EvalexprResult<(), DefaultNumericTypes> {
        Err(EvalexprError::CustomMessage(
            "built-in functions cannot be disabled".into(),
        ))
    }
}

fn is_missing(e: &EvalexprError<DefaultNumericTypes>) -> bool {
    match e {
        EvalexprError::VariableIdentifierNotFound(_) => true,
        EvalexprError::CustomMessage(m) => m == NO_DATA,
        _ => false,
    }
}

pub fn eval_bool(expr: &Expr, ctx: &EvalCtx<'_>) -> Outcome {
    match expr.eval_with_context(ctx) {
        Ok(EValue::Boolean(true)) => Outcome::True,
        Ok(EValue::Boolean(false)) => Outcome::False,
        Ok(other) => Outcome::Error(format!("the condition gave {other}, not true/false")),
        Err(e) if is_missing(&e) => Outcome::Unknown,
        Err(e) => Outcome::Error(e.to_string()),
    }
}

/// A value for the record (`None` if it cannot be computed now).
pub fn eval_value(expr: &Expr, ctx: &EvalCtx<'_>) -> Option<Shown> {
    match expr.eval_with_context(ctx).ok()? {
        EValue::String(s) => Some(Shown::Text(s)),
        v => Shown::of(&v),
    }
}

/// A value shown with an alarm (its `values`: what a rule's `values` computed, or the points
/// its condition reads): a number, a truth value or a text. On the wire (the API, the state
/// store, webhooks) it is the plain JSON value; a float is rounded to three decimals.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Shown {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Shown {
    /// A point's or an expression's number or truth value; None for anything else (a text,
    /// an empty value, a float that is not finite).
    pub fn of(v: &EValue) -> Option<Self> {
        match v {
            EValue::Float(f) if f.is_finite() => Some(Shown::Float((f * 1000.0).round() / 1000.0)),
            EValue::Int(i) => Some(Shown::Int(*i)),
            EValue::Boolean(b) => Some(Shown::Bool(*b)),
            _ => None,
        }
    }

    /// How a message template shows it: a text as it is, anything else as in JSON.
    pub fn in_text(&self) -> String {
        match self {
            Shown::Text(t) => t.clone(),
            other => other.to_string(),
        }
    }
}

/// As in JSON (a text quoted and escaped), as the `name=value` list of a rule without a
/// message template has always shown it.
impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match serde_json::to_string(self) {
            Ok(s) => f.write_str(&s),
            Err(_) => f.write_str("null"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx_eval(
        text: &str,
        hist: &History,
        points: &[Option<EValue>],
        now: i64,
    ) -> Result<EValue, String> {
        let node: Expr = evalexpr::build_operator_tree(text).map_err(|e| e.to_string())?;
        let ctx = EvalCtx {
            points,
            online: &[],
            last_good_ms: &[],
            history: hist,
            now_ms: now,
            start_ms: 0,
            utc_offset_seconds: 8 * 3600,
        };
        node.eval_with_context(&ctx).map_err(|e| e.to_string())
    }

    #[test]
    fn history_functions() {
        let mut h = History::new([0], 600_000);
        for (t, v) in [(0, 2.5), (1000, 2.49), (2000, 2.48), (3000, 2.47)] {
            h.push(0, t, v);
        }
        let pts = [Some(EValue::Float(2.47))];
        let slope = ctx_eval("slope(\"#0\", 120)", &h, &pts, 3000).unwrap();
        assert!((slope.as_float().unwrap() + 0.01).abs() < 1e-9, "{slope:?}");
        let left = ctx_eval(
            "floor(max(#0 - 0.5, 0) / max(0 - slope(\"#0\", 120), 0.00001) / 60)",
            &h,
            &pts,
            3000,
        )
        .unwrap();
        assert_eq!(left.as_number().unwrap(), 3.0);
        let fall = ctx_eval("fall_pct(\"#0\", 60)", &h, &pts, 3000).unwrap();
        assert!((fall.as_float().unwrap() - 1.2).abs() < 1e-9);
        let d = ctx_eval("delta(\"#0\", 2)", &h, &pts, 3000).unwrap();
        assert!((d.as_float().unwrap() + 0.02).abs() < 1e-9, "{d:?}");
        // 00:00 UTC is 08:00 in China
        assert_eq!(ctx_eval("hour()", &h, &pts, 0).unwrap(), EValue::Int(8));
        assert_eq!(
            ctx_eval("count(true, false, true)", &h, &pts, 0).unwrap(),
            EValue::Int(2)
        );
        // not enough history: missing data, not an error
        let empty = History::new([0], 600_000);
        let e = ctx_eval("slope(\"#0\", 120)", &empty, &pts, 3000).unwrap_err();
        assert!(e.contains(NO_DATA), "{e}");
    }

    /// A scripted draw-down: the tank flat at 2.0 m (with +-2 mm of sensor noise) for two
    /// minutes, then falling at 0.1 m/min. After 90 s of fall (1.85 m) the tank reaches
    /// 0.5 m in 1.35 / 0.1 = 13.5 min. The slope over the last 5 minutes, diluted by the flat
    /// stretch, says about twice that; `time_to` follows the fall.
    #[test]
    fn time_to_follows_the_fall_not_the_flat_stretch_before_it() {
        let mut h = History::new([0], 600_000);
        let noise = |t: i64| ((t * 7919) % 5 - 2) as f64 * 0.001;
        let mut now = 0;
        let mut level = 2.0;
        for s in 0..=210 {
            now = s * 1000;
            level = if s <= 120 {
                2.0
            } else {
                2.0 - (s - 120) as f64 * 0.1 / 60.0
            };
            h.push(0, now, level + noise(s));
        }
        let pts = [Some(EValue::Float(level))];
        let eval = |text: &str| ctx_eval(text, &h, &pts, now).unwrap().as_number().unwrap();
        let minutes = eval("time_to(\"#0\", 0.5, 300)") / 60.0;
        assert!((minutes - 13.5).abs() < 0.5, "time_to says {minutes} min");
        let rate = eval("trend(\"#0\", 300)") * 60.0;
        assert!((rate + 0.1).abs() < 0.005, "trend says {rate} m/min");
        let fitted = eval("trend_secs(\"#0\", 300)");
        assert!((80.0..=100.0).contains(&fitted), "fitted {fitted} s");
        // the old estimate over a fixed window: far off, which is the defect this replaces
        let diluted = (level - 0.5) / -eval("slope(\"#0\", 300)") / 60.0;
        assert!(diluted > 20.0, "slope over the window says {diluted} min");
        // rising, or flat: not moving towards the target, so no estimate
        let mut up = History::new([0], 600_000);
        for s in 0..60 {
            up.push(0, s * 1000, 1.0 + s as f64 * 0.01);
        }
        let e = ctx_eval("time_to(\"#0\", 0.5, 300)", &up, &pts, 59_000).unwrap_err();
        assert!(e.contains(NO_DATA), "{e}");
        let r = ctx_eval("time_to(\"#0\", 2.0, 300)", &up, &pts, 59_000).unwrap();
        assert!((r.as_number().unwrap() - 41.0).abs() < 0.5, "{r:?}");
    }
}
