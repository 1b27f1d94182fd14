//! Finding the tool calls in a payload as a model's API returns it: OpenAI
//! chat completions (`tool_calls`, or a response's `choices[0].message`),
//! OpenAI responses (`output[]` items of type `function_call`) and Anthropic
//! messages (`content[]` blocks of type `tool_use`); a message, a list of
//! messages or items, or a response. Items that are not calls (text,
//! thinking, reasoning, tool results) are passed over; an item of a type
//! not known here, a shape that could be read two ways, or calls of two
//! dialects in one payload are refused.

use super::IngestError;
use serde_json::{Map, Value};

/// Which API's form a call came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAiChat,
    OpenAiResponses,
    Anthropic,
}

impl Dialect {
    fn name(self) -> &'static str {
        match self {
            Dialect::OpenAiChat => "OpenAI chat tool_calls",
            Dialect::OpenAiResponses => "OpenAI responses function_call",
            Dialect::Anthropic => "Anthropic tool_use",
        }
    }
}

/// One call found, its arguments parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Where it is in the payload (`choices[0].message.tool_calls[1]`).
    pub at: String,
    pub id: Option<String>,
    pub name: String,
    pub dialect: Dialect,
    pub args: Map<String, Value>,
}

/// Item types that are not calls and carry none.
const NOT_CALLS: &[&str] = &[
    "text",
    "thinking",
    "redacted_thinking",
    "tool_result",
    "image",
    "document",
    "reasoning",
    "output_text",
    "input_text",
    "refusal",
    "function_call_output",
];

/// The calls of `payload`, in order.
pub fn extract(payload: &Value) -> Result<Vec<Call>, IngestError> {
    let mut out = Vec::new();
    match payload {
        Value::Array(items) if items.is_empty() => return Err(IngestError::payload("the list is empty")),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                item_or_message(item, &format!("[{i}]"), &mut out)?;
            }
        }
        Value::Object(o) if o.contains_key("entries") => {
            return Err(IngestError::payload("this is a cloche batch file (it has \"entries\"), not tool calls"))
        }
        Value::Object(_) => item_or_message(payload, "", &mut out)?,
        _ => return Err(IngestError::payload("expected a message, a list of messages or calls, or a response")),
    }
    if out.is_empty() {
        return Err(IngestError::payload("no tool calls found"));
    }
    if let Some(other) = out.iter().find(|c| c.dialect != out[0].dialect) {
        return Err(IngestError::payload(format!(
            "mixes {} ({}) and {} ({}): send one model's output",
            out[0].dialect.name(),
            out[0].at,
            other.dialect.name(),
            other.at
        )));
    }
    Ok(out)
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

fn array<'a>(o: &'a Map<String, Value>, key: &str, at: &str) -> Result<&'a Vec<Value>, IngestError> {
    o[key].as_array().ok_or_else(|| IngestError::payload(format!("{}: not a list", join(at, key))))
}

/// An object: a response, a message, a call, or an item that is no call.
fn item_or_message(v: &Value, at: &str, out: &mut Vec<Call>) -> Result<(), IngestError> {
    let here = if at.is_empty() { "the payload" } else { at };
    let o = v.as_object().ok_or_else(|| IngestError::payload(format!("{here}: not an object")))?;
    let ty = o.get("type").and_then(Value::as_str);
    let call = matches!(ty, Some("tool_use" | "function_call"))
        || (o.get("function").is_some_and(Value::is_object) && matches!(ty, None | Some("function")));
    let has = |k: &str| o.contains_key(k);
    let content_list = o.get("content").is_some_and(Value::is_array);
    // What the object could be read as: more than one is ambiguous (an
    // OpenAI message may carry text `content` beside its `tool_calls`).
    let mut shapes: Vec<&str> = Vec::new();
    if call {
        shapes.push("a tool call");
    }
    if has("choices") {
        shapes.push("a chat completion (choices)");
    }
    if has("output") && ty != Some("function_call_output") {
        shapes.push("a response (output)");
    }
    if has("tool_calls") || (content_list && !has("choices") && !has("output")) {
        shapes.push("a message");
    }
    if shapes.len() > 1 {
        return Err(IngestError::payload(format!("{here}: ambiguous: could be {}", shapes.join(" or "))));
    }
    if call {
        return call_of(o, at, ty, out);
    }
    if has("choices") {
        let choices = array(o, "choices", at)?;
        if choices.len() != 1 {
            return Err(IngestError::payload(format!(
                "{}: {} choices (alternatives, not steps): send the one to run",
                join(at, "choices"),
                choices.len()
            )));
        }
        let at = join(at, "choices[0]");
        let msg = choices[0].get("message").ok_or_else(|| IngestError::payload(format!("{at}: no message")))?;
        return message(msg, &join(&at, "message"), out);
    }
    if has("output") {
        let at_out = join(at, "output");
        for (i, item) in array(o, "output", at)?.iter().enumerate() {
            item_or_message(item, &format!("{at_out}[{i}]"), out)?;
        }
        return Ok(());
    }
    if has("tool_calls") || content_list || has("role") {
        return message(v, at, out);
    }
    match ty {
        Some(t) if NOT_CALLS.contains(&t) => Ok(()),
        Some(t) => Err(IngestError::payload(format!(
            "{here}: item of type {t:?}: not a function or tool_use call cloche can run"
        ))),
        None => Err(IngestError::payload(format!(
            "{here}: neither a message, a response nor a tool call (expected tool_calls, content, choices or output)"
        ))),
    }
}

/// A message: its `tool_calls` (OpenAI) and its `content` blocks (Anthropic).
fn message(v: &Value, at: &str, out: &mut Vec<Call>) -> Result<(), IngestError> {
    let here = if at.is_empty() { "the payload" } else { at };
    let o = v.as_object().ok_or_else(|| IngestError::payload(format!("{here}: not an object")))?;
    if let Some(calls) = o.get("tool_calls").filter(|c| !c.is_null()) {
        let calls =
            calls.as_array().ok_or_else(|| IngestError::payload(format!("{}: not a list", join(at, "tool_calls"))))?;
        for (i, c) in calls.iter().enumerate() {
            let at = format!("{}[{i}]", join(at, "tool_calls"));
            let co = c.as_object().ok_or_else(|| IngestError::payload(format!("{at}: not an object")))?;
            call_of(co, &at, co.get("type").and_then(Value::as_str), out)?;
        }
    }
    if let Some(blocks) = o.get("content").and_then(Value::as_array) {
        for (i, b) in blocks.iter().enumerate() {
            let at = format!("{}[{i}]", join(at, "content"));
            let bo = b.as_object().ok_or_else(|| IngestError::payload(format!("{at}: not an object")))?;
            match bo.get("type").and_then(Value::as_str) {
                Some("tool_use") => call_of(bo, &at, Some("tool_use"), out)?,
                Some(t) if NOT_CALLS.contains(&t) => {}
                Some(t) => {
                    return Err(IngestError::payload(format!(
                        "{at}: block of type {t:?}: not a tool_use call cloche can run"
                    )))
                }
                None => return Err(IngestError::payload(format!("{at}: a content block without a type"))),
            }
        }
    }
    Ok(())
}

/// One call, of the type `ty` says; its arguments parsed into an object.
fn call_of(o: &Map<String, Value>, at: &str, ty: Option<&str>, out: &mut Vec<Call>) -> Result<(), IngestError> {
    let index = out.len();
    let id_key = if ty == Some("function_call") { "call_id" } else { "id" };
    let id = o.get(id_key).or_else(|| o.get("id")).and_then(Value::as_str).map(String::from);
    let (dialect, fields) = match ty {
        Some("tool_use") => (Dialect::Anthropic, o),
        Some("function_call") => (Dialect::OpenAiResponses, o),
        None | Some("function") => {
            let f = o.get("function").and_then(Value::as_object);
            let f = f.ok_or_else(|| IngestError::call(index, at, id.as_deref(), None, "no \"function\" object"))?;
            (Dialect::OpenAiChat, f)
        }
        Some(t) => {
            let msg = format!("a call of type {t:?}, not a function call cloche can run");
            return Err(IngestError::call(index, at, id.as_deref(), None, msg));
        }
    };
    let name = match fields.get("name") {
        Some(Value::String(n)) if !n.is_empty() => n.clone(),
        _ => return Err(IngestError::call(index, at, id.as_deref(), None, "no tool name (a non-empty string)")),
    };
    let fail = |msg: String| IngestError::call(index, at, id.as_deref(), Some(&name), msg);
    let args = match dialect {
        Dialect::Anthropic => match fields.get("input") {
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(fail("input is not an object".into())),
            None => return Err(fail("no input".into())),
        },
        _ => match fields.get("arguments") {
            // The API's form: a string of JSON, parsed here.
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(Value::Object(m)) => m,
                Ok(_) => return Err(fail("arguments are not a JSON object".into())),
                Err(e) => return Err(fail(format!("arguments are not valid JSON: {e}"))),
            },
            // Some servers (Ollama) send the object itself.
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(fail("arguments are neither a JSON string nor an object".into())),
            None => return Err(fail("no arguments".into())),
        },
    };
    out.push(Call { at: at.to_string(), id, name, dialect, args });
    Ok(())
}
