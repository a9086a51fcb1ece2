//! `--config FILE`: flag values from a TOML file.
//!
//! Each key of the file becomes the environment variable `TRADECAST_<KEY>` unless
//! that variable is already set, before the flags are parsed. Flags therefore beat
//! the environment, and the environment beats the file.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context, bail};

/// Find `--config` (or `TRADECAST_CONFIG`) and export the file's keys.
pub fn load_into_env(args: impl Iterator<Item = OsString>) -> anyhow::Result<()> {
    let args: Vec<OsString> = args.collect();
    let from_args = args.iter().enumerate().find_map(|(i, arg)| {
        let arg = arg.to_str()?;
        match arg.strip_prefix("--config=") {
            Some(path) => Some(PathBuf::from(path)),
            None if arg == "--config" => args.get(i + 1).map(PathBuf::from),
            None => None,
        }
    });
    let Some(path) = from_args.or_else(|| std::env::var_os("TRADECAST_CONFIG").map(PathBuf::from))
    else {
        return Ok(());
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("parsing {}", path.display()))?;
    for (key, value) in table {
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            // A list becomes a comma-separated value (`allowed-origins = ["https://a",
            // "https://b"]`, `ib-plan = [5, 1, 0.5]`); strings without their TOML quotes.
            toml::Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            _ => bail!(
                "{}: key {key:?} must be a string, number, boolean or list",
                path.display()
            ),
        };
        let var = format!("TRADECAST_{}", key.to_uppercase().replace('-', "_"));
        if std::env::var_os(&var).is_none() {
            // SAFETY: called at the start of main, before any other thread exists.
            unsafe { std::env::set_var(&var, value) };
        }
    }
    Ok(())
}
