//! `cloched` under load: 200 submissions and their status polls from 20
//! clients at once (Python's http.client over AF_UNIX, five threads in
//! each of four processes running as four uids): no error, no batch lost
//! or duplicated, each agent sees exactly its own, the audit chain intact.
//! (Latencies are measured by benches/daemon.py, not here.)

use crate::common;

use common::*;
use serde_json::{json, Value};
use std::process::{Command, Stdio};

const CLIENT: &str = r#"
import http.client, json, socket, sys, threading
sock, project, threads, each = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
class Conn(http.client.HTTPConnection):
    def __init__(self):
        super().__init__("localhost", timeout=120)
    def connect(self):
        s = socket.socket(socket.AF_UNIX); s.settimeout(120); s.connect(sock); self.sock = s
results, errors, lock = [], [], threading.Lock()
def client(n):
    c = Conn()
    for i in range(each):
        body = json.dumps({"project": project, "entries": [{"command": "true"}]})
        try:
            c.request("POST", "/v1/batches", body, {"Content-Type": "application/json"})
            r = c.getresponse(); data = r.read()
            if r.status != 201:
                with lock: errors.append(("submit", r.status, data.decode())); continue
            bid = json.loads(data)["id"]
            for _ in range(3):
                c.request("GET", "/v1/batches/" + bid); r = c.getresponse(); data = r.read()
                if r.status != 200 or json.loads(data)["id"] != bid:
                    with lock: errors.append(("poll", r.status, data.decode()))
            with lock: results.append(bid)
        except Exception as e:
            with lock: errors.append(("exception", 0, repr(e)))
            c = Conn()
ts = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
print(json.dumps({"ids": results, "errors": errors}))
"#;

#[test]
fn two_hundred_concurrent_submissions_from_twenty_clients() {
    let fx = Fixture::new();
    open_up(fx.dir());
    let d = Daemon::start(&fx, None);
    let uids = [AGENT_A, AGENT_B, 64_103, 64_104];
    let procs: Vec<_> = uids
        .iter()
        .map(|&u| {
            use std::os::unix::process::CommandExt;
            Command::new("python3")
                .arg("-c")
                .arg(CLIENT)
                .arg(&d.socket)
                .arg(fx.dir())
                .args(["5", "10"])
                .uid(u)
                .gid(u)
                .env("HOME", "/nonexistent")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut all = std::collections::BTreeSet::new();
    for (u, p) in uids.iter().zip(procs) {
        let out = p.wait_with_output().unwrap();
        assert!(out.status.success(), "client {u}: {}", String::from_utf8_lossy(&out.stderr));
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["errors"], json!([]), "client {u}");
        let ids: Vec<String> = r["ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_string()).collect();
        assert_eq!(ids.len(), 50, "client {u}");
        // Each agent lists exactly its own.
        let mine = d.get(Some(*u), "/v1/batches").expect(200).clone();
        let mut listed: Vec<String> =
            mine["batches"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap().to_string()).collect();
        listed.sort();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(listed, want, "uid {u} lists its own batches");
        all.extend(ids);
    }
    assert_eq!(all.len(), 200, "no batch lost or duplicated");
    let list = d.get(None, "/v1/batches").expect(200).clone();
    assert_eq!(list["batches"].as_array().unwrap().len(), 200);
    let v = d.get(None, "/v1/audit/verify").expect(200).clone();
    assert_eq!(v["ok"], true, "{v}");
    // Per batch: `submitted`, and `decided` for its one entry.
    assert_eq!(v["entries"], 400, "{v}");
    assert_eq!(audit_events(&fx, "submitted").len(), 200);
    drop(d);
    fx.finish();
}
