//! The MCP server: its tools (schemas from the parameter types, their
//! descriptions from their doc comments), its resources, its
//! instructions. Every tool is a thin call of the daemon's API
//! (`crate::client`); what a model reads is made in `crate::summary`.

use crate::client::{Daemon, Failure};
use crate::{batch, review, run};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, ListResourcesResult, PaginatedRequestParams, ProgressNotificationParam,
    ProgressToken, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, RequestMetaObject, Resource,
    ResourceContents, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_handler, tool_router, ErrorData, Peer, RoleServer, ServerHandler};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// The server's settings (`cloche-mcp`'s options).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The agent's project: the default cwd of commands and the project of batches.
    pub project: PathBuf,
    /// The longest a `wait` blocks.
    pub wait: Duration,
    /// The most output shown per stream.
    pub output_cap: usize,
    /// The label of the batches submitted (`agent`), if any.
    pub agent: Option<String>,
}

/// The session: the world this MCP session works in, once made, and its
/// diff after the last command (to say what the next one changed).
#[derive(Debug, Default)]
pub struct Session {
    /// The session's world: kept by its first `run`, continued by the next.
    pub world: Option<String>,
}

#[derive(Clone)]
pub struct Server {
    pub daemon: Daemon,
    pub settings: Arc<Settings>,
    pub session: Arc<Mutex<Session>>,
    tool_router: ToolRouter<Server>,
}

/// Progress notifications for one tool call (none when the client gave
/// no progress token).
pub struct Progress {
    peer: Peer<RoleServer>,
    token: Option<ProgressToken>,
    n: f64,
}

impl Progress {
    pub fn new(meta: &RequestMetaObject, peer: Peer<RoleServer>) -> Progress {
        Progress { peer, token: meta.get_progress_token(), n: 0.0 }
    }

    /// One notification with `message` (its progress counts up by one).
    pub async fn say(&mut self, message: String) {
        let Some(token) = &self.token else { return };
        self.n += 1.0;
        let _ = self
            .peer
            .notify_progress(ProgressNotificationParam::new(token.clone(), self.n).with_message(message))
            .await;
    }
}

/// A daemon's refusal or failure as a tool error the model reads.
pub fn failed(f: Failure) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(f.to_string())])
}

/// A result: a readable text first, the same as JSON (structured content).
pub fn done(text: String, v: Value, is_error: bool) -> CallToolResult {
    let mut r = match is_error {
        true => CallToolResult::error(vec![ContentBlock::text(text)]),
        false => CallToolResult::success(vec![ContentBlock::text(text)]),
    };
    r.structured_content = Some(v);
    r
}

const INSTRUCTIONS: &str =
    "cloche runs your commands in a disposable sandbox (a 'world') over a copy-on-write view of \
this machine: nothing you do reaches the host until a person reviews and commits it. Use `run` for each shell command: \
it runs in your session's world (its changes are yours only), and returns the exit code, the output, and what the \
command changed on disk. Policy judges every command: allowed ones run at once; some are held for a reviewer (`run` \
then returns a batch id: call `wait` with it, again while it says still_waiting); denied ones are not run and say why \
(choose another way). `submit_batch` sends several commands at once. `diff` shows what changed; when your work is \
ready, call `request_commit` so a reviewer can apply it; `discard` drops it. `policy_check` asks how a command would \
be judged without running it.";

#[tool_router]
impl Server {
    pub fn new(daemon: Daemon, settings: Settings) -> Server {
        Server { daemon, settings: Arc::new(settings), session: Arc::default(), tool_router: Self::tool_router() }
    }

    /// Run one shell command in your session's sandbox world (created by the first call; later calls see its
    /// files). Returns exit_code, stdout and stderr (each capped; the cap is said), fs_diff (what this command
    /// changed) and session_diff (everything the session changed so far), and the network scope. The host is
    /// never changed. If policy holds the command for review, it does not run: the result has status
    /// "held_for_review" and a batch id to pass to `wait`. If policy denies it, the result has status "denied"
    /// with the rule and reason: do not retry it as is, choose another way.
    #[tool(name = "run")]
    async fn run(
        &self,
        Parameters(p): Parameters<run::RunParams>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
    ) -> CallToolResult {
        run::run(self, p, Progress::new(&meta, peer)).await
    }

    /// Submit several shell commands as one batch, run in one world in order. Returns the batch id and the
    /// policy's decision per entry (allow, review or deny, with rule, reason and risk). Denied entries never run:
    /// their reason says why. Then call `wait` with the batch id: it runs the batch once it is approved (an
    /// all-allow batch may be approved by autonomy; others need a reviewer).
    #[tool(name = "submit_batch")]
    async fn submit_batch(&self, Parameters(p): Parameters<batch::SubmitParams>) -> CallToolResult {
        batch::submit(self, p).await
    }

    /// Wait for a batch: returns when it was approved and has run (with each entry's exit code and output),
    /// was rejected, cancelled, expired or failed, or after at most about 25 seconds with status
    /// "still_waiting" and its state: then call `wait` again. While entries run, progress notifications carry
    /// their live output. It never needs anything from you or the client: a person approves elsewhere.
    #[tool(name = "wait")]
    async fn wait(
        &self,
        Parameters(p): Parameters<batch::WaitParams>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
    ) -> CallToolResult {
        batch::wait(self, p, Progress::new(&meta, peer)).await
    }

    /// Show what a batch's world changed, for review: a summary (added, modified, deleted paths, flags a
    /// reviewer must see) and, with format "full", a git-like text diff per path, paginated (page, page_size).
    #[tool(name = "diff")]
    async fn diff(&self, Parameters(p): Parameters<review::DiffParams>) -> CallToolResult {
        review::diff(self, p).await
    }

    /// Mark a batch's world ready for a reviewer to commit to the host. You cannot commit yourself: a person
    /// reviews the diff and commits it (or discards it). Returns what the reviewer is told.
    #[tool(name = "request_commit")]
    async fn request_commit(&self, Parameters(p): Parameters<review::CommitParams>) -> CallToolResult {
        review::request_commit(self, p).await
    }

    /// Drop work: cancel a batch that has not ended, or discard your session's world (start afresh).
    #[tool(name = "discard")]
    async fn discard(&self, Parameters(p): Parameters<review::DiscardParams>) -> CallToolResult {
        review::discard(self, p).await
    }

    /// How policy would judge a shell command in your project (allow, review or deny, with rule, reason and
    /// risk), without running it.
    #[tool(name = "policy_check")]
    async fn policy_check(&self, Parameters(p): Parameters<review::CheckParams>) -> CallToolResult {
        review::policy_check(self, p).await
    }

    /// Past commands of your batches, newest first, searched by words (with their exit codes and states).
    #[tool(name = "history")]
    async fn history(&self, Parameters(p): Parameters<review::HistoryParams>) -> CallToolResult {
        review::history(self, p).await
    }
}

/// The resources: the policy in force, the audit chain's state.
pub const POLICY_URI: &str = "cloche://policy";
pub const AUDIT_URI: &str = "cloche://audit";

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        let caps = ServerCapabilities::builder().enable_tools().enable_resources().build();
        let mut info = ServerConfig::new(caps).with_instructions(INSTRUCTIONS);
        info.server_info.name = "cloche".into();
        info.server_info.version = env!("CARGO_PKG_VERSION").into();
        info
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let json = |uri: &str, name: &str, d: &str| {
            Resource::new(uri, name).with_description(d).with_mime_type("application/json")
        };
        Ok(ListResourcesResult::with_all_items(vec![
            json(POLICY_URI, "policy", "The command rules in force for this project (allow, review, deny)"),
            json(AUDIT_URI, "audit", "The audit log's hash chain: whether it verifies, how many records"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let v = match request.uri.as_str() {
            POLICY_URI => review::policy_resource(self).await,
            AUDIT_URI => review::audit_resource(self).await,
            other => return Err(ErrorData::resource_not_found(format!("no resource {other:?}"), None)),
        };
        let v = v.map_err(|f| ErrorData::internal_error(f.to_string(), None))?;
        let text = serde_json::to_string_pretty(&v).unwrap_or_default();
        Ok(ReadResourceResult::new(vec![ResourceContents::text(text, request.uri).with_mime_type("application/json")])
            .into())
    }
}
