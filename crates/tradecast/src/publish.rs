//! `tradecast publish`: write ingest events from a file or stdin into the streams.
//!
//! The input is read on a plain thread (reading stdin blocks), validated line by line,
//! and handed over a bounded channel to the async side, which writes whatever has
//! arrived, up to [`BATCH`] events, in one pipelined round trip. A file therefore goes
//! out in full batches, while `producer | tradecast publish` forwards each line as
//! soon as it comes.
//!
//! The first bad line ends the input: the events before it are written, it and
//! everything after it are not, and the error names its line number.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{Context, bail};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tradecast_ingest::writer::StreamWriter;
use tradecast_protocol::ingest;

use crate::cli::PublishArgs;

/// Most events written in one round trip.
pub const BATCH: usize = 500;

pub async fn run(args: PublishArgs) -> anyhow::Result<()> {
    let (name, input): (String, Box<dyn Read + Send>) = match &args.file {
        Some(path) if path != Path::new("-") => {
            let file =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            (path.display().to_string(), Box::new(file))
        }
        _ => ("stdin".to_owned(), Box::new(std::io::stdin())),
    };
    let mut writer = StreamWriter::connect_to(
        &args.streams.target(),
        args.streams.layout(),
        args.streams.maxlen,
    )
    .await?;

    let (tx, mut rx) = mpsc::channel::<Value>(BATCH * 4);
    let reader = std::thread::spawn(move || {
        read_events(BufReader::new(input), |event| {
            tx.blocking_send(event).is_ok()
        })
    });

    let mut published = 0usize;
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(event) = rx.recv().await {
        batch.push(event);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        writer
            .write(&batch)
            .await
            .with_context(|| format!("after publishing {published} events"))?;
        published += batch.len();
        batch.clear();
    }
    // The channel closes when the reader is done: at the end of the input, or at the
    // first bad line after handing over every event before it.
    match reader.join() {
        Ok(Ok(())) => {}
        Ok(Err(error)) => bail!(
            "{name}: {error:#}; the {published} events before it were published, \
             nothing from there on"
        ),
        Err(_) => bail!("the input reader panicked"),
    }
    println!("published {published} events");
    Ok(())
}

/// Reads JSON lines, or one JSON array, and hands each valid event to `emit` in input
/// order. Stops early, without error, when `emit` returns false. The error for a bad
/// event names its line (1-based) and the reason.
fn read_events(mut input: impl BufRead, mut emit: impl FnMut(Value) -> bool) -> anyhow::Result<()> {
    let mut text = String::new();
    let mut line_no = 0usize;
    // Blank lines until the first content decide the format.
    loop {
        text.clear();
        if input.read_line(&mut text).context("reading the input")? == 0 {
            return Ok(());
        }
        line_no += 1;
        if !text.trim().is_empty() {
            break;
        }
    }
    if text.trim_start().starts_with('[') {
        let first_line = line_no;
        input
            .read_to_string(&mut text)
            .context("reading the input")?;
        return read_array(&text, first_line, emit);
    }
    loop {
        if !text.trim().is_empty() {
            let event = event_from_json(&text).with_context(|| format!("line {line_no}"))?;
            if !emit(event) {
                return Ok(());
            }
        }
        text.clear();
        if input.read_line(&mut text).context("reading the input")? == 0 {
            return Ok(());
        }
        line_no += 1;
    }
}

/// A JSON array of events; `text` starts on line `first_line` of the input.
fn read_array(
    text: &str,
    first_line: usize,
    mut emit: impl FnMut(Value) -> bool,
) -> anyhow::Result<()> {
    // RawValue keeps each element as the slice of `text` it was parsed from, so its
    // position gives the line it starts on.
    let elements: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| {
        anyhow::anyhow!(
            "line {}: not a JSON array of events: {e}",
            first_line + e.line().saturating_sub(1)
        )
    })?;
    let mut line = first_line;
    let mut scanned = 0usize;
    for element in elements {
        let raw = element.get();
        let offset = raw.as_ptr() as usize - text.as_ptr() as usize;
        line += text[scanned..offset].matches('\n').count();
        scanned = offset;
        let event = event_from_json(raw).with_context(|| format!("line {line}"))?;
        if !emit(event) {
            return Ok(());
        }
    }
    Ok(())
}

/// One event, checked as the gateway will check it.
fn event_from_json(json: &str) -> anyhow::Result<Value> {
    let event: Value = serde_json::from_str(json).map_err(|e| anyhow::anyhow!("not JSON: {e}"))?;
    if let Err(error) = ingest::parse_value(event.clone()) {
        bail!("{}", error.reason());
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(seq: u64) -> String {
        format!(
            r#"{{"v":1,"type":"tick","src":"s","seq":{seq},"ts":1,"symbol":"EURUSD","bid":1.1,"ask":1.2}}"#
        )
    }

    /// The `seq`s read, and the error if any.
    fn read(input: &str) -> (Vec<u64>, Option<String>) {
        let mut seqs = Vec::new();
        let result = read_events(input.as_bytes(), |event| {
            seqs.push(event["seq"].as_u64().expect("seq"));
            true
        });
        (seqs, result.err().map(|e| format!("{e:#}")))
    }

    #[test]
    fn reads_json_lines_skipping_blank_ones() {
        let input = format!("\n{}\n\n  {}  \n{}", tick(1), tick(2), tick(3));
        assert_eq!(read(&input), (vec![1, 2, 3], None));
        assert_eq!(read(""), (vec![], None));
        assert_eq!(read("\n \n"), (vec![], None));
    }

    #[test]
    fn a_bad_line_stops_the_input_and_is_named() {
        let input = format!("{}\n\n{}\n{{nope\n{}\n", tick(1), tick(2), tick(4));
        let (seqs, error) = read(&input);
        assert_eq!(seqs, [1, 2]);
        let error = error.expect("an error");
        assert!(error.starts_with("line 4: not JSON: "), "{error}");

        let input = format!(
            "{}\n{}\n",
            tick(1),
            tick(2).replace("\"ask\":1.2", "\"ask\":1.05")
        );
        assert_eq!(
            read(&input),
            (
                vec![1],
                Some("line 2: tick: ask 1.05 is below bid 1.1".into())
            )
        );
    }

    #[test]
    fn reads_an_array_and_names_the_line_of_a_bad_element() {
        let input = format!("\n[\n  {},\n  {}\n]\n", tick(1), tick(2));
        assert_eq!(read(&input), (vec![1, 2], None));
        let input = format!("[{}, {},\n {},\n {{\"v\":1}}]", tick(1), tick(2), tick(3));
        assert_eq!(
            read(&input),
            (vec![1, 2, 3], Some("line 3: missing field type".into()))
        );
        let (seqs, error) = read("[\n{\"v\":1},\n");
        assert!(seqs.is_empty());
        assert!(
            error
                .expect("an error")
                .starts_with("line 3: not a JSON array of events: ")
        );
    }

    #[test]
    fn stops_quietly_when_the_consumer_is_gone() {
        let input = format!("{}\n{}\n", tick(1), tick(2));
        let mut calls = 0;
        let result = read_events(input.as_bytes(), |_| {
            calls += 1;
            false
        });
        assert!(result.is_ok());
        assert_eq!(calls, 1);
    }
}
