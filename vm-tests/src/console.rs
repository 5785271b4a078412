//! What a boot printed on its serial console, and the facts the tests assert on: the root's
//! marker, the agent's step and status lines, captured evidence, timings.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use base64::Engine as _;

/// The root's init prints this, then its disk's token.
pub const ROOT_MARKER: &str = "ROOT-UNLOCKED-OK";
/// The test module's `later` mode prints this in the real root just before it runs the agent
/// again (`dracut/99unlock-test/unlock-test.sh`).
pub const LATER_READY: &str = "UNLOCK-TEST-LATER-READY";
/// Every line the agent prints starts with this (after journald's `name[pid]: ` prefix).
const AGENT: &str = "initrd-agent: ";
/// After [`AGENT`]: the line of `initrd-agent latch` (the release-PCR extend on the way out
/// of the initramfs), which is not an unlock run.
const LATCH: &str = "latch: ";

/// One finished (or killed) boot.
#[derive(Debug)]
pub struct Boot {
    /// Scenario name (log file name).
    pub name: String,
    /// Console lines (escape sequences removed) with their time since QEMU started.
    pub lines: Vec<(Duration, String)>,
    /// QEMU start to exit (or to the kill).
    pub elapsed: Duration,
    /// QEMU was killed at the hard timeout.
    pub timed_out: bool,
    /// QEMU's exit status.
    pub exit: Option<ExitStatus>,
    /// The full console log.
    pub log: PathBuf,
    /// The root disk's token (only the decrypted disk knows it).
    pub token: String,
}

/// One run of the agent inside a boot.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRun {
    /// `step <name> <ms> ms` lines, in order.
    pub steps: Vec<(String, u64)>,
    /// The final status line, without the `initrd-agent: ` prefix.
    pub status: String,
    /// When the status line appeared (since QEMU start).
    pub at: Duration,
    /// The run's own duration from its `unlocked (... in X s)` line, when it says.
    pub took: Option<Duration>,
    /// When the run started (since QEMU start), estimated from its first step line minus
    /// that step's duration; `None` when it printed no step.
    pub started: Option<Duration>,
}

impl AgentRun {
    /// The key was released and written.
    pub fn unlocked(&self) -> bool {
        self.status.starts_with("unlocked")
    }

    /// Sum of the step durations.
    pub fn steps_total(&self) -> Duration {
        Duration::from_millis(self.steps.iter().map(|(_, ms)| ms).sum())
    }

    /// Milliseconds of one step (0 when absent).
    pub fn step(&self, name: &str) -> u64 {
        self.steps
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, ms)| *ms)
    }
}

impl Boot {
    /// When the root's marker with this disk's token appeared.
    pub fn root_reached(&self) -> Option<Duration> {
        self.root_line().map(|(t, _)| t)
    }

    /// The root's marker line.
    pub fn root_line(&self) -> Option<(Duration, &str)> {
        self.lines
            .iter()
            .find(|(_, l)| l.contains(ROOT_MARKER) && l.contains(&self.token))
            .map(|(t, l)| (*t, l.as_str()))
    }

    /// The agent's runs, in order (a run ends with its status line).
    pub fn agent_runs(&self) -> Vec<AgentRun> {
        let mut runs = Vec::new();
        let mut steps = Vec::new();
        let mut started = None;
        for (t, line) in &self.lines {
            let Some(pos) = line.find(AGENT) else {
                continue;
            };
            let text = &line[pos + AGENT.len()..];
            if text.starts_with(LATCH) || text.starts_with("note: ") {
                continue;
            }
            if let Some(rest) = text.strip_prefix("step ") {
                let mut w = rest.split_whitespace();
                if let (Some(name), Some(ms)) = (w.next(), w.next().and_then(|m| m.parse().ok())) {
                    if steps.is_empty() {
                        started = Some(t.saturating_sub(Duration::from_millis(ms)));
                    }
                    steps.push((name.to_owned(), ms));
                }
                continue;
            }
            let took = text
                .rsplit_once(" in ")
                .and_then(|(_, s)| s.strip_suffix(" s)"))
                .and_then(|s| s.parse::<f64>().ok())
                .map(Duration::from_secs_f64);
            runs.push(AgentRun {
                steps: std::mem::take(&mut steps),
                status: text.to_owned(),
                at: *t,
                took,
                started: started.take(),
            });
        }
        runs
    }

    /// The lines of `initrd-agent latch` (without the `initrd-agent: latch: ` prefix), with
    /// their time since QEMU start.
    pub fn latches(&self) -> Vec<(Duration, &str)> {
        self.lines
            .iter()
            .filter_map(|(t, line)| {
                let pos = line.find(AGENT)?;
                let text = line[pos + AGENT.len()..].strip_prefix(LATCH)?;
                Some((*t, text))
            })
            .collect()
    }

    /// The first line containing `text`, with its time since QEMU start.
    pub fn line_with(&self, text: &str) -> Option<(Duration, &str)> {
        self.lines
            .iter()
            .find(|(_, l)| l.contains(text))
            .map(|(t, l)| (*t, l.as_str()))
    }

    /// The first agent run (the boot's unlock attempt).
    pub fn agent(&self) -> AgentRun {
        self.agent_runs().into_iter().next().unwrap_or_else(|| {
            panic!(
                "{}: the agent printed no status line\n{}",
                self.name,
                self.tail(60)
            )
        })
    }

    /// The evidence JSON a capture boot printed.
    pub fn evidence(&self) -> Vec<u8> {
        let b64: String = self
            .lines
            .iter()
            .filter_map(|(_, l)| l.split_once("UTEV:").map(|(_, r)| r.trim().to_owned()))
            .collect();
        assert!(
            !b64.is_empty()
                && self
                    .lines
                    .iter()
                    .any(|(_, l)| l.contains("UNLOCK-TEST-EVIDENCE-END")),
            "{}: no complete evidence dump on the console\n{}",
            self.name,
            self.tail(60)
        );
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_else(|e| panic!("{}: evidence dump is not base64 ({e})", self.name))
    }

    /// The last `n` console lines, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let skip = self.lines.len().saturating_sub(n);
        let mut s = format!(
            "--- last console lines of {} (full log: {}) ---\n",
            self.name,
            self.log.display()
        );
        for (t, l) in &self.lines[skip..] {
            let _ = writeln!(s, "[{:7.2}] {l}", t.as_secs_f64());
        }
        s
    }

    /// The figures line printed after each boot.
    pub fn figures(&self) -> String {
        let mut s = format!("boot {}: ", self.name);
        match self.root_reached() {
            Some(t) => {
                let _ = write!(s, "QEMU start -> root {:.1} s", t.as_secs_f64());
            }
            None => {
                let _ = write!(
                    s,
                    "no root ({} after {:.1} s)",
                    if self.timed_out {
                        "killed"
                    } else {
                        "powered off"
                    },
                    self.elapsed.as_secs_f64()
                );
            }
        }
        for (i, run) in self.agent_runs().iter().enumerate() {
            let _ = write!(
                s,
                "; agent run {}: {:?} at {:.1} s",
                i + 1,
                run.status,
                run.at.as_secs_f64()
            );
            if let Some(took) = run.took {
                let _ = write!(s, ", start -> key written {:.2} s", took.as_secs_f64());
            }
            if !run.steps.is_empty() {
                let steps: Vec<String> = run
                    .steps
                    .iter()
                    .map(|(n, ms)| format!("{n} {ms}"))
                    .collect();
                let _ = write!(s, " [steps ms: {}]", steps.join(", "));
            }
        }
        s
    }
}

/// Removes terminal escape sequences (systemd colours its status) and carriage returns.
pub fn clean(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // Parameters, then one final byte in @..~.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c if c.is_control() && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(lines: &[&str]) -> Boot {
        Boot {
            name: "t".into(),
            lines: lines
                .iter()
                .enumerate()
                .map(|(i, l)| (Duration::from_secs(i as u64), clean(l)))
                .collect(),
            elapsed: Duration::from_secs(9),
            timed_out: false,
            exit: None,
            log: PathBuf::from("/dev/null"),
            token: "abcd".into(),
        }
    }

    #[test]
    fn agent_runs_are_split_at_status_lines() {
        let b = boot(&[
            "[   12.1] initrd-agent[301]: initrd-agent: step tpm 120 ms",
            "initrd-agent[301]: initrd-agent: step register 40 ms",
            "\u{1b}[0;32m  OK  \u{1b}[0m] Finished initrd-agent.service",
            "initrd-agent[301]: initrd-agent: unlocked (key written to /run/cryptsetup-keys.d/luks-x.key in 0.42 s)",
            "unlock-test[400]: initrd-agent: step tpm 100 ms",
            "unlock-test[400]: initrd-agent: refused by verifier: session_terminated: done",
            "initrd-agent[420]: initrd-agent: latch: release PCR 15 extended",
            "ROOT-UNLOCKED-OK abcd keys=[]",
        ]);
        let runs = b.agent_runs();
        assert_eq!(runs.len(), 2, "the latch line is no run");
        assert_eq!(
            b.latches(),
            vec![(Duration::from_secs(6), "release PCR 15 extended")]
        );
        assert!(runs[0].unlocked());
        assert_eq!(
            runs[0].steps,
            vec![("tpm".into(), 120), ("register".into(), 40)]
        );
        assert_eq!(runs[0].took, Some(Duration::from_millis(420)));
        assert_eq!(runs[0].started, Some(Duration::ZERO));
        assert_eq!(runs[1].started, Some(Duration::from_millis(3900)));
        assert!(runs[1]
            .status
            .starts_with("refused by verifier: session_terminated"));
        assert_eq!(b.root_reached(), Some(Duration::from_secs(7)));
    }

    #[test]
    fn note_lines_are_no_run() {
        let b = boot(&[
            "initrd-agent[301]: initrd-agent: step tpm 120 ms",
            "initrd-agent[301]: initrd-agent: note: verifier: unknown_agent: x; registering this TPM's EK and AK",
            "initrd-agent[301]: initrd-agent: step register 40 ms",
            "initrd-agent[301]: initrd-agent: unlocked (key written to /run/k in 0.42 s)",
        ]);
        let runs = b.agent_runs();
        assert_eq!(runs.len(), 1);
        assert!(runs[0].unlocked());
        assert_eq!(runs[0].steps.len(), 2);
    }

    #[test]
    fn a_marker_without_the_disks_token_is_not_the_root() {
        let b = boot(&["ROOT-UNLOCKED-OK ffff keys=[]"]);
        assert_eq!(b.root_reached(), None);
    }
}
