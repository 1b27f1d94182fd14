//! A temporary user of the host (with a home), for what a user who is not
//! root does: made with `useradd`, removed with `userdel -r` on drop, even
//! when the test fails (its processes killed first).

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub struct TempUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl TempUser {
    /// A new user named after `tag` (unique per test run).
    pub fn new(tag: &str) -> TempUser {
        let digits: String = tag.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        let name = format!("clt{}", &digits[digits.len().saturating_sub(12)..]).to_lowercase();
        let st = Command::new("useradd").args(["-m", "-s", "/bin/sh", &name]).status().expect("useradd");
        assert!(st.success(), "useradd {name} failed");
        let id = |flag: &str| -> u32 {
            let o = Command::new("id").args([flag, &name]).output().expect("id");
            String::from_utf8_lossy(&o.stdout).trim().parse().expect("a numeric id")
        };
        let home = PathBuf::from(format!("/home/{name}"));
        TempUser { uid: id("-u"), gid: id("-g"), home, name }
    }

    /// A command run as this user (`runuser`), in `cwd`, with only HOME,
    /// PATH and USER in its environment (no daemon socket, no state dir).
    pub fn command<S: AsRef<OsStr>>(&self, cwd: &std::path::Path, program: &str, args: &[S]) -> Command {
        let mut c = Command::new("runuser");
        c.args(["-u", &self.name, "--", "env", "-i"])
            .arg(format!("HOME={}", self.home.display()))
            .arg("PATH=/usr/local/bin:/usr/bin:/bin")
            .arg(format!("USER={}", self.name))
            .arg(program)
            .args(args)
            .current_dir(cwd);
        c
    }

    /// Writes `content` at `rel` under the home (parents made), the user's.
    pub fn write(&self, rel: &str, content: &[u8]) -> PathBuf {
        let p = self.home.join(rel);
        let mut dir = self.home.clone();
        for c in std::path::Path::new(rel).parent().into_iter().flat_map(|p| p.components()) {
            dir.push(c);
            let _ = std::fs::create_dir(&dir);
            std::os::unix::fs::chown(&dir, Some(self.uid), Some(self.gid)).unwrap();
        }
        std::fs::write(&p, content).unwrap();
        std::os::unix::fs::chown(&p, Some(self.uid), Some(self.gid)).unwrap();
        p
    }

    /// The user's processes (host pids).
    pub fn processes(&self) -> Vec<String> {
        let o = Command::new("pgrep").args(["-u", &self.uid.to_string()]).output().expect("pgrep");
        String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_string).collect()
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _ = Command::new("pkill").args(["-KILL", "-u", &self.uid.to_string()]).status();
        for _ in 0..50 {
            if self.processes().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("userdel").args(["-r", &self.name]).stderr(std::process::Stdio::null()).status();
    }
}
