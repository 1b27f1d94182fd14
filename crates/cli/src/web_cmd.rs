//! `cloche web login|logout`: login tokens of the reviewer's web page
//! (docs/web.md), asked of the daemon for the calling user.

use crate::remote::{self, Via};

#[derive(clap::Subcommand)]
pub enum WebCommand {
    /// Print a login token for this user (once: the daemon keeps only its hash) and the page's address.
    Login {
        /// Print the answer as JSON (token, url, login, expires_at, uid, roles).
        #[arg(long)]
        json: bool,
    },
    /// Revoke every login token of this user and end their browser sessions.
    Logout,
}

pub fn main(cmd: WebCommand) -> i32 {
    let mut client = match remote::via() {
        Ok(Via::Daemon(c)) => c,
        Ok(Via::Embedded) => {
            return crate::fail("the web page is served by the daemon: start cloched with --web 127.0.0.1:PORT")
        }
        Err(e) => return crate::fail(e),
    };
    match cmd {
        WebCommand::Login { json } => match client.call("POST", "/v1/web/login", None) {
            Ok(v) if json => {
                println!("{v}");
                0
            }
            Ok(v) => {
                let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
                println!("{}", s("token"));
                eprintln!(
                    "cloche: log in at {} with the token above (shown once; valid until {}); `cloche web logout` revokes it",
                    s("login"),
                    s("expires_at")
                );
                0
            }
            Err(e) => crate::fail(e),
        },
        WebCommand::Logout => match client.call("POST", "/v1/web/logout", None) {
            Ok(v) => {
                println!("revoked {} login tokens", v["revoked"].as_u64().unwrap_or(0));
                0
            }
            Err(e) => crate::fail(e),
        },
    }
}
