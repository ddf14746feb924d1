//! `propwatch users`: manage the personal accounts of a site's state store, on the machine
//! (the daemon may be running: SQLite serialises the writes, and a change ends the account's
//! sessions at once). The password is read from the terminal without echo (twice), or with
//! `--password-stdin` as the first line of standard input (scripts, provisioning).

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use super::{AccountError, Accounts, Role};

#[derive(clap::Args, Debug)]
pub struct UsersArgs {
    /// Site config whose state store (`[alarms] database`) holds the accounts.
    #[arg(long, short, global = true, conflicts_with = "database")]
    pub config: Option<PathBuf>,
    /// The state store itself.
    #[arg(long, global = true)]
    pub database: Option<PathBuf>,
    /// Read the password from the first line of standard input instead of the terminal.
    #[arg(long, global = true)]
    pub password_stdin: bool,
    #[command(subcommand)]
    pub cmd: UsersCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum UsersCmd {
    /// List the accounts (never their passwords).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Add an account with a role: viewer, operator, supervisor or admin.
    Add {
        name: String,
        #[arg(long)]
        role: String,
    },
    /// Set an account's password (unlocks it and ends its sessions).
    Passwd { name: String },
    /// Change an account's role (ends its sessions).
    Role { name: String, role: String },
    /// Disable an account: it cannot log in, its sessions end at once.
    Disable { name: String },
    /// Enable a disabled account again (and unlock it).
    Enable { name: String },
}

fn database(a: &UsersArgs) -> Result<PathBuf, String> {
    if let Some(d) = &a.database {
        return Ok(d.clone());
    }
    let Some(c) = &a.config else {
        return Err("give --config SITE.toml or --database STATE.db".into());
    };
    match crate::config::load(c) {
        Ok(site) => Ok(site.alarms.settings.database.clone()),
        Err(e) => Err(format!("{e}")),
    }
}

fn password(a: &UsersArgs, name: &str) -> Result<String, String> {
    if a.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password: {e}"))?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let p1 = rpassword::prompt_password(format!("password for {name}: ")).map_err(|e| {
        format!("cannot read the password (no terminal? use --password-stdin): {e}")
    })?;
    let p2 = rpassword::prompt_password("again: ")
        .map_err(|e| format!("cannot read the password: {e}"))?;
    if p1 != p2 {
        return Err("the passwords differ".into());
    }
    Ok(p1)
}

fn role(r: &str) -> Result<Role, String> {
    Role::parse(r).ok_or_else(|| format!("{r:?}: expected viewer, operator, supervisor or admin"))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn run(a: UsersArgs) -> ExitCode {
    match run_inner(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("propwatch users: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(a: &UsersArgs) -> Result<(), String> {
    let db = database(a)?;
    let accounts = Accounts::open(&db, Default::default()).map_err(|e| e.to_string())?;
    let err = |e: AccountError| e.to_string();
    match &a.cmd {
        UsersCmd::List { json } => {
            let list = accounts.list().map_err(err)?;
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
            } else {
                println!("{:<24} {:<11} state", "account", "role");
                for acc in list {
                    let state = if acc.disabled {
                        "disabled"
                    } else if acc.locked_until.is_some_and(|u| u > now()) {
                        "locked"
                    } else {
                        "active"
                    };
                    println!("{:<24} {:<11} {state}", acc.name, acc.role.as_str());
                }
            }
        }
        UsersCmd::Add { name, role: r } => {
            let r = role(r)?;
            super::check_name(name).map_err(err)?;
            if accounts.get(name).is_ok() {
                return Err(AccountError::Exists(name.clone()).to_string());
            }
            let pw = password(a, name)?;
            accounts.add(name, r, &pw, now()).map_err(err)?;
            println!("account {name} added ({r})");
        }
        UsersCmd::Passwd { name } => {
            accounts.get(name).map_err(err)?;
            let pw = password(a, name)?;
            accounts.set_password(name, &pw, now()).map_err(err)?;
            println!("password of {name} set; its sessions ended");
        }
        UsersCmd::Role { name, role: r } => {
            let r = role(r)?;
            accounts.set_role(name, r, now()).map_err(err)?;
            println!("{name} is now {r}; its sessions ended");
        }
        UsersCmd::Disable { name } => {
            accounts.set_disabled(name, true, now()).map_err(err)?;
            println!("{name} disabled; its sessions ended");
        }
        UsersCmd::Enable { name } => {
            accounts.set_disabled(name, false, now()).map_err(err)?;
            println!("{name} enabled");
        }
    }
    Ok(())
}
