//! The daemon's configuration (`cloched --config FILE`, TOML): the socket's
//! mode and group, who holds which role, and the limits of requests.
//!
//! ```toml
//! [socket]
//! mode = "0660"          # default 0660 when a group is set, else 0666
//! group = "cloche"       # the socket's group (a name or a number)
//!
//! [roles]                # each: user names, "uid:N", "group:NAME", "gid:N", "*"
//! admin = ["root"]
//! reviewer = ["group:cloche-reviewers"]
//! agent = ["group:cloche"]
//!
//! [limits]
//! max_body_bytes = 1048576
//! header_timeout_secs = 10
//! body_timeout_secs = 30
//! max_connections = 256
//! max_connections_per_uid = 32
//! run_output_bytes = 1048576
//! max_event_streams = 64
//! max_event_streams_per_uid = 8
//! event_buffer = 4096
//! event_buffer_bytes = 16777216
//!
//! [premade]              # worlds made ahead for `POST /v1/run` (architecture.md)
//! worlds = 0             # at most this many at once; 0: none (the default)
//! idle_secs = 60         # each dropped after this long unused
//!
//! [hooks]                # run on the host as the daemon's user (root): see crate::hook
//! review_needed = ["/usr/local/bin/notify-reviewer", "--urgent"]   # argv; none by default
//! timeout_secs = 10      # then killed (its process group)
//!
//! [web]                  # the reviewer's page (docs/web.md); off by default
//! listen = "127.0.0.1:8790"     # a loopback address (as `cloched --web`)
//! allow_non_loopback = false    # true: `listen` may be another address (as --web-non-loopback)
//! token_ttl_secs = 28800        # a login token's life (8 h)
//! ```
//!
//! Without a file (or without `[roles]`): root is admin and reviewer, every
//! other local user an agent, and the socket is 0666 (identity comes from
//! `SO_PEERCRED`, never from the socket's mode).
//!
//! User and group names are read from /etc/passwd and /etc/group by hand:
//! `cloched` is linked statically (docs/architecture.md), where glibc's NSS
//! lookups (`getpwnam`) would need the shared libraries it does without.

use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// Who may do what: set per caller from its uid and groups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Roles {
    pub agent: bool,
    pub reviewer: bool,
    pub admin: bool,
}

impl Roles {
    pub fn any(&self) -> bool {
        self.agent || self.reviewer || self.admin
    }

    pub fn names(&self) -> Vec<&'static str> {
        [(self.admin, "admin"), (self.reviewer, "reviewer"), (self.agent, "agent")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect()
    }
}

/// One entry of a role's list, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Member {
    Uid(u32),
    Gid(u32),
    Everyone,
}

/// The daemon's configuration, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub socket_mode: u32,
    pub socket_group: Option<u32>,
    roles: Option<[Vec<Member>; 3]>,
    pub limits: Limits,
    pub premade: Premade,
    pub hooks: Hooks,
    pub web: Web,
}

/// The reviewer's page (`crate::web`).
#[derive(Debug, Clone)]
pub struct Web {
    /// Where it listens; `None`: no page (the default).
    pub listen: Option<std::net::SocketAddr>,
    /// The operator named a non-loopback address explicitly.
    pub allow_non_loopback: bool,
    /// How long a login token lives.
    pub token_ttl: Duration,
}

impl Default for Web {
    fn default() -> Self {
        Web { listen: None, allow_non_loopback: false, token_ttl: Duration::from_secs(8 * 3600) }
    }
}

impl Web {
    /// The address to listen on, checked: a loopback one, or any the
    /// operator allowed explicitly.
    pub fn checked_listen(&self) -> Result<Option<std::net::SocketAddr>, String> {
        match self.listen {
            // The page answers only to the Host it listens on (DNS rebinding):
            // a wildcard has none a browser would send.
            Some(a) if a.ip().is_unspecified() => Err(format!(
                "the web page's address {a}: name the one address it is reached at (its Host header must be it), \
                 not a wildcard"
            )),
            Some(a) if !a.ip().is_loopback() && !self.allow_non_loopback => Err(format!(
                "the web page's address {a} is not a loopback address: refused unless named explicitly \
                 (--web-non-loopback, or [web] allow_non_loopback = true)"
            )),
            other => Ok(other),
        }
    }
}

/// The longest a login token may live (a week).
const MAX_TOKEN_TTL: u64 = 7 * 24 * 3600;

/// Commands run on events (`crate::hook`).
#[derive(Debug, Clone)]
pub struct Hooks {
    /// Run once per submitted batch that waits for a reviewer: argv, the
    /// program an absolute path.
    pub review_needed: Option<Vec<String>>,
    /// A hook still running after this long is killed.
    pub timeout: Duration,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks { review_needed: None, timeout: Duration::from_secs(10) }
    }
}

/// Pre-made worlds (`crate::premade`).
#[derive(Debug, Clone)]
pub struct Premade {
    /// At most this many at once; 0: none.
    pub worlds: usize,
    /// Each is dropped after this long unused.
    pub idle: Duration,
}

impl Default for Premade {
    fn default() -> Self {
        Premade { worlds: 0, idle: Duration::from_secs(60) }
    }
}

/// The most pre-made worlds a configuration may ask for.
const MAX_PREMADE: usize = 64;

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_uid: usize,
    /// The most of a `POST /v1/run` world's stdout (and of its stderr) kept
    /// in the response; the rest is read and dropped.
    pub run_output_bytes: usize,
    /// `GET /v1/events` streams open at once (more: 503) and per uid (429).
    pub max_event_streams: usize,
    pub max_event_streams_per_uid: usize,
    /// The newest events the daemon keeps for replay (`since`,
    /// `Last-Event-ID`) and for subscribers that fall behind: at most this
    /// many, and at most this many bytes of them.
    pub event_buffer: usize,
    pub event_buffer_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1 << 20,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 256,
            max_connections_per_uid: 32,
            run_output_bytes: 1 << 20,
            max_event_streams: 64,
            max_event_streams_per_uid: 8,
            event_buffer: 4096,
            event_buffer_bytes: 16 << 20,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket_mode: 0o666,
            socket_group: None,
            roles: None,
            limits: Limits::default(),
            premade: Premade::default(),
            hooks: Hooks::default(),
            web: Web::default(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    socket: SocketFile,
    roles: Option<RolesFile>,
    #[serde(default)]
    limits: LimitsFile,
    #[serde(default)]
    premade: PremadeFile,
    #[serde(default)]
    hooks: HooksFile,
    #[serde(default)]
    web: WebFile,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WebFile {
    listen: Option<String>,
    allow_non_loopback: Option<bool>,
    token_ttl_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HooksFile {
    review_needed: Option<Vec<String>>,
    timeout_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PremadeFile {
    worlds: Option<usize>,
    idle_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SocketFile {
    mode: Option<String>,
    group: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RolesFile {
    #[serde(default)]
    admin: Vec<String>,
    #[serde(default)]
    reviewer: Vec<String>,
    #[serde(default)]
    agent: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    max_body_bytes: Option<usize>,
    header_timeout_secs: Option<u64>,
    body_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_uid: Option<usize>,
    run_output_bytes: Option<usize>,
    max_event_streams: Option<usize>,
    max_event_streams_per_uid: Option<usize>,
    event_buffer: Option<usize>,
    event_buffer_bytes: Option<usize>,
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Config::parse(&text, &Accounts::read()).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn parse(text: &str, acc: &Accounts) -> Result<Config, String> {
        let f: File = toml::from_str(text).map_err(|e| e.message().to_string())?;
        let socket_group = f.socket.group.as_deref().map(|g| acc.gid(g)).transpose()?;
        let default_mode = if socket_group.is_some() { 0o660 } else { 0o666 };
        let socket_mode = match f.socket.mode.as_deref() {
            None => default_mode,
            Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| format!("socket.mode {m:?}: an octal mode such as \"0660\""))?,
        };
        let roles = f
            .roles
            .map(|r| -> Result<[Vec<Member>; 3], String> {
                let list = |name: &str, l: &[String]| {
                    l.iter()
                        .map(|m| member(m, acc).map_err(|e| format!("roles.{name}: {e}")))
                        .collect::<Result<Vec<_>, String>>()
                };
                Ok([list("admin", &r.admin)?, list("reviewer", &r.reviewer)?, list("agent", &r.agent)?])
            })
            .transpose()?;
        let d = Limits::default();
        let l = f.limits;
        let secs = |v: Option<u64>, d: Duration, name: &str| match v {
            Some(0) => Err(format!("limits.{name}: must be at least 1")),
            Some(s) => Ok(Duration::from_secs(s)),
            None => Ok(d),
        };
        let limits = Limits {
            max_body_bytes: l.max_body_bytes.unwrap_or(d.max_body_bytes),
            header_timeout: secs(l.header_timeout_secs, d.header_timeout, "header_timeout_secs")?,
            body_timeout: secs(l.body_timeout_secs, d.body_timeout, "body_timeout_secs")?,
            max_connections: l.max_connections.unwrap_or(d.max_connections).max(1),
            max_connections_per_uid: l.max_connections_per_uid.unwrap_or(d.max_connections_per_uid).max(1),
            run_output_bytes: l.run_output_bytes.unwrap_or(d.run_output_bytes),
            max_event_streams: l.max_event_streams.unwrap_or(d.max_event_streams),
            max_event_streams_per_uid: l.max_event_streams_per_uid.unwrap_or(d.max_event_streams_per_uid),
            event_buffer: l.event_buffer.unwrap_or(d.event_buffer).max(1),
            event_buffer_bytes: l.event_buffer_bytes.unwrap_or(d.event_buffer_bytes),
        };
        let dp = Premade::default();
        let worlds = f.premade.worlds.unwrap_or(dp.worlds);
        if worlds > MAX_PREMADE {
            return Err(format!("premade.worlds: at most {MAX_PREMADE}"));
        }
        let premade = Premade { worlds, idle: secs(f.premade.idle_secs, dp.idle, "idle_secs")? };
        let review_needed = match f.hooks.review_needed {
            Some(argv) if argv.first().is_none_or(|p| !p.starts_with('/')) => {
                return Err("hooks.review_needed: a list whose first item is the program's absolute path".into())
            }
            other => other,
        };
        let timeout = secs(f.hooks.timeout_secs, Hooks::default().timeout, "timeout_secs")?;
        let hooks = Hooks { review_needed, timeout };
        let dw = Web::default();
        let listen = f
            .web
            .listen
            .as_deref()
            .map(|a| a.parse().map_err(|_| format!("web.listen {a:?}: an address and port such as \"127.0.0.1:8790\"")))
            .transpose()?;
        let token_ttl = match f.web.token_ttl_secs {
            Some(s) if s == 0 || s > MAX_TOKEN_TTL => {
                return Err(format!("web.token_ttl_secs: from 1 to {MAX_TOKEN_TTL} (a week)"))
            }
            Some(s) => Duration::from_secs(s),
            None => dw.token_ttl,
        };
        let web = Web { listen, allow_non_loopback: f.web.allow_non_loopback.unwrap_or(false), token_ttl };
        web.checked_listen()?;
        Ok(Config { socket_mode, socket_group, roles, limits, premade, hooks, web })
    }

    /// The roles of a caller.
    pub fn roles(&self, uid: u32, gid: u32, groups: &[u32]) -> Roles {
        let Some([admin, reviewer, agent]) = &self.roles else {
            // The default: root reviews and administers; everyone is an agent.
            return Roles { agent: true, reviewer: uid == 0, admin: uid == 0 };
        };
        let is = |l: &Vec<Member>| {
            l.iter().any(|m| match m {
                Member::Everyone => true,
                Member::Uid(u) => *u == uid,
                Member::Gid(g) => *g == gid || groups.contains(g),
            })
        };
        let (admin, reviewer, agent) = (is(admin), is(reviewer), is(agent));
        // An admin reviews too; anyone with a role may submit and run.
        Roles { admin, reviewer: reviewer || admin, agent: agent || reviewer || admin }
    }
}

fn member(m: &str, acc: &Accounts) -> Result<Member, String> {
    if m == "*" {
        return Ok(Member::Everyone);
    }
    if let Some(g) = m.strip_prefix("group:") {
        return acc.gid(g).map(Member::Gid);
    }
    if let Some(g) = m.strip_prefix("gid:") {
        return g.parse().map(Member::Gid).map_err(|_| format!("{m:?}: gid:N with a number"));
    }
    if let Some(u) = m.strip_prefix("uid:") {
        return u.parse().map(Member::Uid).map_err(|_| format!("{m:?}: uid:N with a number"));
    }
    acc.uid(m).map(Member::Uid)
}

/// /etc/passwd and /etc/group, as text.
pub struct Accounts {
    passwd: String,
    group: String,
}

impl Accounts {
    pub fn read() -> Accounts {
        Accounts {
            passwd: std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
            group: std::fs::read_to_string("/etc/group").unwrap_or_default(),
        }
    }

    fn find(text: &str, name: &str) -> Option<u32> {
        text.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.len() >= 3 && f[0] == name)?[2].parse().ok()
    }

    /// A user's uid by name (or a number).
    pub fn uid(&self, name: &str) -> Result<u32, String> {
        name.parse().ok().or_else(|| Accounts::find(&self.passwd, name)).ok_or_else(|| format!("no user {name:?}"))
    }

    /// A group's gid by name (or a number).
    pub fn gid(&self, name: &str) -> Result<u32, String> {
        name.parse().ok().or_else(|| Accounts::find(&self.group, name)).ok_or_else(|| format!("no group {name:?}"))
    }

    /// A user's primary gid and its groups, from the databases (a uid
    /// without an entry: `None`).
    pub fn user_groups(&self, uid: u32) -> Option<(u32, Vec<u32>)> {
        let entry = self
            .passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 4 && f[2].parse::<u32>().ok() == Some(uid))?;
        let (name, gid) = (entry[0], entry[3].parse().ok()?);
        let mut groups = vec![gid];
        for f in self.group.lines().map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() >= 4) {
            if f[3].split(',').any(|m| m == name) {
                if let Ok(g) = f[2].parse() {
                    groups.push(g);
                }
            }
        }
        groups.sort_unstable();
        groups.dedup();
        Some((gid, groups))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc() -> Accounts {
        Accounts {
            passwd: "root:x:0:0:root:/root:/bin/sh\nann:x:1000:1000::/home/ann:/bin/sh\n".into(),
            group: "root:x:0:\nann:x:1000:\nrev:x:2000:ann\ncloche:x:3000:\n".into(),
        }
    }

    #[test]
    fn roles_by_uid_and_group() {
        let c =
            Config::parse("[roles]\nadmin = [\"root\"]\nreviewer = [\"group:rev\"]\nagent = [\"gid:3000\"]", &acc())
                .unwrap();
        assert_eq!(c.roles(0, 0, &[]), Roles { admin: true, reviewer: true, agent: true });
        assert_eq!(c.roles(1000, 1000, &[2000]), Roles { admin: false, reviewer: true, agent: true });
        assert_eq!(c.roles(1001, 3000, &[]), Roles { admin: false, reviewer: false, agent: true });
        assert!(!c.roles(1002, 1002, &[]).any());
        let d = Config::default();
        assert_eq!(d.roles(0, 0, &[]), Roles { admin: true, reviewer: true, agent: true });
        assert_eq!(d.roles(1002, 1002, &[]), Roles { admin: false, reviewer: false, agent: true });
        assert_eq!(d.socket_mode, 0o666);
    }

    #[test]
    fn the_example_in_dist_parses() {
        let text = include_str!("../../../dist/cloched.toml");
        let acc = Accounts {
            passwd: "root:x:0:0:root:/root:/bin/sh\n".into(),
            group: "cloche:x:3000:\ncloche-reviewers:x:3001:\n".into(),
        };
        let c = Config::parse(text, &acc).unwrap();
        assert_eq!((c.socket_mode, c.socket_group), (0o660, Some(3000)));
        assert!(c.roles(1, 1, &[3001]).reviewer && !c.roles(1, 1, &[3000]).reviewer);
    }

    #[test]
    fn socket_and_limits() {
        let c = Config::parse("[socket]\ngroup = \"cloche\"\n[limits]\nmax_body_bytes = 10", &acc()).unwrap();
        assert_eq!((c.socket_mode, c.socket_group, c.limits.max_body_bytes), (0o660, Some(3000), 10));
        for bad in
            ["[socket]\nmode = \"999\"", "[roles]\nagent = [\"nobody-here\"]", "[x]", "[limits]\nbody_timeout_secs = 0"]
        {
            assert!(Config::parse(bad, &acc()).is_err(), "{bad}");
        }
        assert_eq!(acc().user_groups(1000), Some((1000, vec![1000, 2000])));
        assert_eq!(acc().user_groups(1234), None);
    }

    #[test]
    fn the_web_page_is_off_by_default_and_loopback_unless_named() {
        assert!(Config::parse("", &acc()).unwrap().web.listen.is_none());
        let c = Config::parse("[web]\nlisten = \"127.0.0.1:8790\"\ntoken_ttl_secs = 60", &acc()).unwrap();
        assert_eq!((c.web.listen.unwrap().port(), c.web.token_ttl.as_secs()), (8790, 60));
        assert!(Config::parse("[web]\nlisten = \"[::1]:1\"", &acc()).is_ok());
        let e = Config::parse("[web]\nlisten = \"192.0.2.1:8790\"", &acc()).unwrap_err();
        assert!(e.contains("not a loopback address"), "{e}");
        assert!(Config::parse("[web]\nlisten = \"192.0.2.1:8790\"\nallow_non_loopback = true", &acc()).is_ok());
        let e = Config::parse("[web]\nlisten = \"0.0.0.0:8790\"\nallow_non_loopback = true", &acc()).unwrap_err();
        assert!(e.contains("not a wildcard"), "{e}");
        for bad in ["[web]\nlisten = \"x\"", "[web]\ntoken_ttl_secs = 0", "[web]\nport = 1"] {
            assert!(Config::parse(bad, &acc()).is_err(), "{bad}");
        }
    }
}
