//! `propwatch profile import POINTS.xlsx|xls|ods|csv`: a vendor's point table (点表) turned
//! into a profile TOML, checked by the same compiler as every profile.
//!
//! - **Reading**: spreadsheets through calamine (the first sheet, or `--sheet`), CSV through
//!   the csv crate (UTF-8 with or without a BOM, else GB18030: what Excel writes on a Chinese
//!   Windows). The header row is the first row naming at least two known columns (vendor
//!   sheets put a title above it).
//! - **Columns** are found by their header, Chinese or English (see [`ALIASES`]); `--column
//!   address=起始地址` names one the defaults do not know.
//! - **Rows**: a name and an address are needed; the function comes from its column, else
//!   from a 5- or 6-digit Modicon address (40001 = holding register 0, 30001 = input register
//!   0, 10001 = discrete input 0, 00001 = coil 0), else `--function`; addresses in hex
//!   (`0x10`, `10H`) are read; `--one-based` subtracts one from plain addresses. Types, byte
//!   orders and functions are read in the words vendors use (`FLOAT`, `有符号16位`,
//!   `保持寄存器`, `CDAB`, `3412`, `字交换`, ...).
//! - **Checked**: the profile is compiled as `propwatch run` would; every problem, the
//!   reader's and the compiler's, is reported with its row number in the file. With bad rows
//!   nothing is written (exit 65) unless `--skip-bad`, which writes the rest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `propwatch profile import`.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The point table: .xlsx, .xlsm, .xls, .ods or .csv.
    pub file: PathBuf,
    /// The profile's id (what a device's `profile =` names).
    #[arg(long)]
    pub id: String,
    /// Its name (default: the file's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Its kind (pump_room, distribution_room, elevator, fire_panel, power_meter, ...).
    #[arg(long, default_value = "device")]
    pub kind: String,
    /// The sheet to read (default: the first).
    #[arg(long)]
    pub sheet: Option<String>,
    /// A column the defaults do not recognise: FIELD=HEADER, FIELD one of id, name, address,
    /// function, type, order, scale, unit, bit (repeatable).
    #[arg(long = "column", value_name = "FIELD=HEADER")]
    pub columns: Vec<String>,
    /// The read function of rows that name none (1 coils, 2 discrete inputs, 3 holding, 4
    /// input registers).
    #[arg(long)]
    pub function: Option<u8>,
    /// Plain addresses in the table count from 1 (register 1 is address 0 on the wire).
    #[arg(long)]
    pub one_based: bool,
    /// Write the rows that are fine and report the others (default: write nothing).
    #[arg(long)]
    pub skip_bad: bool,
    /// Write the profile here (default: standard output).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
}

/// The fields of a point a table may give.
pub const FIELDS: [&str; 9] = [
    "id", "name", "address", "function", "type", "order", "scale", "unit", "bit",
];

/// Header words each field is recognised by (compared without case, spaces, `_` and what is
/// in brackets: "地址(十进制)" is an address).
pub const ALIASES: [(&str, &[&str]); 9] = [
    (
        "id",
        &["id", "pointid", "标识", "点号", "代号", "变量名", "tag"],
    ),
    (
        "name",
        &[
            "name",
            "名称",
            "点名",
            "测点",
            "测点名称",
            "点位名称",
            "参数",
            "参数名称",
            "描述",
            "description",
            "信号名称",
            "变量描述",
        ],
    ),
    (
        "address",
        &[
            "address",
            "addr",
            "地址",
            "寄存器地址",
            "寄存器",
            "register",
            "偏移地址",
            "起始地址",
            "modbus地址",
        ],
    ),
    (
        "function",
        &[
            "function",
            "fc",
            "functioncode",
            "功能码",
            "读功能码",
            "寄存器类型",
        ],
    ),
    (
        "type",
        &["type", "datatype", "数据类型", "类型", "数据格式", "格式"],
    ),
    (
        "order",
        &[
            "order",
            "byteorder",
            "字节序",
            "字节顺序",
            "高低字节",
            "字序",
        ],
    ),
    (
        "scale",
        &[
            "scale", "系数", "倍率", "比例", "乘数", "factor", "ratio", "变比", "精度",
        ],
    ),
    ("unit", &["unit", "单位"]),
    ("bit", &["bit", "位", "bit位", "位号", "位地址"]),
];

fn normalise(h: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in h.chars() {
        match c {
            '(' | '（' | '[' | '【' => depth += 1,
            ')' | '）' | ']' | '】' => depth = (depth - 1).max(0),
            _ if depth > 0 => {}
            c if c.is_whitespace() || c == '_' || c == '-' => {}
            c => out.extend(c.to_lowercase()),
        }
    }
    out
}

/// A table as read: its header and its rows, each with its row number in the file (1-based).
#[derive(Debug, Default)]
pub struct Table {
    pub header_row: usize,
    pub headers: Vec<String>,
    pub rows: Vec<(usize, Vec<String>)>,
}

fn cell_text(d: &calamine::Data) -> String {
    use calamine::Data;
    match d {
        Data::Empty => String::new(),
        Data::String(s) => s.trim().to_string(),
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        Data::Float(f) => f.to_string(),
        Data::Int(i) => i.to_string(),
        Data::Bool(b) => b.to_string(),
        other => other.to_string().trim().to_string(),
    }
}

/// The rows of `path` (a spreadsheet's `sheet`, or a CSV), as text.
fn read_rows(path: &Path, sheet: Option<&str>) -> Result<Vec<Vec<String>>, String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ext == "csv" {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t.to_string(),
            Err(_) => {
                let (t, _, bad) = encoding_rs::GB18030.decode(bytes);
                if bad {
                    return Err(format!(
                        "{}: neither UTF-8 nor GB18030 text",
                        path.display()
                    ));
                }
                t.into_owned()
            }
        };
        let mut r = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(text.as_bytes());
        let mut rows = Vec::new();
        for rec in r.records() {
            let rec = rec.map_err(|e| format!("{}: {e}", path.display()))?;
            rows.push(rec.iter().map(|c| c.trim().to_string()).collect());
        }
        return Ok(rows);
    }
    use calamine::Reader;
    let mut wb = calamine::open_workbook_auto(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let names = wb.sheet_names();
    let name = match sheet {
        Some(s) => {
            if !names.iter().any(|n| n == s) {
                return Err(format!(
                    "{} has no sheet {s:?} (it has {})",
                    path.display(),
                    names.join(", ")
                ));
            }
            s.to_string()
        }
        None => names
            .first()
            .cloned()
            .ok_or_else(|| format!("{} has no sheet", path.display()))?,
    };
    let range = wb
        .worksheet_range(&name)
        .map_err(|e| format!("{}: sheet {name:?}: {e}", path.display()))?;
    // the range starts at its first used cell: keep the file's row numbers
    let first_row = range.start().map_or(0, |(r, _)| r as usize);
    let first_col = range.start().map_or(0, |(_, c)| c as usize);
    let mut rows = vec![Vec::new(); first_row];
    for r in range.rows() {
        let mut row = vec![String::new(); first_col];
        row.extend(r.iter().map(cell_text));
        rows.push(row);
    }
    Ok(rows)
}

/// Which column holds each field: the defaults and `--column` overrides.
fn columns_of(
    headers: &[String],
    overrides: &BTreeMap<String, String>,
) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for (field, aliases) in ALIASES {
        let found = match overrides.get(field) {
            Some(h) => headers.iter().position(|x| normalise(x) == normalise(h)),
            None => headers.iter().position(|x| {
                let n = normalise(x);
                !n.is_empty() && aliases.iter().any(|a| n == normalise(a))
            }),
        };
        if let Some(i) = found {
            out.insert(field, i);
        }
    }
    out
}

/// The table of `path`: the header row is the first naming two known columns.
pub fn read_table(
    path: &Path,
    sheet: Option<&str>,
    overrides: &BTreeMap<String, String>,
) -> Result<Table, String> {
    let rows = read_rows(path, sheet)?;
    let Some(h) = rows
        .iter()
        .position(|r| columns_of(r, overrides).len() >= 2)
    else {
        return Err(format!(
            "{}: no header row naming at least a name and an address column (give --column address=... and --column name=...)",
            path.display()
        ));
    };
    Ok(Table {
        header_row: h + 1,
        headers: rows[h].clone(),
        rows: rows
            .into_iter()
            .enumerate()
            .skip(h + 1)
            .map(|(i, r)| (i + 1, r))
            .filter(|(_, r)| r.iter().any(|c| !c.is_empty()))
            .collect(),
    })
}

/// A point read from a row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub row: usize,
    pub id: String,
    pub name: String,
    pub function: u8,
    pub address: u32,
    pub kind: String,
    pub order: Option<String>,
    pub scale: Option<f64>,
    pub unit: Option<String>,
    pub bit: Option<u8>,
}

fn parse_int(s: &str) -> Option<u32> {
    let t = s.trim();
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u32::from_str_radix(h, 16).ok();
    }
    if let Some(h) = t.strip_suffix('H').or_else(|| t.strip_suffix('h')) {
        return u32::from_str_radix(h, 16).ok();
    }
    t.parse().ok()
}

fn parse_function(s: &str) -> Option<u8> {
    let t = normalise(s);
    let t = t.trim_start_matches("fc").trim_start_matches("0x");
    match t {
        "1" | "01" | "coil" | "coils" | "线圈" | "0x线圈" => Some(1),
        "2" | "02" | "discreteinput" | "discreteinputs" | "离散输入" | "输入状态" => {
            Some(2)
        }
        "3" | "03" | "holding" | "holdingregister" | "holdingregisters" | "保持寄存器" => {
            Some(3)
        }
        "4" | "04" | "input" | "inputregister" | "inputregisters" | "输入寄存器" => Some(4),
        _ => None,
    }
}

fn parse_type(s: &str) -> Option<&'static str> {
    let t = normalise(s);
    Some(match t.as_str() {
        "bool" | "bit" | "boolean" | "开关量" | "位" | "状态" | "数字量" => "bool",
        "u16" | "uint16" | "uint" | "word" | "unsigned" | "unsignedshort" | "ushort"
        | "无符号16位" | "无符号整数" | "16位无符号" | "无符号" => "u16",
        "i16" | "int16" | "int" | "short" | "signed" | "有符号16位" | "有符号整数"
        | "16位有符号" | "有符号" | "整数" => "i16",
        "u32" | "uint32" | "dword" | "udint" | "unsignedlong" | "无符号32位" | "32位无符号" => {
            "u32"
        }
        "i32" | "int32" | "dint" | "long" | "有符号32位" | "32位有符号" => "i32",
        "u64" | "uint64" | "无符号64位" => "u64",
        "i64" | "int64" | "有符号64位" => "i64",
        "f32" | "float" | "float32" | "real" | "single" | "浮点" | "浮点数" | "单精度"
        | "单精度浮点" | "32位浮点" | "32位浮点数" => "f32",
        "f64" | "double" | "float64" | "lreal" | "双精度" | "双精度浮点" | "64位浮点" => {
            "f64"
        }
        _ => return None,
    })
}

fn parse_order(s: &str) -> Option<&'static str> {
    let t = normalise(s);
    Some(match t.as_str() {
        "abcd" | "1234" | "big" | "bigendian" | "大端" | "高字节在前" | "正序" => "ABCD",
        "cdab" | "3412" | "wordswap" | "wordswapped" | "字交换" | "低字在前" => "CDAB",
        "badc" | "2143" | "byteswap" | "字节交换" => "BADC",
        "dcba" | "4321" | "little" | "littleendian" | "小端" | "低字节在前" | "反序" => {
            "DCBA"
        }
        _ => return None,
    })
}

fn parse_scale(s: &str) -> Option<f64> {
    let t = s.trim().trim_start_matches(['x', 'X', '×', '*']).trim();
    if let Some((a, b)) = t.split_once('/') {
        let (a, b): (f64, f64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        return (b != 0.0).then(|| a / b).filter(|v| v.is_finite());
    }
    t.parse::<f64>().ok().filter(|v| v.is_finite() && *v != 0.0)
}

fn id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// The point of one row, or why not.
fn read_row(
    t: &Table,
    cols: &BTreeMap<&'static str, usize>,
    row: usize,
    cells: &[String],
    a: &ImportArgs,
) -> Result<Row, String> {
    let get = |f: &str| {
        cols.get(f)
            .and_then(|&i| cells.get(i))
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    };
    let header = |f: &str| cols.get(f).map_or(f.to_string(), |&i| t.headers[i].clone());
    let name = get("name").ok_or_else(|| format!("no {}", header("name")))?;
    let addr_text = get("address").ok_or_else(|| format!("no {}", header("address")))?;
    let function = match get("function") {
        Some(f) => Some(parse_function(f).ok_or_else(|| {
            format!(
                "{} {f:?} is not a read function (1, 2, 3, 4, 线圈, 离散输入, 保持寄存器, 输入寄存器)",
                header("function")
            )
        })?),
        None => None,
    };
    // Modicon numbering (40001..., 4x0001...) tells the function when no column does
    let prefixed = ["4x", "3x", "1x", "4X", "3X", "1X"]
        .iter()
        .find_map(|p| addr_text.strip_prefix(p).map(|rest| (&p[..1], rest)))
        .filter(|(_, rest)| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit()));
    let joined;
    let addr_text = match prefixed {
        Some((head, rest)) if function.is_none() => {
            joined = format!("{head}{rest:0>5}");
            joined.as_str()
        }
        _ => addr_text,
    };
    let digits = addr_text.chars().all(|c| c.is_ascii_digit());
    let modicon = (function.is_none() && digits && (addr_text.len() == 5 || addr_text.len() == 6))
        .then(|| {
            let (head, rest) = addr_text.split_at(1);
            let f = match head {
                "0" => 1,
                "1" => 2,
                "3" => 4,
                "4" => 3,
                _ => return None,
            };
            let n: u32 = rest.parse().ok()?;
            (n >= 1).then_some((f, n - 1))
        })
        .flatten();
    let (function, address) = match modicon {
        Some((f, n)) => (f, n),
        None => {
            let n = parse_int(addr_text)
                .ok_or_else(|| format!("{} {addr_text:?} is not an address", header("address")))?;
            let n = if a.one_based {
                n.checked_sub(1)
                    .ok_or_else(|| "address 0 in a table counted from 1".to_string())?
            } else {
                n
            };
            let f = function.or(a.function).ok_or_else(|| {
                format!(
                    "no read function: no {} column, address {addr_text} is not 4xxxx/3xxxx, and no --function",
                    header("function")
                )
            })?;
            (f, n)
        }
    };
    if address > 65535 {
        return Err(format!("address {address} is beyond 65535"));
    }
    let bit = match get("bit") {
        Some(b) => Some(
            parse_int(b)
                .filter(|b| *b < 16)
                .ok_or_else(|| format!("{} {b:?} is not 0..15", header("bit")))? as u8,
        ),
        None => None,
    };
    let kind = match get("type") {
        Some(ty) => parse_type(ty)
            .ok_or_else(|| format!("{} {ty:?} is not a type this reads (u16, i16, u32, i32, u64, i64, f32, f64, bool)", header("type")))?
            .to_string(),
        None if function <= 2 || bit.is_some() => "bool".into(),
        None => "u16".into(),
    };
    let order = match get("order") {
        Some(o) => Some(
            parse_order(o)
                .ok_or_else(|| {
                    format!(
                        "{} {o:?} is not a byte order (ABCD, CDAB, BADC, DCBA)",
                        header("order")
                    )
                })?
                .to_string(),
        ),
        None => None,
    };
    let scale = match get("scale") {
        Some(s) => {
            let v = parse_scale(s)
                .ok_or_else(|| format!("{} {s:?} is not a number", header("scale")))?;
            (v != 1.0).then_some(v)
        }
        None => None,
    };
    let id = match get("id").filter(|i| id_ok(i)) {
        Some(i) => i.to_string(),
        None => match bit {
            Some(b) => format!("f{function}_{address}_b{b}"),
            None => format!("f{function}_{address}"),
        },
    };
    Ok(Row {
        row,
        id,
        name: name.to_string(),
        function,
        address,
        kind,
        order,
        scale,
        unit: get("unit").map(str::to_string),
        bit,
    })
}

/// The profile TOML of `rows`, keys in the order people read them.
pub fn profile_toml(a: &ImportArgs, source: &str, rows: &[Row]) -> String {
    use std::fmt::Write as _;
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let name = a.name.clone().unwrap_or_else(|| source.to_string());
    let mut out = format!(
        "# Imported from {source} by `propwatch profile import` ({} points): check names,\n# types, byte orders and scales against the device before going live.\n\n[profile]\nid = {}\nname = {}\nkind = {}\n",
        rows.len(),
        q(&a.id),
        q(&name),
        q(&a.kind)
    );
    for r in rows {
        let _ = write!(
            out,
            "\n[[points]]\nid = {}\nname = {}\nfunction = {}\naddress = {}\ntype = {}\n",
            q(&r.id),
            q(&r.name),
            r.function,
            r.address,
            q(&r.kind)
        );
        if let Some(o) = &r.order {
            let _ = writeln!(out, "byte_order = {}", q(o));
        }
        if let Some(b) = r.bit {
            let _ = writeln!(out, "bit = {b}");
        }
        if let Some(sc) = r.scale {
            let _ = writeln!(out, "scale = {}", toml::Value::Float(sc));
        }
        if let Some(u) = &r.unit {
            let _ = writeln!(out, "unit = {}", q(u));
        }
        let _ = writeln!(out, "# row {}", r.row);
    }
    out
}

/// What an import came to: the profile text and the rows left out with their reasons.
#[derive(Debug)]
pub struct Imported {
    pub toml: String,
    pub rows: Vec<Row>,
    pub problems: Vec<(usize, String)>,
}

/// Read, convert and check. The compiler's problems are mapped back to rows; a row with a
/// problem is left out and the rest checked again.
pub fn import(a: &ImportArgs) -> Result<Imported, String> {
    let mut overrides = BTreeMap::new();
    for c in &a.columns {
        let Some((f, h)) = c.split_once('=') else {
            return Err(format!("--column {c:?}: write FIELD=HEADER"));
        };
        let f = f.trim().to_ascii_lowercase();
        if !FIELDS.contains(&f.as_str()) {
            return Err(format!(
                "--column {c:?}: {f:?} is not one of {}",
                FIELDS.join(", ")
            ));
        }
        overrides.insert(f, h.trim().to_string());
    }
    let t = read_table(&a.file, a.sheet.as_deref(), &overrides)?;
    let cols = columns_of(&t.headers, &overrides);
    for need in ["name", "address"] {
        if !cols.contains_key(need) {
            return Err(format!(
                "{}: no {need} column in the header (row {}: {}); give --column {need}=HEADER",
                a.file.display(),
                t.header_row,
                t.headers.join(" | ")
            ));
        }
    }
    let mut problems = Vec::new();
    let mut rows = Vec::new();
    for (n, cells) in &t.rows {
        match read_row(&t, &cols, *n, cells, a) {
            Ok(r) => rows.push(r),
            Err(e) => problems.push((*n, e)),
        }
    }
    let source = a
        .file
        .file_name()
        .map_or("a point table".into(), |f| f.to_string_lossy().into_owned());
    // the compiler's word, mapped back to rows (points[i] is rows[i])
    for _ in 0..3 {
        let toml = profile_toml(a, &source, &rows);
        let file = PathBuf::from(format!("{}.toml", a.id));
        match crate::config::profile_from_str(&file, &toml) {
            Ok(_) => {
                problems.sort();
                return Ok(Imported {
                    toml,
                    rows,
                    problems,
                });
            }
            Err(e) => {
                let mut bad = std::collections::BTreeSet::new();
                for p in &e.0 {
                    let i = p
                        .key
                        .strip_prefix("points[")
                        .and_then(|k| k.split(']').next())
                        .and_then(|k| k.parse::<usize>().ok());
                    match i.and_then(|i| rows.get(i).map(|r| (i, r.row))) {
                        Some((i, row)) => {
                            problems.push((row, format!("{}: {}", p.key, p.message)));
                            bad.insert(i);
                        }
                        None => return Err(format!("the profile: {}: {}", p.key, p.message)),
                    }
                }
                let mut i = 0;
                rows.retain(|_| {
                    i += 1;
                    !bad.contains(&(i - 1))
                });
            }
        }
    }
    Err("the profile does not compile after leaving out the rows with problems".into())
}

pub fn run(a: &ImportArgs) -> ExitCode {
    let imported = match import(a) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("propwatch profile import: {e}");
            return ExitCode::from(66);
        }
    };
    for (row, why) in &imported.problems {
        eprintln!("row {row}: {why}");
    }
    if !imported.problems.is_empty() && !a.skip_bad {
        eprintln!(
            "propwatch profile import: {} row(s) not understood; nothing written (fix them, or --skip-bad to write the other {})",
            imported.problems.len(),
            imported.rows.len()
        );
        return ExitCode::from(65);
    }
    match &a.out {
        Some(p) => {
            if let Err(e) = std::fs::write(p, &imported.toml) {
                eprintln!(
                    "propwatch profile import: cannot write {}: {e}",
                    p.display()
                );
                return ExitCode::from(73);
            }
            eprintln!(
                "{}: {} points written{}",
                p.display(),
                imported.rows.len(),
                if imported.problems.is_empty() {
                    String::new()
                } else {
                    format!(", {} row(s) left out", imported.problems.len())
                }
            );
        }
        None => print!("{}", imported.toml),
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_words() {
        assert_eq!(parse_type("FLOAT"), Some("f32"));
        assert_eq!(parse_type("有符号16位"), Some("i16"));
        assert_eq!(parse_type("UINT32 "), Some("u32"));
        assert_eq!(parse_type("bcd"), None);
        assert_eq!(parse_order("3412"), Some("CDAB"));
        assert_eq!(parse_order("字交换"), Some("CDAB"));
        assert_eq!(parse_function("03"), Some(3));
        assert_eq!(parse_function("FC4"), Some(4));
        assert_eq!(parse_function("保持寄存器"), Some(3));
        assert_eq!(parse_int("0x10"), Some(16));
        assert_eq!(parse_int("10H"), Some(16));
        assert_eq!(parse_scale("1/10"), Some(0.1));
        assert_eq!(parse_scale("×0.01"), Some(0.01));
        assert_eq!(parse_scale("0"), None);
        assert_eq!(normalise("地址 (十进制)"), "地址");
        assert_eq!(normalise("Data_Type"), "datatype");
    }
}
