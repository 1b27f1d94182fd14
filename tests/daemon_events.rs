//! `GET /v1/events` end to end: a real `cloched` on a temporary socket,
//! real worlds, and subscribers nobody here wrote (`curl --unix-socket -N`,
//! Python's http.client) running as different uids.
//!
//! Run as root after `cargo build --workspace` (cloched is built next to
//! cloche).

use crate::common;

use base64::Engine;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// A uid the configuration gives no role.
const NOBODY: u32 = 64_103;

fn path(id: &str, what: &str) -> String {
    format!("/v1/batches/{id}/{what}")
}

/// The status of `GET path` as `uid`, the stream (if any) cut after 2 s.
fn status_of(d: &Daemon, uid: Option<u32>, path: &str) -> u16 {
    let mut cmd = Command::new("curl");
    cmd.args(["-q", "-s", "--max-time", "2", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket"]);
    cmd.arg(&d.socket).arg(format!("http://localhost{path}"));
    if let Some(u) = uid {
        cmd.uid(u).gid(u).env("HOME", "/nonexistent");
    }
    let out = cmd.output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

/// Every frame with an event name is whole and says the same as its
/// data: id = seq, event = kind; ids increase.
fn check_frames(frames: &[Frame]) {
    let mut last = 0u64;
    for f in frames.iter().filter(|f| f.event.is_some()) {
        let v = f.json();
        let seq = v["seq"].as_u64().unwrap_or_else(|| panic!("a frame without seq: {f:?}"));
        assert_eq!(f.id.as_deref(), Some(seq.to_string().as_str()), "{f:?}");
        assert_eq!(f.event.as_deref(), v["kind"].as_str(), "{f:?}");
        assert!(seq > last, "ids increase: {seq} after {last}");
        last = seq;
    }
}

/// The frames of one batch.
fn of_batch(frames: &[Frame], id: &str) -> Vec<Frame> {
    frames.iter().filter(|f| f.json()["batch"] == id).cloned().collect()
}

/// Kinds in order, a run of `output` frames counted as one.
fn shape(frames: &[Frame]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in frames {
        let k = f.event.clone().unwrap();
        if !(k == "output" && out.last().is_some_and(|l| l == "output")) {
            out.push(k);
        }
    }
    out
}

/// The output frames' bytes, per (entry, stream), in order.
fn output_bytes(frames: &[Frame]) -> BTreeMap<(String, String), Vec<u8>> {
    let mut out: BTreeMap<(String, String), Vec<u8>> = BTreeMap::new();
    for f in frames.iter().filter(|f| f.is("output")) {
        let d = &f.json()["data"];
        let key = (d["entry"].as_str().unwrap().to_string(), d["stream"].as_str().unwrap().to_string());
        out.entry(key).or_default().extend(B64.decode(d["data_b64"].as_str().unwrap()).unwrap());
    }
    out
}

/// The frames as (id, event, data), to compare streams.
fn plain(frames: &[Frame]) -> Vec<(Option<String>, Option<String>, Option<String>)> {
    frames.iter().filter(|f| f.event.is_some()).map(|f| (f.id.clone(), f.event.clone(), f.data.clone())).collect()
}

/// An agent follows its run: the steps and the exact output bytes in
/// order per stream, live (a stream open longer than the daemon's request
/// deadlines); another agent's stream gets none of it; a reviewer's does;
/// `since` and `Last-Event-ID` replay; a batch the caller may not see is
/// 404, bad queries 400, a caller without a role 403.
#[test]
fn an_agent_follows_its_run_live_and_no_other_agent_sees_it() {
    let fx = Fixture::new();
    let proj = owned_dir(&fx, "a", AGENT_A);
    let proj_b = owned_dir(&fx, "b", AGENT_B);
    let config = format!(
        "[roles]\nadmin = [\"uid:0\"]\nagent = [\"uid:{AGENT_A}\", \"uid:{AGENT_B}\"]\n\
         [limits]\nheader_timeout_secs = 1\nbody_timeout_secs = 1\n"
    );
    let d = Daemon::start(&fx, Some(&config));
    let e1 = "for i in 1 2 3; do echo out$i; echo err$i >&2; sleep 0.3; done; printf 'no newline'";
    let e2 = r"printf '\001\377 bytes\n'; printf 'two\n' >&2";
    let v = d
        .post(Some(AGENT_A), "/v1/batches", &json!({"project": proj, "entries": [{"command": e1}, {"command": e2}]}))
        .expect(201)
        .clone();
    let id = v["id"].as_str().unwrap().to_string();
    let entries: Vec<String> =
        v["entries"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().into()).collect();
    d.curl(None, "POST", &path(&id, "approve"), None).expect(200);

    // Subscribed (each has read the head): the agent, another agent, a
    // reviewer to this batch alone.
    let mut a = SseClient::open(&d.socket, Some(AGENT_A), "/v1/events", &[]);
    let mut b = SseClient::open(&d.socket, Some(AGENT_B), "/v1/events", &[]);
    let mut r = SseClient::open(&d.socket, None, &format!("/v1/events?batch={id}"), &[]);
    // Longer than the deadlines of a request's head and body: a stream is
    // not a slow request.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(a.is_open() && b.is_open() && r.is_open(), "the streams outlive the request deadlines");

    let v = d.curl(Some(AGENT_A), "POST", &format!("{}?wait=true", path(&id, "run")), None).expect(200).clone();
    assert_eq!(v["state"], "completed", "{v}");
    a.until(|f| f.is("run_ended"), Duration::from_secs(60));
    r.until(|f| f.is("run_ended"), Duration::from_secs(60));
    check_frames(&a.frames);
    let mine = of_batch(&a.frames, &id);
    let want = [
        "world_started",
        "entry_started",
        "output",
        "entry_finished",
        "entry_started",
        "output",
        "entry_finished",
        "world_kept",
        "run_ended",
    ];
    assert_eq!(shape(&mine), want, "{mine:#?}");
    let started: Vec<Value> = mine.iter().filter(|f| f.is("entry_started")).map(|f| f.json()["data"].clone()).collect();
    for (i, s) in started.iter().enumerate() {
        assert_eq!((&s["entry"], &s["index"], &s["of"]), (&json!(entries[i]), &json!(i), &json!(2)), "{s}");
        assert_eq!(s["command"], [e1, e2][i], "{s}");
    }
    let finished: Vec<Value> =
        mine.iter().filter(|f| f.is("entry_finished")).map(|f| f.json()["data"].clone()).collect();
    assert!(finished.iter().all(|f| f["result"]["exit_code"] == 0), "{finished:?}");
    assert_eq!(mine.last().unwrap().json()["data"], json!({"end": "completed"}));
    // The exact bytes, in order per stream.
    let bytes = output_bytes(&mine);
    let key = |e: usize, s: &str| (entries[e].clone(), s.to_string());
    assert_eq!(bytes[&key(0, "stdout")], b"out1\nout2\nout3\nno newline");
    assert_eq!(bytes[&key(0, "stderr")], b"err1\nerr2\nerr3\n");
    assert_eq!(bytes[&key(1, "stdout")], b"\x01\xff bytes\n");
    assert_eq!(bytes[&key(1, "stderr")], b"two\n");
    assert_eq!(bytes.len(), 4, "{bytes:?}");
    // Live: the first entry's output came in pieces, the first long before it ended.
    let out0: Vec<&Frame> = mine.iter().filter(|f| f.is("output") && f.json()["data"]["entry"] == entries[0]).collect();
    assert!(out0.len() >= 4, "output in pieces as it was written: {out0:#?}");
    let t = |f: &Frame| f.json()["time_ms"].as_u64().unwrap();
    let end0 = mine.iter().find(|f| f.is("entry_finished")).unwrap();
    assert!(t(end0) - t(out0[0]) >= 500, "the first output {} ms before the entry's end", t(end0) - t(out0[0]));
    // The reviewer saw the same frames of the batch.
    assert_eq!(plain(&of_batch(&r.frames, &id)), plain(&mine));

    // The other agent's stream is alive (it hears its own batch) and got
    // nothing of the first agent's.
    let vb = d.post(Some(AGENT_B), "/v1/batches", &json!({"project": proj_b, "entries": [{"command": "true"}]}));
    let id_b = vb.expect(201)["id"].as_str().unwrap().to_string();
    b.until(|f| f.is("submitted"), Duration::from_secs(20));
    a.gather(Duration::from_millis(500));
    check_frames(&b.frames);
    for f in b.events() {
        assert_eq!(f.json()["owner"], format!("uid:{AGENT_B}"), "{f:?}");
        assert!(!f.data.as_deref().unwrap_or("").contains(&id), "{f:?}");
    }
    assert_eq!(shape(&b.events()), ["submitted"]);
    assert!(a.events().iter().all(|f| f.json()["owner"] == format!("uid:{AGENT_A}")), "{:#?}", a.frames);
    assert!(of_batch(&r.frames, &id_b).is_empty(), "a batch= stream is that batch's alone");

    // Replays: since=, Last-Event-ID (which wins over since), since=0.
    let first = mine.iter().find(|f| f.is("entry_started")).unwrap();
    let seq = first.id.clone().unwrap();
    let after: Vec<Frame> = mine.iter().skip_while(|f| f.id != first.id).skip(1).cloned().collect();
    for (q, headers) in [
        (format!("/v1/events?since={seq}"), vec![]),
        ("/v1/events?since=0".to_string(), vec![format!("Last-Event-ID: {seq}")]),
        // An empty Last-Event-ID (curl's `Name;`) is none.
        (format!("/v1/events?since={seq}"), vec!["Last-Event-ID;".to_string()]),
    ] {
        let h: Vec<&str> = headers.iter().map(String::as_str).collect();
        let mut re = SseClient::open(&d.socket, Some(AGENT_A), &q, &h);
        re.until(|f| f.is("run_ended"), Duration::from_secs(20));
        assert_eq!(plain(&re.events()), plain(&after), "{q} {headers:?}");
    }
    let mut all = SseClient::open(&d.socket, Some(AGENT_A), "/v1/events?since=0", &[]);
    all.until(|f| f.is("run_ended"), Duration::from_secs(20));
    assert_eq!(shape(&all.events())[..3], ["submitted", "review_needed", "approved"]);
    assert_eq!(plain(&all.events()[3..]), plain(&mine));

    // Refusals: plain JSON answers, no stream.
    let other = format!("/v1/events?batch={id}");
    for (uid, q, want) in [
        (Some(AGENT_B), other.as_str(), 404),
        (Some(AGENT_B), &format!("/v1/events?batch={id_b}&batch={id}"), 404),
        (Some(AGENT_A), "/v1/events?batch=ffffffffffffffff", 404),
        (Some(AGENT_A), "/v1/events?batch=../x", 400),
        (Some(AGENT_A), "/v1/events?nope=1", 400),
        (Some(AGENT_A), "/v1/events?since=-1", 400),
        (Some(NOBODY), "/v1/events", 403),
    ] {
        let ans = d.get(uid, q);
        assert_eq!(ans.status, want, "{q} as {uid:?}: {}", ans.text);
        assert!(ans.json["error"].is_string(), "{}", ans.text);
    }
    let mut hdr = Command::new("curl");
    hdr.args(["-q", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Last-Event-ID: x", "--unix-socket"]);
    let out = hdr.arg(&d.socket).arg("http://localhost/v1/events").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "400");

    drop((a, b, r, all));
    d.curl(None, "POST", &path(&id, "discard"), None).expect(200);
    drop(d);
    fx.finish();
}

/// A subscriber that stops reading while a run prints megabytes: the run
/// is not held up; when it reads again it gets an `event: lagged` frame
/// saying which events it missed, then the rest in order. Streams are
/// capped, per uid (429) and in all (503), and a closed one gives its
/// place back.
const SLOW: &str = r#"
import http.client, json, socket, sys
sock, path = sys.argv[1], sys.argv[2]
class C(http.client.HTTPConnection):
    def connect(self):
        s = socket.socket(socket.AF_UNIX); s.settimeout(120); s.connect(sock); self.sock = s
c = C("localhost", timeout=120)
c.request("GET", path)
r = c.getresponse()
assert r.status == 200, r.status
print("ready", r.readline().decode().strip(), flush=True)
sys.stdin.readline()
frames, cur = [], {}
while True:
    line = r.readline()
    if not line:
        break
    line = line.decode().rstrip("\n")
    if line == "":
        if cur:
            frames.append(cur)
        if cur.get("event") == "run_ended":
            break
        cur = {}
        continue
    if line.startswith(":"):
        continue
    k, _, v = line.partition(":")
    cur[k] = v[1:] if v.startswith(" ") else v
print(json.dumps(frames), flush=True)
"#;

#[test]
fn a_slow_subscriber_is_told_what_it_missed_and_streams_are_capped() {
    let fx = Fixture::new();
    let proj = owned_dir(&fx, "a", AGENT_A);
    let config = "[limits]\nevent_buffer = 16\nmax_event_streams = 3\nmax_event_streams_per_uid = 2\n";
    let d = Daemon::start(&fx, Some(config));

    // The caps.
    let a1 = SseClient::open(&d.socket, Some(AGENT_A), "/v1/events", &[]);
    let a2 = SseClient::open(&d.socket, Some(AGENT_A), "/v1/events", &[]);
    let over = d.get(Some(AGENT_A), "/v1/events");
    assert_eq!(over.status, 429, "{}", over.text);
    assert!(over.text.contains("max_event_streams_per_uid"), "{}", over.text);
    let b1 = SseClient::open(&d.socket, Some(AGENT_B), "/v1/events", &[]);
    let over = d.get(None, "/v1/events");
    assert_eq!(over.status, 503, "{}", over.text);
    assert!(over.text.contains("max_event_streams"), "{}", over.text);
    assert_eq!(d.get(None, "/v1/whoami").status, 200, "other requests are served");
    drop(a1);
    let back = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        status_of(&d, Some(AGENT_A), "/v1/events") == 200
    });
    assert!(back, "a closed stream gives its place back");
    drop((a2, b1));

    // Megabytes of output for a subscriber that does not read.
    let n = 1_000_000;
    let expected: String = (1..=n).map(|i| format!("{i}\n")).collect();
    let v = d
        .post(Some(AGENT_A), "/v1/batches", &json!({"project": proj, "entries": [{"command": format!("seq 1 {n}")}]}))
        .expect(201)
        .clone();
    let id = v["id"].as_str().unwrap().to_string();
    d.curl(None, "POST", &path(&id, "approve"), None).expect(200);
    let mut slow = Command::new("python3")
        .arg("-c")
        .arg(SLOW)
        .arg(&d.socket)
        .arg(format!("/v1/events?batch={id}"))
        .uid(AGENT_A)
        .gid(AGENT_A)
        .env("HOME", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(slow.stdout.take().unwrap()));
    assert_eq!(lines.next().unwrap().unwrap(), "ready : subscribed");
    let v = d.curl(Some(AGENT_A), "POST", &format!("{}?wait=true", path(&id, "run")), None).expect(200).clone();
    assert_eq!(v["state"], "completed", "the run is not held up by a stalled subscriber: {v}");
    std::io::Write::write_all(slow.stdin.as_mut().unwrap(), b"go\n").unwrap();
    let text = lines.next().unwrap().unwrap();
    let st = slow.wait().unwrap();
    assert!(st.success(), "{}", std::io::read_to_string(slow.stderr.take().unwrap()).unwrap());
    let frames: Vec<Frame> = serde_json::from_str::<Vec<BTreeMap<String, String>>>(&text)
        .unwrap()
        .into_iter()
        .map(|m| Frame {
            id: m.get("id").cloned(),
            event: m.get("event").cloned(),
            data: m.get("data").cloned(),
            comment: None,
        })
        .collect();
    check_frames(&frames);
    // One gap or more (the stream may also fall behind while the output
    // floods in, before its client stops reading: the buffer is 16 events).
    let lag: Vec<usize> = (0..frames.len()).filter(|&i| frames[i].is("lagged")).collect();
    assert!(!lag.is_empty(), "a gap is said: {:?}", frames.iter().map(|f| &f.event).collect::<Vec<_>>());
    for &i in &lag {
        let l = frames[i].json();
        let (first, last) = (l["data"]["first"].as_u64().unwrap(), l["data"]["last"].as_u64().unwrap());
        assert!(last >= first && l["data"]["skipped"] == last - first + 1, "{l}");
        assert_eq!(frames[i].id, Some(last.to_string()));
        assert_eq!(frames[i + 1].id, Some((last + 1).to_string()), "it goes on right after the gap");
    }
    assert!(frames.last().unwrap().is("run_ended"));
    // What came is in order: a prefix of the output before the first gap,
    // pieces in order between gaps, a suffix after the last.
    let text_of = |fs: &[Frame]| {
        let b = output_bytes(fs);
        assert!(b.keys().all(|(_, s)| s == "stdout"), "{:?}", b.keys());
        String::from_utf8(b.into_values().next().unwrap_or_default()).unwrap()
    };
    let mut bounds = vec![0];
    bounds.extend(&lag);
    bounds.push(frames.len());
    let pieces: Vec<String> = bounds.windows(2).map(|w| text_of(&frames[w[0]..w[1]])).collect();
    assert!(expected.starts_with(&pieces[0]), "a prefix first");
    assert!(expected.ends_with(pieces.last().unwrap()), "a suffix last");
    let mut at = pieces[0].len();
    for p in &pieces[1..pieces.len() - 1] {
        let found =
            expected[at..].find(p.as_str()).unwrap_or_else(|| panic!("a piece of {} bytes out of order", p.len()));
        at += found + p.len();
    }
    assert!(at <= expected.len() - pieces.last().unwrap().len(), "pieces in order");
    assert!(pieces.iter().map(String::len).sum::<usize>() < expected.len());

    // since=0 with more events than the buffer holds: the gap first.
    let mut all = SseClient::open(&d.socket, None, "/v1/events?since=0", &[]);
    all.until(|f| f.is("run_ended"), Duration::from_secs(20));
    let ev = all.events();
    assert!(ev[0].is("lagged") && ev[0].json()["data"]["skipped"].as_u64().unwrap() > 0, "{:?}", ev[0]);
    assert_eq!(ev.len(), 17, "the gap and the 16 events held");
    drop(all);
    d.curl(None, "POST", &path(&id, "discard"), None).expect(200);
    drop(d);
    fx.finish();
}
