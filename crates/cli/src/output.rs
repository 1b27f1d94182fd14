//! `--json`: one document per command on stdout, each with a
//! `schema_version`. The documents and their JSON Schemas are the
//! service's (`cloche_service::output`, `cloche_service::schema`).

pub use cloche_service::output::*;
use serde::Serialize;
use std::io::Write;

/// Prints `doc` (an object) pretty on stdout with `schema_version` added;
/// a reader that went away is not an error.
pub fn emit(doc: &impl Serialize) -> Result<(), String> {
    let mut v = serde_json::to_value(doc).map_err(|e| format!("json: {e}"))?;
    if let Some(o) = v.as_object_mut() {
        o.insert("schema_version".into(), SCHEMA_VERSION.into());
    }
    let mut text = serde_json::to_vec_pretty(&v).map_err(|e| format!("json: {e}"))?;
    text.push(b'\n');
    let mut out = std::io::stdout().lock();
    match out.write_all(&text).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(format!("stdout: {e}")),
        _ => Ok(()),
    }
}
