//! The fuzz targets' inputs (`fuzz/`), for the regression tests that replay them in
//! plain `cargo test`: the committed seeds (`fuzz/corpus/<target>/`) and every input
//! that once crashed a target (`fuzz/regressions/<target>/`).

use std::path::PathBuf;

/// Every seed and regression input of `target`, as (file path, bytes). Panics when
/// there is none: a renamed target must not turn its regression test into a no-op.
pub fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut inputs = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("readable fuzz directory").path();
            let bytes = std::fs::read(&path).expect("readable fuzz input");
            inputs.push((path.display().to_string(), bytes));
        }
    }
    assert!(
        !inputs.is_empty(),
        "no fuzz inputs for {target} under {}",
        fuzz.display()
    );
    inputs
}
