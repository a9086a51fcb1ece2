//! Where a run's figures go: `bench/results/<scenario>-<topology>.json` with every
//! figure, and a `.md` next to it with the table a reader wants, both stamped with
//! the machine (cores, memory, load average when the run began), the exact command,
//! the source version and the date.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Value, json};

use crate::common::source_version;
use crate::procfs;

/// What is known about a run before it starts.
pub struct Run {
    pub scenario: &'static str,
    pub topology: String,
    command: String,
    source: String,
    date: String,
    cores: usize,
    mem_total_mib: u64,
    /// Load average (1, 5, 15 min) when the run began: other work on the machine.
    load_at_start: [f64; 3],
}

/// The figures of a finished run.
pub struct Outcome {
    /// Every figure, for the JSON file.
    pub figures: Value,
    /// (figure, value) rows of the Markdown table.
    pub table: Vec<(String, String)>,
    /// Paragraphs under the table: how it was measured, what limits it.
    pub notes: Vec<String>,
    /// Problems that make the run a failure (lost or duplicated durable messages,
    /// connections that could not be opened, …); empty when clean.
    pub failures: Vec<String>,
}

impl Run {
    pub fn begin(scenario: &'static str, topology: String) -> anyhow::Result<Run> {
        let command = std::env::args()
            .enumerate()
            .map(|(i, a)| {
                if i == 0 {
                    "./target/release/tradecast-bench".to_owned()
                } else if a.contains(' ') {
                    format!("'{a}'")
                } else {
                    a
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Run {
            scenario,
            topology,
            command,
            source: source_version(),
            date: utc_now(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            mem_total_mib: procfs::mem_total_kib()? / 1024,
            load_at_start: procfs::load_average()?,
        })
    }

    /// Write `<dir>/<scenario>-<topology>.{json,md}`, print the Markdown, and fail
    /// if the outcome has failures.
    pub fn finish(&self, dir: &Path, outcome: Outcome) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let base = dir.join(format!("{}-{}", self.scenario, self.topology));
        let ok = outcome.failures.is_empty();
        let json = json!({
            "scenario": self.scenario,
            "topology": self.topology,
            "ok": ok,
            "failures": outcome.failures,
            "date": self.date,
            "command": self.command,
            "source": self.source,
            "machine": {
                "cores": self.cores,
                "memory_mib": self.mem_total_mib,
                "load_average_at_start": self.load_at_start,
            },
            "figures": outcome.figures,
        });
        let json_path = with_ext(&base, "json");
        std::fs::write(&json_path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("writing {}", json_path.display()))?;
        let md = self.markdown(&outcome);
        let md_path = with_ext(&base, "md");
        std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
        println!("{md}");
        eprintln!("wrote {} and {}", json_path.display(), md_path.display());
        anyhow::ensure!(
            ok,
            "{} failed: {}",
            self.scenario,
            outcome.failures.join("; ")
        );
        Ok(())
    }

    fn markdown(&self, outcome: &Outcome) -> String {
        let mut md = format!(
            "## `{}` on {}\n\n| figure | value |\n|---|---|\n",
            self.scenario, self.topology
        );
        for (figure, value) in &outcome.table {
            md.push_str(&format!("| {figure} | {value} |\n"));
        }
        md.push('\n');
        if outcome.failures.is_empty() {
            md.push_str("Result: **clean** (every check the tool makes passed).\n\n");
        } else {
            md.push_str(&format!(
                "Result: **FAILED**: {}.\n\n",
                outcome.failures.join("; ")
            ));
        }
        for note in &outcome.notes {
            md.push_str(note);
            md.push_str("\n\n");
        }
        let [l1, l5, l15] = self.load_at_start;
        let load = format!("load average at the start: {l1:.2} / {l5:.2} / {l15:.2}");
        let others = if l1 > self.cores as f64 / 2.0 {
            format!(
                "; other processes were busy on the same machine ({load}), so the figures \
                 are noisy"
            )
        } else {
            format!(" ({load})")
        };
        md.push_str(&format!(
            "Machine: {} cores, {} MiB, loopback only; the load generator shares the cores \
             with what it measures{others}. Date: {}. Source: {}. Command:\n\n    \
             cargo build --release -p tradecast -p tradecast-bench\n    {}\n",
            self.cores, self.mem_total_mib, self.date, self.source, self.command
        ));
        md
    }
}

fn with_ext(base: &Path, ext: &str) -> PathBuf {
    let mut path = base.as_os_str().to_owned();
    path.push(".");
    path.push(ext);
    PathBuf::from(path)
}

/// The current UTC time as `2026-11-27T23:51:10Z`.
fn utc_now() -> String {
    let secs = crate::common::now_us() / 1_000_000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) of the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_days_to_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_875), (2024, 6, 1));
        assert_eq!(civil_from_days(20_784), (2026, 11, 27));
    }
}
