//! The service as packaged: the shipped example site file (`config/site.example.toml`, in
//! the .deb as /etc/propwatch/site.toml.example) passes `check-config` once the systemd
//! credentials it names exist, fails clearly without them, and agrees with the unit
//! (`systemd/propwatch.service`) on credentials and writable paths. `scripts/check-deb` checks
//! the built package itself.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_propwatch");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The credential names the example's `*_file` keys give as `$CREDENTIALS_DIRECTORY/NAME`.
fn example_credentials() -> BTreeSet<String> {
    let text = read("config/site.example.toml");
    let names: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once("\"$CREDENTIALS_DIRECTORY/"))
        .map(|(_, rest)| rest.split('"').next().unwrap().to_string())
        .collect();
    assert!(names.len() >= 5, "the example names its secrets: {names:?}");
    names
}

/// The example as /etc/propwatch/site.toml with the shipped profiles beside it, and a
/// credentials directory holding a placeholder for every name in `creds`.
fn install_example(creds: &BTreeSet<String>) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc/propwatch");
    std::fs::create_dir_all(etc.join("profiles")).unwrap();
    for entry in std::fs::read_dir(repo().join("config/profiles")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, etc.join("profiles").join(p.file_name().unwrap())).unwrap();
    }
    let site = etc.join("site.toml");
    std::fs::copy(repo().join("config/site.example.toml"), &site).unwrap();
    let cred_dir = dir.path().join("run/credentials/propwatch.service");
    std::fs::create_dir_all(&cred_dir).unwrap();
    for name in creds {
        std::fs::write(
            cred_dir.join(name),
            format!("placeholder-{name}-0123456789abcdef\n"),
        )
        .unwrap();
    }
    (dir, site, cred_dir)
}

fn check_config(site: &Path, credentials: Option<&Path>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("check-config").arg("--config").arg(site);
    match credentials {
        Some(dir) => cmd.env("CREDENTIALS_DIRECTORY", dir),
        None => cmd.env_remove("CREDENTIALS_DIRECTORY"),
    };
    cmd.output().expect("run propwatch check-config")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_example_site_passes_check_config_with_its_credentials() {
    let creds = example_credentials();
    let (_dir, site, cred_dir) = install_example(&creds);
    let out = check_config(&site, Some(&cred_dir));
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains(": ok: site \"lvyuan\""), "{t}");
    assert!(t.contains("2 notification channel(s)"), "{t}");
}

#[test]
fn without_credentials_the_example_is_a_config_error_naming_the_variable() {
    let creds = example_credentials();
    let (_dir, site, cred_dir) = install_example(&creds);

    // outside systemd, nothing set: exit 64, and every secret says why
    let out = check_config(&site, None);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    let t = text(&out);
    for key in [
        "http.tokens[0].token_file",
        "mqtt.password_file",
        "influx.token_file",
    ] {
        assert!(
            t.contains(&format!("{key}: $CREDENTIALS_DIRECTORY/")),
            "{key} in:\n{t}"
        );
    }
    assert!(t.contains("CREDENTIALS_DIRECTORY is not set"), "{t}");

    // one credential missing (a LoadCredential= line forgotten): its expanded path is named
    std::fs::remove_file(cred_dir.join("influx.token")).unwrap();
    let out = check_config(&site, Some(&cred_dir));
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    let t = text(&out);
    let want = format!(
        "influx.token_file: cannot read $CREDENTIALS_DIRECTORY/influx.token ({})",
        cred_dir.join("influx.token").display()
    );
    assert!(t.contains(&want), "{want} in:\n{t}");
}

#[test]
fn the_unit_loads_exactly_the_credentials_the_example_names() {
    let unit = read("systemd/propwatch.service");
    let loaded: BTreeSet<String> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("LoadCredential="))
        .filter(|v| !v.is_empty())
        .map(|v| {
            let (name, path) = v.split_once(':').expect("LoadCredential=NAME:PATH");
            assert_eq!(path, format!("/etc/propwatch/credentials/{name}"));
            name.to_string()
        })
        .collect();
    // a LoadCredential= whose file is missing fails the start, one the file does not name
    // is a secret handed over for nothing
    assert_eq!(loaded, example_credentials());
}

#[test]
fn the_example_writes_only_where_the_unit_lets_it() {
    // ProtectSystem=strict: only the StateDirectory (/var/lib/propwatch) is writable
    let unit = read("systemd/propwatch.service");
    assert!(unit.lines().any(|l| l == "ProtectSystem=strict"));
    assert!(unit.lines().any(|l| l == "StateDirectory=propwatch"));
    assert!(!unit.lines().any(|l| l.starts_with("ReadWritePaths=")));
    let site: toml::Value = toml::from_str(&read("config/site.example.toml")).unwrap();
    let database = site["alarms"]["database"].as_str().unwrap();
    let spool = site["influx"]["spool_dir"].as_str().unwrap();
    for path in [database, spool] {
        assert!(path.starts_with("/var/lib/propwatch/"), "{path}");
    }
    // the service reads its config where the unit says
    for line in [
        "ExecStartPre=-/usr/bin/propwatch check-config --config /etc/propwatch/site.toml",
        "ExecReload=+/usr/bin/env CREDENTIALS_DIRECTORY=/etc/propwatch/credentials \
         /usr/bin/propwatch check-config --config /etc/propwatch/site.toml",
        "ExecStart=/usr/bin/propwatch run --config /etc/propwatch/site.toml",
        "ConditionPathExists=/etc/propwatch/site.toml",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line}");
    }
    assert_eq!(site["profiles_dir"].as_str(), Some("profiles"));
}
