//! Tool-call ingestion: the tool calls a model emitted (OpenAI `tool_calls`
//! or responses `function_call` items, Anthropic `tool_use` blocks) turned
//! into a batch, each call that a [`Mapping`] names a shell command becoming
//! one entry, in order. Anything that does not map is refused with one error
//! naming the call (its index among the calls, from 0, its id and tool, its
//! place in the payload); nothing is recorded then. Pure: no file, no
//! broker. `docs/tool-calls.md` describes the forms and the mapping file.

mod formats;
pub mod mapping;
#[cfg(test)]
mod tests;

pub use formats::{extract, Call, Dialect};
pub use mapping::{Mapping, MappingFile, ToolMap};

use cloche_broker::{BatchFile, EntrySpec, Limits};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why tool calls were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The payload as a whole (malformed, ambiguous, no calls).
    #[error("tool calls: {0}")]
    Payload(String),
    /// One call: its index among the calls (from 0), id, tool, place.
    #[error("tool call {index} ({who}) at {at}: {msg}")]
    Call { index: usize, who: String, at: String, msg: String },
}

impl IngestError {
    fn payload(msg: impl Into<String>) -> IngestError {
        IngestError::Payload(msg.into())
    }

    fn call(index: usize, at: &str, id: Option<&str>, name: Option<&str>, msg: impl Into<String>) -> IngestError {
        let mut who = Vec::new();
        if let Some(id) = id {
            who.push(format!("id {id:?}"));
        }
        if let Some(name) = name {
            who.push(format!("tool {name:?}"));
        }
        let who = if who.is_empty() { "no id".to_string() } else { who.join(", ") };
        let at = if at.is_empty() { "the payload".to_string() } else { at.to_string() };
        IngestError::Call { index, who, at, msg: msg.into() }
    }
}

/// What a batch made of tool calls runs as: the (absolute) project and the
/// batch's fields a batch file would give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub project: String,
    pub agent: Option<String>,
    pub stop_on_failure: bool,
}

/// The batch of `payload`'s tool calls, mapped by `mapping`, checked as a
/// batch file is (but for the entry limit: the project policy's, checked
/// when the broker records it).
pub fn to_batch(payload: &Value, mapping: &Mapping, target: &Target) -> Result<BatchFile, IngestError> {
    let calls = extract(payload)?;
    let mut entries = Vec::with_capacity(calls.len());
    for (index, c) in calls.iter().enumerate() {
        let fail = |msg: String| IngestError::call(index, &c.at, c.id.as_deref(), Some(&c.name), msg);
        let Some(m) = mapping.get(&c.name) else {
            return Err(fail(format!(
                "tool {:?} is not a shell command cloche knows (map it with --tools FILE; mapped: {})",
                c.name,
                mapping.names().join(", ")
            )));
        };
        let command = match c.args.get(&m.command_field) {
            Some(Value::String(s)) if s.trim().is_empty() => return Err(fail("the command is empty".into())),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(fail(format!("argument {:?} is {}, not a string", m.command_field, kind(other))))
            }
            None => return Err(fail(format!("no argument {:?} (the command)", m.command_field))),
        };
        let cwd = match m.cwd_field.as_ref().and_then(|f| c.args.get(f).map(|v| (f, v))) {
            None | Some((_, Value::Null)) => None,
            Some((_, Value::String(d))) if d.starts_with('/') => Some(d.clone()),
            Some((_, Value::String(d))) if d.is_empty() || d == "." => None,
            Some((_, Value::String(d))) => Some(format!("{}/{d}", target.project.trim_end_matches('/'))),
            Some((f, other)) => return Err(fail(format!("argument {f:?} is {}, not a string", kind(other)))),
        };
        entries.push(EntrySpec { command, cwd, env: Default::default(), timeout: None });
    }
    let batch = BatchFile {
        agent: target.agent.clone(),
        project: target.project.clone(),
        stop_on_failure: target.stop_on_failure,
        world: None,
        entries,
    };
    // entries[i] is call i: the file's own checks name the call by it.
    batch.validate(&Limits { max_entries: usize::MAX }).map_err(|e| IngestError::Payload(e.to_string()))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Tool calls submitted to the daemon (`POST /v1/batches` with
/// `tool_calls`): the payload, the mapping (the built-in names without
/// one) and the batch's fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCallSubmission {
    pub project: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default = "yes")]
    pub stop_on_failure: bool,
    /// A mapping in any JSON form of [`Mapping::from_value`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Value>,
    /// The payload: a message, a list, or a response.
    pub tool_calls: Value,
}

fn yes() -> bool {
    true
}

/// The batch a `POST /v1/batches` body asks for: a batch file, or tool
/// calls (`{"project", "tool_calls", "tools"?, "agent"?}`) made into one.
pub fn submission(body: Value) -> crate::Result<BatchFile> {
    let bad = |e: String| crate::Error::BatchFile(e);
    if body.as_object().is_some_and(|o| o.contains_key("tool_calls")) {
        let s: ToolCallSubmission = serde_json::from_value(body).map_err(|e| bad(format!("tool calls: {e}")))?;
        let mapping = match s.tools {
            None => Mapping::default(),
            Some(v) => Mapping::from_value(v).map_err(|e| bad(format!("tools: {e}")))?,
        };
        let target = Target { project: s.project, agent: s.agent, stop_on_failure: s.stop_on_failure };
        return to_batch(&s.tool_calls, &mapping, &target).map_err(|e| bad(e.to_string()));
    }
    let batch: BatchFile = serde_json::from_value(body).map_err(|e| bad(format!("batch file: {e}")))?;
    batch.validate(&Limits { max_entries: usize::MAX }).map_err(|e| bad(e.to_string()))
}

/// What `cloche batch submit FILE` read.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Batch(BatchFile),
    ToolCalls(Value),
}

/// Reads `cloche batch submit`'s input (`-`: stdin): a `.toml` file, or
/// text that does not start with `{` or `[`, is a TOML batch file; JSON is
/// a batch file when it has `entries`, else tool calls.
pub fn read_input(file: &std::path::Path) -> crate::Result<Input> {
    use std::io::Read;
    let bad = |e: String| crate::Error::BatchFile(e);
    let (text, name) = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| bad(format!("stdin: {e}")))?;
        (text, "stdin".to_string())
    } else {
        let text = std::fs::read_to_string(file).map_err(|e| bad(format!("{}: {e}", file.display())))?;
        (text, file.display().to_string())
    };
    let toml_name = file.extension().is_some_and(|e| e == "toml");
    let json = !toml_name && (file.as_os_str() != "-" || text.trim_start().starts_with(['{', '[']));
    if !json {
        return crate::batch::parse_batch(&text).map(Input::Batch);
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(format!("{name}: JSON: {e}")))?;
    if v.as_object().is_some_and(|o| o.contains_key("entries")) {
        // Parsed again as a batch file: its errors name their line.
        let loose = Limits { max_entries: usize::MAX };
        let batch = BatchFile::parse(&text, cloche_broker::Format::Json, &loose);
        return batch.map(Input::Batch).map_err(|e| bad(format!("{name}: {e}")));
    }
    Ok(Input::ToolCalls(v))
}
