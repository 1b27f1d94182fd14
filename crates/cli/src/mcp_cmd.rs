//! `cloche mcp [ARGS...]`: executes `cloche-mcp` (next to this executable)
//! with the arguments as given. The MCP server is a program of its own so
//! that `cloche` links no async runtime (docs/mcp.md).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// Options of the MCP server, passed as they are (`cloche mcp --help` shows them): --project DIR,
    /// --socket PATH, --wait-secs N, --output-cap BYTES, --agent NAME, --no-private.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
    pub args: Vec<OsString>,
}

pub fn main(a: McpArgs) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(e) => e.with_file_name("cloche-mcp"),
        Err(e) => return crate::fail(format!("this executable's path: {e}")),
    };
    // Only returns on failure.
    let e = std::process::Command::new(&exe).arg0("cloche-mcp").args(&a.args).exec();
    crate::fail(format!("cannot execute {}: {e} (it is built and installed next to cloche)", exe.display()))
}
