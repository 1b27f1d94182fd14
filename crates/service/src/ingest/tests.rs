//! Real-shaped payloads → the batch, or the error, each must give.

use super::*;
use serde_json::json;

fn target() -> Target {
    Target { project: "/srv/p".into(), agent: Some("a1".into()), stop_on_failure: true }
}

/// The entries' (command, cwd) of a payload under the built-in mapping.
fn ok(payload: Value) -> Vec<(String, Option<String>)> {
    let b = to_batch(&payload, &Mapping::default(), &target()).unwrap_or_else(|e| panic!("{payload}: {e}"));
    assert_eq!((b.project.as_str(), b.agent.as_deref()), ("/srv/p", Some("a1")));
    b.entries.into_iter().map(|e| (e.command, e.cwd)).collect()
}

fn err(payload: Value) -> String {
    match to_batch(&payload, &Mapping::default(), &target()) {
        Ok(b) => panic!("{payload}: accepted as {b:?}"),
        Err(e) => e.to_string(),
    }
}

fn cmds(list: &[&str]) -> Vec<(String, Option<String>)> {
    list.iter().map(|c| (c.to_string(), None)).collect()
}

fn openai_call(id: &str, name: &str, args: Value) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": args.to_string()}})
}

#[test]
fn openai_message_with_several_calls_and_quoting() {
    let tricky = "printf '%s\\n' \"a b\" 'it'\"'\"'s' && echo \"$HOME\"\ncat <<'EOF'\nx\nEOF";
    let msg = json!({"role": "assistant", "content": null, "tool_calls": [
        openai_call("call_1", "bash", json!({"command": "npm install"})),
        openai_call("call_2", "run_shell_command", json!({"command": tricky, "directory": "web", "description": "d"})),
        openai_call("call_3", "exec_command", json!({"cmd": "ls -la", "workdir": "/srv/p/sub"})),
    ]});
    let want = vec![
        ("npm install".to_string(), None),
        (tricky.to_string(), Some("/srv/p/web".to_string())),
        ("ls -la".to_string(), Some("/srv/p/sub".to_string())),
    ];
    assert_eq!(ok(msg.clone()), want);
    // The same message in a chat completion, and in a list of messages
    // with the user's turn and the tool results around it.
    let response = json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": msg.clone()}]});
    assert_eq!(ok(response), want);
    let convo = json!([{"role": "user", "content": "set it up"}, msg,
        {"role": "tool", "tool_call_id": "call_1", "content": "done"}]);
    assert_eq!(ok(convo), want);
    // A bare list of calls, and one call.
    assert_eq!(ok(json!([openai_call("c", "shell", json!({"command": "make"}))])), cmds(&["make"]));
    assert_eq!(ok(openai_call("c", "Bash", json!({"command": "make"}))), cmds(&["make"]));
    // Arguments as an object (Ollama's form).
    let ollama =
        json!({"role": "assistant", "tool_calls": [{"function": {"name": "bash", "arguments": {"command": "id"}}}]});
    assert_eq!(ok(ollama), cmds(&["id"]));
}

#[test]
fn openai_responses_items() {
    let resp = json!({"id": "resp_1", "object": "response", "output": [
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "function_call", "id": "fc_1", "call_id": "call_a", "name": "bash", "arguments": "{\"command\":\"make test\"}"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
    ]});
    assert_eq!(ok(resp), cmds(&["make test"]));
}

#[test]
fn anthropic_forms() {
    let blocks = json!([
        {"type": "text", "text": "Installing."},
        {"type": "tool_use", "id": "toolu_01", "name": "bash", "input": {"command": "npm install\nnpm test"}},
        {"type": "tool_use", "id": "toolu_02", "name": "execute_command", "input": {"command": "echo \"q\" 'r'", "cwd": "."}},
    ]);
    let want = vec![("npm install\nnpm test".to_string(), None), ("echo \"q\" 'r'".to_string(), None)];
    assert_eq!(ok(blocks.clone()), want);
    let msg = json!({"role": "assistant", "content": blocks.clone()});
    assert_eq!(ok(msg.clone()), want);
    let response = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
        "stop_reason": "tool_use", "content": blocks});
    assert_eq!(ok(response), want);
    let convo =
        json!([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t0", "content": "x"}]}, msg]);
    assert_eq!(ok(convo), want);
}

#[test]
fn calls_that_do_not_map_are_named() {
    let two = |second: Value| json!({"role": "assistant", "tool_calls": [openai_call("call_1", "bash", json!({"command": "ls"})), second]});
    let cases = [
        (two(openai_call("call_2", "web_search", json!({"q": "x"}))), "tool call 1 (id \"call_2\", tool \"web_search\") at tool_calls[1]: tool \"web_search\" is not a shell command"),
        (two(openai_call("call_2", "bash", json!({"cmd": "ls"}))), "tool call 1 (id \"call_2\", tool \"bash\") at tool_calls[1]: no argument \"command\""),
        (two(openai_call("call_2", "bash", json!({"command": ["ls", "-l"]}))), "argument \"command\" is a list, not a string"),
        (two(openai_call("call_2", "bash", json!({"command": "  "}))), "tool call 1 (id \"call_2\", tool \"bash\") at tool_calls[1]: the command is empty"),
        (two(openai_call("call_2", "shell", json!({"command": "ls", "workdir": 3}))), "argument \"workdir\" is a number, not a string"),
        (two(json!({"id": "call_2", "type": "function", "function": {"name": "bash", "arguments": "{\"command\": \"ls"}})), "tool call 1 (id \"call_2\", tool \"bash\") at tool_calls[1]: arguments are not valid JSON: EOF while parsing"),
        (two(json!({"id": "call_2", "type": "function", "function": {"name": "bash", "arguments": "[\"ls\"]"}})), "arguments are not a JSON object"),
        (two(json!({"id": "call_2", "type": "function", "function": {"arguments": "{}"}})), "tool call 1 (id \"call_2\") at tool_calls[1]: no tool name"),
        (two(json!({"id": "call_2", "type": "custom", "custom": {"name": "bash", "input": "ls"}})), "tool call 1 (id \"call_2\") at tool_calls[1]: a call of type \"custom\""),
        (json!([{"type": "tool_use", "id": "toolu_9", "name": "bash", "input": "ls"}]), "tool call 0 (id \"toolu_9\", tool \"bash\") at [0]: input is not an object"),
        (json!({"role": "assistant", "content": [{"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}]}), "content[0]: block of type \"server_tool_use\""),
        (two(openai_call("call_2", "shell", json!({"command": "ls", "workdir": "../etc"}))), "entries[1].cwd"),
    ];
    for (payload, want) in cases {
        let got = err(payload);
        assert!(got.contains(want), "got {got:?}\nwant {want:?}");
    }
}

#[test]
fn shapes_that_are_no_calls_or_ambiguous_are_refused() {
    let call = openai_call("c", "bash", json!({"command": "ls"}));
    let block = json!({"type": "tool_use", "id": "t", "name": "bash", "input": {"command": "ls"}});
    let cases = [
        (json!([]), "the list is empty"),
        (json!("ls"), "expected a message"),
        (json!({"role": "assistant", "content": "I will not run anything."}), "no tool calls found"),
        (json!({"project": "/srv/p", "entries": [{"command": "ls"}]}), "cloche batch file"),
        (json!({"choices": [{"message": {"tool_calls": [call]}}, {"message": {"tool_calls": [call]}}]}), "2 choices"),
        (json!({"role": "assistant", "tool_calls": [call], "content": [block]}), "mixes OpenAI chat tool_calls"),
        (json!([call, block]), "mixes OpenAI chat tool_calls ([0]) and Anthropic tool_use ([1])"),
        (json!({"choices": [], "tool_calls": []}), "ambiguous: could be a chat completion (choices) or a message"),
        (json!({"type": "tool_use", "name": "bash", "input": {}, "content": []}), "ambiguous"),
        (json!({"hello": 1}), "neither a message"),
        (json!([{"role": "assistant", "tool_calls": "ls"}]), "[0].tool_calls: not a list"),
        (json!([1]), "[0]: not an object"),
    ];
    for (payload, want) in cases {
        let got = err(payload);
        assert!(got.contains(want), "got {got:?}\nwant {want:?}");
    }
}

#[test]
fn mapping_files() {
    let toml =
        "defaults = false\n[[tools]]\ntool = \"sandbox_exec\"\ncommand_field = \"script\"\ncwd_field = \"dir\"\n";
    let m = Mapping::parse(toml, true).unwrap();
    assert_eq!(m.names(), ["sandbox_exec"]);
    let p = json!([{"type": "tool_use", "id": "t1", "name": "sandbox_exec", "input": {"script": "make", "dir": "b"}}]);
    let b = to_batch(&p, &m, &target()).unwrap();
    assert_eq!((b.entries[0].command.as_str(), b.entries[0].cwd.as_deref()), ("make", Some("/srv/p/b")));
    // Without the defaults, bash no longer maps.
    let p = json!([{"type": "tool_use", "id": "t2", "name": "bash", "input": {"command": "ls"}}]);
    assert!(to_batch(&p, &m, &target()).unwrap_err().to_string().contains("mapped: sandbox_exec"));
    // JSON: one mapping (kept beside the defaults), a list, the object; it
    // replaces the built-in mapping of its name.
    let one = Mapping::parse(r#"{"tool": "bash", "command_field": "script"}"#, false).unwrap();
    assert_eq!(one.get("bash").unwrap().command_field, "script");
    assert!(one.get("shell").is_some());
    assert_eq!(
        Mapping::parse(r#"[{"tool": "x", "command_field": "c"}]"#, false).unwrap().get("x").unwrap().command_field,
        "c"
    );
    assert_eq!(Mapping::from_value(serde_json::to_value(one.to_file()).unwrap()).unwrap(), one);
    for (text, is_toml, want) in [
        ("[[tools]]\ntool = \"x\"\n", true, "missing field `command_field`"),
        ("[[tools]]\ntool = \"x\"\ncommand_field = \"c\"\nshell = true\n", true, "unknown field `shell`"),
        (r#"[{"tool": "x", "command_field": "c"}, {"tool": "x", "command_field": "d"}]"#, false, "mapped twice"),
        (r#"{"tool": "", "command_field": "c"}"#, false, "tools[0].tool: is empty"),
        (r#"{"defaults": false}"#, false, "no tool is mapped"),
        (r#"{"tool": "x", "command_field": "c", "cwd_field": "c"}"#, false, "cwd_field"),
        ("{", false, "EOF"),
        ("3", false, "a mapping is an object"),
    ] {
        let got = Mapping::parse(text, is_toml).unwrap_err();
        assert!(got.contains(want), "{text}: got {got:?}, want {want:?}");
    }
}

#[test]
fn daemon_bodies() {
    let body = json!({"project": "/srv/p", "agent": "a1", "tools": {"tool": "t", "command_field": "c"},
        "tool_calls": [{"type": "tool_use", "id": "x", "name": "t", "input": {"c": "true"}}]});
    let b = submission(body).unwrap();
    assert_eq!((b.entries.len(), b.entries[0].command.as_str(), b.stop_on_failure), (1, "true", true));
    let file = json!({"project": "/srv/p", "entries": [{"command": "true"}]});
    assert_eq!(submission(file).unwrap().entries[0].command, "true");
    let bad = submission(json!({"role": "assistant", "tool_calls": []})).unwrap_err().to_string();
    assert!(bad.contains("unknown field `role`"), "{bad}");
    let unmapped = json!({"project": "/srv/p", "tool_calls": [openai_call("c9", "python", json!({"code": "1"}))]});
    assert!(submission(unmapped).unwrap_err().to_string().contains("tool call 0 (id \"c9\", tool \"python\")"));
}
