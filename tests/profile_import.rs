//! `propwatch profile import` (issue #20): a vendor point table written by openpyxl (a
//! spreadsheet library nobody here wrote) and a GB18030 CSV as Excel writes it on a Chinese
//! Windows, both by tests/peers/point_table.py. Bad rows are reported by their row number in
//! the file, the reader's and the compiler's alike, and nothing is written; `--skip-bad`
//! writes a profile the daemon's own compiler takes, which a site then uses.

mod common;

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_propwatch");

fn table(dir: &Path, name: &str) -> std::path::PathBuf {
    let out = dir.join(name);
    let st = Command::new("python3")
        .arg(common::repo().join("tests/peers/point_table.py"))
        .arg(&out)
        .status()
        .expect("python3 with openpyxl (scripts/test installs it)");
    assert!(st.success(), "point_table.py {name}");
    out
}

fn import(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["profile", "import"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A point as imported: (id, name, function, address, type, byte order, scale).
type Point = (
    String,
    String,
    u64,
    u64,
    String,
    Option<String>,
    Option<f64>,
);

/// The points of a profile file, which the daemon's own compiler takes.
fn points(path: &Path) -> Vec<Point> {
    let text = std::fs::read_to_string(path).unwrap();
    // the daemon's own compiler takes it
    propwatch::config::profile_from_str(path, &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let v: toml::Table = toml::from_str(&text).unwrap();
    v["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                p["name"].as_str().unwrap().to_string(),
                p["function"].as_integer().unwrap() as u64,
                p["address"].as_integer().unwrap() as u64,
                p["type"].as_str().unwrap().to_string(),
                p.get("byte_order").map(|o| o.as_str().unwrap().to_string()),
                p.get("scale").map(|s| s.as_float().unwrap()),
            )
        })
        .collect()
}

#[test]
fn an_excel_point_table_becomes_a_checked_profile() {
    let dir = tempfile::tempdir().unwrap();
    let xlsx = table(dir.path(), "点表.xlsx");
    let out = dir.path().join("vendor-pump.toml");
    let o = out.to_str().unwrap();
    let x = xlsx.to_str().unwrap();

    // bad rows: reported by their row in the sheet (a title row above the header), nothing written
    let (code, stdout, stderr) =
        import(&[x, "--id", "vendor-pump", "--kind", "pump_room", "--out", o]);
    assert_eq!(code, 65, "{stderr}");
    assert!(stdout.is_empty());
    assert!(!out.exists());
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("row ")).collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with("row 7:") && lines[0].contains("40O11"),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with("row 9:") && lines[1].contains("BCD"),
        "{stderr}"
    );

    // --skip-bad: the rest, as the compiler takes it
    let (code, _, stderr) = import(&[
        x,
        "--id",
        "vendor-pump",
        "--kind",
        "pump_room",
        "--name",
        "XX 水泵控制柜",
        "--skip-bad",
        "--out",
        o,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("7 points written, 2 row(s) left out"),
        "{stderr}"
    );
    let p = points(&out);
    let get = |name: &str| {
        p.iter()
            .find(|x| x.1 == name)
            .unwrap_or_else(|| panic!("{name}: {p:?}"))
            .clone()
    };
    // Modicon addresses: 10001 discrete input 0, 30001 input register 0, 40001 holding 0
    let run = get("1#泵运行");
    assert_eq!((run.2, run.3, run.4.as_str()), (2, 0, "bool"));
    let out_p = get("出水压力");
    assert_eq!(
        (out_p.2, out_p.3, out_p.4.as_str(), out_p.5.as_deref()),
        (4, 0, "f32", Some("CDAB"))
    );
    let freq = get("1#泵频率");
    assert_eq!(
        (freq.2, freq.3, freq.4.as_str(), freq.6),
        (3, 0, "u16", Some(0.01))
    );
    let level = get("水箱液位");
    assert_eq!(
        (level.2, level.3, level.4.as_str(), level.6),
        (4, 4, "i16", Some(0.01))
    );
    assert_eq!(get("累计流量").4, "f64");
    let p2 = get("2#泵运行");
    assert_eq!((p2.2, p2.3), (2, 1), "1x0002");

    // another sheet, English headers, hex addresses and a bit of a register
    let pd = dir.path().join("pd.toml");
    let (code, _, stderr) = import(&[
        x,
        "--sheet",
        "配电",
        "--id",
        "vendor-pd",
        "--out",
        pd.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let p = points(&pd);
    assert_eq!(p.len(), 2);
    assert_eq!((p[1].2, p[1].3, p[1].4.as_str()), (3, 16, "bool"));
    // a sheet that is not there
    let (code, _, stderr) = import(&[x, "--sheet", "nope", "--id", "x"]);
    assert_eq!(code, 66);
    assert!(stderr.contains("no sheet \"nope\""), "{stderr}");

    // and a site uses the imported profile: check-config passes
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::copy(&out, profiles.join("vendor-pump.toml")).unwrap();
    let site = dir.path().join("site.toml");
    std::fs::write(
        &site,
        "[site]\nid = \"imp\"\n[[connections]]\nid = \"gw\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:1502\"\n[[rooms]]\nid = \"pump\"\n[[rooms.devices]]\nid = \"cabinet\"\nprofile = \"vendor-pump\"\nconnection = \"gw\"\n",
    )
    .unwrap();
    let check = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&site)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn a_gb18030_csv_with_bad_rows_names_each_row() {
    let dir = tempfile::tempdir().unwrap();
    let csv = table(dir.path(), "pd.csv");
    let c = csv.to_str().unwrap();
    // the address column's header is not a known one
    let (code, _, stderr) = import(&[c, "--id", "pd"]);
    assert_eq!(code, 66, "{stderr}");
    assert!(stderr.contains("--column address="), "{stderr}");
    let (code, _, stderr) = import(&[c, "--id", "pd", "--column", "address=Reg"]);
    assert_eq!(code, 65, "{stderr}");
    let rows: Vec<&str> = stderr.lines().filter(|l| l.starts_with("row ")).collect();
    assert_eq!(rows.len(), 4, "{stderr}");
    assert!(rows[0].starts_with("row 4: no 名称"), "{stderr}");
    assert!(
        rows[1].starts_with("row 5:") && rows[1].contains("千分之一"),
        "{stderr}"
    );
    assert!(
        rows[2].starts_with("row 6:") && rows[2].contains("duplicate point id \"ua\""),
        "{stderr}"
    );
    assert!(
        rows[3].starts_with("row 7:") && rows[3].contains("overlaps"),
        "{stderr}"
    );
    let out = dir.path().join("pd.toml");
    let (code, _, stderr) = import(&[
        c,
        "--id",
        "pd",
        "--column",
        "address=Reg",
        "--skip-bad",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let p = points(&out);
    let ids: Vec<&str> = p.iter().map(|x| x.0.as_str()).collect();
    assert_eq!(ids, ["ua", "ub", "f"]);
    // 保持寄存器 at 0x20, scale 0.01
    assert_eq!((p[2].2, p[2].3, p[2].6), (3, 32, Some(0.01)));
    assert_eq!(p[0].1, "A相电压");
}
