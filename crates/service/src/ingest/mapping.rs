//! Which tool names are shell commands, and where their command string is:
//! the built-in names (docs/tool-calls.md says where each comes from) and a
//! mapping file (`--tools FILE`, TOML or JSON).
//!
//! ```toml
//! defaults = true          # keep the built-in names (the default)
//! [[tools]]
//! tool = "run_in_container"
//! command_field = "script"
//! cwd_field = "dir"        # optional
//! ```
//!
//! JSON takes the same object, a list of mappings, or one mapping
//! (`{"tool": "bash", "command_field": "command"}`). A tool the file names
//! replaces the built-in mapping of that name.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// One tool that is a shell command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolMap {
    /// The tool's name as the model calls it (case matters).
    pub tool: String,
    /// The argument holding the command line (a string).
    pub command_field: String,
    /// The argument holding the directory to run in (a string: absolute,
    /// or relative to the project), if the tool has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd_field: Option<String>,
}

/// A mapping file, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingFile {
    /// Keep the built-in names (default true).
    #[serde(default = "yes")]
    pub defaults: bool,
    #[serde(default)]
    pub tools: Vec<ToolMap>,
}

fn yes() -> bool {
    true
}

/// The built-in mappings: (tool, command field, cwd field).
pub const BUILTIN: &[(&str, &str, Option<&str>)] = &[
    ("bash", "command", None),
    ("Bash", "command", None),
    ("shell", "command", Some("workdir")),
    ("run_shell_command", "command", Some("directory")),
    ("execute_command", "command", Some("cwd")),
    ("execute_bash", "command", None),
    ("run_terminal_cmd", "command", None),
    ("run_terminal_command", "command", None),
    ("terminal", "command", None),
    ("exec_command", "cmd", Some("workdir")),
];

/// The mappings in force: tool name → mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    tools: BTreeMap<String, ToolMap>,
}

impl Default for Mapping {
    fn default() -> Self {
        Mapping::from_file(MappingFile { defaults: true, tools: Vec::new() }).expect("the built-in mappings are valid")
    }
}

impl Mapping {
    /// The mapping of `tool`, if it is a shell command.
    pub fn get(&self, tool: &str) -> Option<&ToolMap> {
        self.tools.get(tool)
    }

    /// The tool names mapped, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.tools.keys().map(String::as_str).collect()
    }

    /// Checks a mapping file and resolves it over the built-in names.
    pub fn from_file(file: MappingFile) -> Result<Mapping, String> {
        let mut tools = BTreeMap::new();
        if file.defaults {
            for (tool, command, cwd) in BUILTIN {
                let m = ToolMap {
                    tool: tool.to_string(),
                    command_field: command.to_string(),
                    cwd_field: cwd.map(String::from),
                };
                tools.insert(tool.to_string(), m);
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, m) in file.tools.into_iter().enumerate() {
            let at = format!("tools[{i}]");
            if m.tool.trim().is_empty() {
                return Err(format!("{at}.tool: is empty"));
            }
            if m.command_field.is_empty() {
                return Err(format!("{at}.command_field: is empty"));
            }
            if m.cwd_field.as_deref().is_some_and(|c| c.is_empty() || c == m.command_field) {
                return Err(format!("{at}.cwd_field: empty or the same as command_field"));
            }
            if !seen.insert(m.tool.clone()) {
                return Err(format!("{at}.tool: {:?} is mapped twice", m.tool));
            }
            tools.insert(m.tool.clone(), m);
        }
        if tools.is_empty() {
            return Err("no tool is mapped (defaults = false and no [[tools]])".into());
        }
        Ok(Mapping { tools })
    }

    /// A mapping file's text: TOML when `toml`, else JSON (an object as in
    /// TOML, a list of mappings, or one mapping).
    pub fn parse(text: &str, toml: bool) -> Result<Mapping, String> {
        if toml {
            let file: MappingFile = toml::from_str(text).map_err(|e| e.message().trim().to_string())?;
            return Mapping::from_file(file);
        }
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        Mapping::from_value(v)
    }

    /// A mapping given as JSON (the daemon's `tools`): the forms of
    /// [`Mapping::parse`].
    pub fn from_value(v: Value) -> Result<Mapping, String> {
        let single = v.as_object().is_some_and(|o| o.contains_key("tool"));
        let file = match v {
            Value::Array(_) => {
                MappingFile { defaults: true, tools: serde_json::from_value(v).map_err(|e| e.to_string())? }
            }
            _ if single => {
                MappingFile { defaults: true, tools: vec![serde_json::from_value(v).map_err(|e| e.to_string())?] }
            }
            Value::Object(_) => serde_json::from_value(v).map_err(|e| e.to_string())?,
            _ => return Err("a mapping is an object or a list of {\"tool\", \"command_field\"} objects".into()),
        };
        Mapping::from_file(file)
    }

    /// Reads a mapping file: TOML when its name ends in `.toml`, else JSON.
    pub fn from_path(path: &std::path::Path) -> Result<Mapping, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("--tools {}: {e}", path.display()))?;
        let toml = path.extension().is_some_and(|e| e == "toml");
        Mapping::parse(&text, toml).map_err(|e| format!("--tools {}: {e}", path.display()))
    }

    /// This mapping as a [`MappingFile`] that resolves to it (what the CLI
    /// sends the daemon).
    pub fn to_file(&self) -> MappingFile {
        MappingFile { defaults: false, tools: self.tools.values().cloned().collect() }
    }
}
