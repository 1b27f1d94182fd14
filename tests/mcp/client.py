"""tests/mcp.rs's agent: the official MCP Python SDK (`mcp`, installed by
.ci/setup into target/mcp-venv) drives `cloche mcp` over stdio as a model's
client would. Every check is an assert; the Rust test reads the exit code
and this script's last line (a JSON summary).

Usage: client.py daemon  CLOCHE PROJECT SOCKET UID   (the agent as UID; root reviews)
       client.py private CLOCHE PROJECT                (root, no daemon: a private one)
"""

import asyncio
import json
import os
import subprocess
import sys

from mcp import ClientSession, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client

TOOLS = {"run", "submit_batch", "wait", "diff", "request_commit", "discard", "policy_check", "history"}


def structured(r):
    assert r.structured_content is not None, r.content[0].text if r.content else r
    return r.structured_content


async def call(s, name, args, progress=None):
    return await s.call_tool(name, args, progress_callback=progress)


async def lists_tools(s):
    tools = (await s.list_tools()).tools
    assert {t.name for t in tools} == TOOLS, [t.name for t in tools]
    for t in tools:
        assert t.description and len(t.description) > 40, t
        assert t.input_schema.get("type") == "object", t
    run = next(t for t in tools if t.name == "run")
    assert run.input_schema["required"] == ["command"], run.input_schema
    res = {str(r.uri) for r in (await s.list_resources()).resources}
    assert res == {"cloche://policy", "cloche://audit"}, res
    audit = json.loads((await s.read_resource("cloche://audit")).contents[0].text)
    assert audit.get("ok") is True or audit.get("valid") is True or "records" in audit, audit


async def runs_a_write(s, project):
    r = await call(s, "run", {"command": "echo hello > note.txt; echo written"})
    v = structured(r)
    assert not r.is_error and v["status"] == "ran" and v["exit_code"] == 0, v
    assert v["stdout"]["text"] == "written\n", v
    paths = [p["path"] for p in v["fs_diff"]["added"]["paths"]]
    assert os.path.join(project, "note.txt") in paths, v["fs_diff"]
    assert v["network"]["mode"] == "none", v["network"]
    assert not os.path.exists(os.path.join(project, "note.txt")), "the host changed"
    world = v["session"]["world"]
    assert world and v["session"]["run"] == 1, v["session"]
    # The next call continues the session's world: it reads what the first
    # wrote, and "this command" is its own change only, the session's both.
    r = await call(s, "run", {"command": "cat note.txt; echo again > two.txt"})
    v2 = structured(r)
    assert not r.is_error and v2["stdout"]["text"] == "hello\n", v2
    assert v2["session"] == {"world": world, "run": 2}, v2["session"]
    mine = [p["path"] for p in v2["fs_diff"]["added"]["paths"]]
    assert mine == [os.path.join(project, "two.txt")], v2["fs_diff"]
    both = [p["path"] for p in v2["session_diff"]["added"]["paths"]]
    assert os.path.join(project, "note.txt") in both and os.path.join(project, "two.txt") in both, v2
    # The session's review: diff without a batch is the session's world.
    d = structured(await call(s, "diff", {}))
    assert d["world"] == world and d["summary"]["added"]["count"] >= 2, d
    assert not os.path.exists(os.path.join(project, "two.txt")), "the host changed"
    return v


async def main():
    mode, cloche, project = sys.argv[1], sys.argv[2], sys.argv[3]
    env = {"PATH": os.environ["PATH"], "CLOCHE_STATE_DIR": os.environ["CLOCHE_STATE_DIR"]}
    if mode == "daemon":
        sock, uid = sys.argv[4], sys.argv[5]
        cmd, args = "setpriv", ["--reuid", uid, "--regid", uid, "--clear-groups", cloche, "mcp",
                                "--socket", sock, "--project", project, "--wait-secs", "5"]
        env["HOME"] = "/nonexistent"
    else:
        cmd, args = cloche, ["mcp", "--project", project]
    params = StdioServerParameters(command=cmd, args=args, env=env, cwd=project)
    out = {}
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as s:
            await s.initialize()
            await lists_tools(s)
            out["run"] = await runs_a_write(s, project)
            if mode == "daemon":
                await daemon_flow(s, project, sock, cloche, out)
            else:
                await root_review(s, cloche, out)
    print(json.dumps(out))


async def root_review(s, cloche, out):
    # Root's agent, root's reviewer: the batch is the session's agent's
    # (`agent:mcp`), so root approves it, here with `cloche` in its own
    # process (no daemon at the default socket) while the agent waits.
    r = await call(s, "submit_batch", {"entries": [{"command": "printf 'root-review\\n' > r.txt; sleep 0"}]})
    v = structured(r)
    batch = v["batch"]
    assert v["state"] == "pending" and v["entries"][0]["decision"]["effect"] == "review", v
    p = await asyncio.create_subprocess_exec(cloche, "batch", "approve", batch, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE)
    o, e = await p.communicate()
    assert p.returncode == 0, (o, e)
    result = None
    for _ in range(6):
        result = structured(await call(s, "wait", {"batch": batch}))
        if result["status"] != "still_waiting":
            break
    assert result["status"] == "completed" and result["entries"][0]["exit_code"] == 0, result
    out["batch"] = batch


async def daemon_flow(s, project, sock, cloche, out):
    # A denied command says why and does not run.
    r = await call(s, "run", {"command": "rm note.txt"})
    v = structured(r)
    assert r.is_error and v["status"] == "denied", v
    assert v["decision"]["rule"] == "test-no-rm" and "never removes" in v["decision"]["reason"], v
    assert "test-no-rm" in r.content[0].text

    # Malformed arguments: an MCP error (JSON-RPC invalid params, or, as
    # protocol 2025-11-25 asks of input validation, a tool error naming
    # them), never a crash: the server goes on serving.
    for name, bad in [("run", {"command": 5}), ("run", {}), ("run", {"command": "echo", "shell": "bash"}),
                      ("wait", {"batch": ["x"]}), ("diff", {"batch": "0123456789abcdef", "format": "html"})]:
        try:
            r = await call(s, name, bad)
        except MCPError as e:
            assert e.error.code == -32602, (bad, e.error)
            continue
        assert r.is_error, (bad, r)
        text = r.content[0].text
        assert "param" in text.lower() or "invalid" in text.lower(), (bad, text)
        out.setdefault("malformed", []).append(text)
    # A batch with one entry held for review.
    r = await call(s, "submit_batch", {"entries": [{"command": "printf 'live-one\\n'; sleep 0.3; printf 'live-two\\n' > b.txt; cat b.txt"}]})
    v = structured(r)
    batch = v["batch"]
    assert v["state"] == "pending" and v["entries"][0]["decision"]["effect"] == "review", v
    assert v["entries"][0]["decision"]["rule"] == "unknown", v
    # The approval's time limit is said (the policy's approval_ttl).
    assert isinstance(v["approval_ttl_secs"], int) and v["approval_ttl_secs"] > 0, v
    assert f"lasts {v['approval_ttl_secs']} s" in r.content[0].text, r.content[0].text

    # The agent waits; a reviewer approves from another process meanwhile
    # (the CLI, as root, through the daemon); the wait runs it, with its
    # output as progress.
    messages = []
    waiting = asyncio.Event()

    async def progress(p, total, message):
        messages.append(message or "")
        if message and "waiting for a reviewer" in message:
            waiting.set()

    first = await call(s, "wait", {"batch": batch, "timeout_secs": 1}, progress)
    assert structured(first)["status"] == "still_waiting", structured(first)
    assert structured(first)["state"] == "pending"
    assert "An approval, once given, lasts" in first.content[0].text, first.content[0].text

    async def reviewer():
        await waiting.wait()
        p = await asyncio.create_subprocess_exec(cloche, "batch", "approve", batch, env={**os.environ, "CLOCHE_SOCKET": sock},
                                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        o, e = await p.communicate()
        assert p.returncode == 0, (o, e)

    messages.clear()
    waiting.clear()
    approving = asyncio.create_task(reviewer())
    result = None
    for _ in range(6):
        r = await call(s, "wait", {"batch": batch}, progress)
        result = structured(r)
        if result["status"] != "still_waiting":
            break
    await approving
    assert result["status"] == "completed", result
    # The batch ran in the session's world (it continued it).
    assert result["world"] == out["run"]["session"]["world"], (result["world"], out["run"]["session"])
    entry = result["entries"][0]
    assert entry["exit_code"] == 0 and "live-one" in entry["stdout"]["text"] and "live-two" in entry["stdout"]["text"], entry
    live = "".join(messages)
    assert "live-one" in live and "live-two" in live, messages
    out["progress"] = messages

    # The diff names the file; the commit is requested (a reviewer's to do).
    d = structured(await call(s, "diff", {"batch": batch}))
    assert os.path.join(project, "b.txt") in [p["path"] for p in d["summary"]["added"]["paths"]], d
    full = structured(await call(s, "diff", {"batch": batch, "format": "full", "page_size": 1}))
    assert full["pages"] >= 1 and "live-two" in full["text"], full
    c = await call(s, "request_commit", {"batch": batch, "note": "adds b.txt"})
    assert structured(c)["status"] == "commit_requested", structured(c)
    assert not os.path.exists(os.path.join(project, "b.txt")), "the host changed"
    # The session's world offered for commit, then discarded: gone, and the
    # session forgets it.
    world = out["run"]["session"]["world"]
    c = structured(await call(s, "request_commit", {"note": "the session's notes"}))
    assert c["status"] == "commit_requested" and c["world"] == world, c
    out["session_world"] = world
    g = structured(await call(s, "discard", {}))
    assert g == {"status": "discarded", "world": world}, g
    r = await call(s, "diff", {})
    assert r.is_error and "no world yet" in r.content[0].text, r
    # Still serving after all that.
    assert structured(await call(s, "policy_check", {"command": "rm x"}))["effect"] == "deny"
    out["batch"] = batch


asyncio.run(main())
