//! Pre-made worlds: a world made ahead of its command (a batch world whose
//! init waits on its control socket, `cloche_world::batch`), then given
//! exactly one command and ended like any run. `cloched` keeps a few
//! (docs/architecture.md, *Pre-made worlds*).
//!
//! A pre-made world serves a request only if the spec the request gets now
//! ([`Context::prepare_spec`], from the policy bound to its cwd as it is
//! now) is the spec the world was made from, but for what each run brings
//! itself: its command, its environment and its timeout ([`shape`]).
//! Every other field of the spec, present or future, is compared.

use crate::context::Context;
use crate::error::Result;
use crate::report::Report;
use cloche_world::batch::{Entry, Io, OutStream, World};
use cloche_world::{Outcome, Spec, Timings};
use std::time::Instant;

/// What makes a world but for its command: every field of `s` but argv,
/// env, timeout and the PATH note's callback (a run's own), in its full
/// debug form, so that a field added to `Spec` is part of the shape
/// without anyone remembering to add it. Two specs of the same shape make
/// the same world.
pub fn shape(s: &mut Spec) -> String {
    let own = (std::mem::take(&mut s.argv), std::mem::take(&mut s.env), s.timeout.take(), s.path_note.take());
    let shape = format!("{s:?}");
    (s.argv, s.env, s.timeout, s.path_note) = own;
    shape
}

impl Context {
    /// Runs `spec`'s command (argv, env, cwd, timeout) in `world`, made
    /// from a spec of the same shape, handing `out` every chunk of its
    /// output as it comes. The report is a one-shot run's; the world is
    /// not ended here ([`World::finish`] after the answer is sent).
    pub fn run_premade(
        &self,
        world: &mut World<'_>,
        spec: &Spec,
        t0: Instant,
        out: &mut dyn FnMut(OutStream, &[u8]) -> Option<String>,
    ) -> Result<Report> {
        let entry =
            Entry { argv: spec.argv.clone(), env: spec.env.clone(), cwd: spec.cwd.clone(), timeout: spec.timeout };
        let setup = t0.elapsed();
        let mut output_error = None;
        let e = world.run_entry_live(&entry, Io::Capture { cap: 0 }, &mut |s, b| {
            if let (None, Some(err)) = (&output_error, out(s, b)) {
                output_error = Some(err);
            }
        })?;
        let ms = |d: std::time::Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        let total = t0.elapsed();
        let outcome = Outcome {
            world: world.id().to_string(),
            exit_code: e.exit_code,
            timed_out: e.timed_out,
            interrupted: e.interrupted,
            fs_diff: e.fs_diff,
            layers: world.layers(),
            userns: world.userns(),
            cgroup: world.cgroup_name(),
            limits_hit: e.limits_hit,
            timings: Timings {
                setup_ms: ms(setup),
                run_ms: e.duration_ms,
                diff_ms: 0.0,
                teardown_ms: 0.0,
                total_ms: ms(total),
            },
            kept: None,
            run: None,
            run_diff: None,
            network: world.network_scope(),
            cpu_ms: None,
            output_error,
            teardown: Default::default(),
        };
        Ok(Report::new(spec, outcome))
    }
}
