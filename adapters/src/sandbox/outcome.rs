//! How a finished sandbox becomes the task's [`Outcome`]: exit code, output file or last stdout
//! line, and incident text a person can act on.

use serde_json::{Map, Value};

use super::ContainerSpec;
use crate::{Failure, Outcome, Retry};

/// How a container ended, before it is turned into an [`Outcome`].
#[derive(Debug)]
pub(super) struct Ended {
    pub(super) exit_code: i64,
    pub(super) oom_killed: bool,
    pub(super) stdout: String,
    pub(super) stderr: String,
    /// `/out/output.json`, if the command wrote anything there.
    pub(super) output_file: Option<Vec<u8>>,
}

/// Bytes of stdout and stderr kept (the end of each).
pub(super) const LOG_TAIL: usize = 16 * 1024;

/// Appends `bytes` to `buffer`, keeping its last [`LOG_TAIL`] bytes (or a little more).
pub(super) fn push_tail(buffer: &mut Vec<u8>, bytes: &[u8]) {
    buffer.extend_from_slice(bytes);
    if buffer.len() > LOG_TAIL * 2 {
        let cut = buffer.len() - LOG_TAIL;
        buffer.drain(..cut);
    }
}

/// The tails of what a sandbox printed, and how much it printed.
#[derive(Debug, Default)]
pub(super) struct Printed {
    pub(super) stdout: Vec<u8>,
    pub(super) stderr: Vec<u8>,
    total: u64,
}

impl Printed {
    /// Adds a chunk of the Docker engine's log stream.
    pub(super) fn push(&mut self, output: &bollard::container::LogOutput) {
        let bytes = output.as_ref();
        self.total += bytes.len() as u64;
        match output {
            bollard::container::LogOutput::StdErr { .. } => push_tail(&mut self.stderr, bytes),
            _ => push_tail(&mut self.stdout, bytes),
        }
    }

    /// Over `sandbox.max_printed_mb`: the run is killed rather than fill the worker's memory or
    /// the Docker engine's log files.
    pub(super) fn too_much(&self, guards: &procos_sandbox_contract::Guards) -> bool {
        self.total > guards.max_printed_bytes()
    }

    /// The stdout and stderr tails as text.
    pub(super) fn into_text(self) -> (String, String) {
        (
            String::from_utf8_lossy(&self.stdout).into_owned(),
            String::from_utf8_lossy(&self.stderr).into_owned(),
        )
    }
}

/// The failure of a run killed for printing more than `sandbox.max_printed_mb`.
pub(super) fn printed_too_much(spec: &ContainerSpec, stderr: &[u8]) -> Failure {
    let mib = spec.guards.max_printed_mb;
    Failure::new(
        format!("the sandbox printed more than {mib} MiB; it was killed"),
        format!(
            "`{}` wrote over {mib} MiB to stdout and stderr (sandbox.max_printed_mb). Outputs belong in `outputs` (at most sandbox.max_output_kb); large results belong in a file store. The end of its stderr:\n{}",
            spec.image,
            tail(&String::from_utf8_lossy(stderr))
        ),
        Retry::Never,
    )
}

/// What ProcOS's Python runner prints before its output document, as the last stdout line, when
/// the document is small: the same one it wrote to `/out/output.json`
/// (`docker/python-sandbox/runner.py`).
const OUTPUT_LINE: &str = "\u{1e}procos-output ";

/// Takes the runner's output line off the end of `stdout`: the output document, if it is there.
pub(super) fn take_output_line(stdout: &mut String) -> Option<Vec<u8>> {
    let printed = stdout.trim_end_matches('\n');
    let start = printed.rfind('\n').map_or(0, |i| i + 1);
    let document = printed[start..]
        .strip_prefix(OUTPUT_LINE)?
        .as_bytes()
        .to_vec();
    stdout.truncate(start);
    Some(document)
}

/// What ProcOS's Python runner prints as its very last stdout line once the outcome is settled
/// (its output document written, the exit code known), followed by that exit code: nothing
/// the process does after it can change the outcome, so the worker need not wait for the
/// interpreter's exit and the sandbox's teardown (`docker/python-sandbox/runner.py`). A script
/// that prints the line itself ends its own run with the code it names.
const EXIT_LINE: &str = "\u{1e}procos-exit ";

/// The exit code on the runner's end line, when `printed` (stdout so far) ends with it.
pub(super) fn runner_exit_code(printed: &[u8]) -> Option<i64> {
    let line = printed.strip_suffix(b"\n")?;
    let start = line.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let code = line[start..].strip_prefix(EXIT_LINE.as_bytes())?;
    std::str::from_utf8(code).ok()?.trim().parse().ok()
}

/// Takes the runner's end line off the end of `stdout`: its exit code, if it is there.
pub(super) fn take_exit_line(stdout: &mut String) -> Option<i64> {
    let code = runner_exit_code(stdout.as_bytes())?;
    let printed = stdout.trim_end_matches('\n');
    let start = printed.rfind('\n').map_or(0, |i| i + 1);
    stdout.truncate(start);
    Some(code)
}

/// Takes the runner's lines off the end of `stdout`: its output document, when it printed one
/// (over `limit` bytes is a failure).
pub(super) fn take_runner_lines(
    stdout: &mut String,
    limit: u64,
) -> Result<Option<Vec<u8>>, Failure> {
    take_exit_line(stdout);
    match take_output_line(stdout) {
        Some(document) if document.len() as u64 > limit => {
            Err(too_large("/out/output.json", document.len() as u64, limit))
        }
        document => Ok(document),
    }
}

pub(super) fn tail(text: &str) -> &str {
    let start = text.len().saturating_sub(LOG_TAIL);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    &text[start..]
}

/// The last meaningful line: a traceback's header, printed last by a process that died
/// meanwhile, says nothing.
pub(super) fn last_line(text: &str) -> Option<&str> {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("Traceback (most recent call last)"))
}

pub(super) fn too_large(path: &str, size: u64, limit: u64) -> Failure {
    Failure::new(
        format!("the output is over the size limit ({} KiB)", limit / 1024),
        format!(
            "{path} holds at least {size} bytes; sandbox.max_output_kb allows {limit}. Large results belong in a file store, with a reference in the output."
        ),
        Retry::Never,
    )
}

pub(super) fn one_line(text: &str) -> String {
    last_line(text).unwrap_or("").chars().take(300).collect()
}

/// Exit code and files → the task's outcome.
pub(super) fn outcome(spec: &ContainerSpec, ended: Ended) -> Outcome {
    let limit = spec.guards.max_output_kb * 1024;
    let output = match parse_output(&ended, limit) {
        Ok(output) => output,
        Err(failure) => return Outcome::Failure(failure),
    };
    let stderr_tail = tail(&ended.stderr);
    // SIGKILL that the sandbox did not send (its timeout returns earlier): the kernel's OOM
    // killer at the memory limit. Docker flags OOMKilled only when it hit the container's first
    // process, not a child of its init.
    const SIGKILLED: i64 = 128 + 9;
    if ended.oom_killed || ended.exit_code == SIGKILLED {
        let how = if ended.oom_killed {
            "ran out of memory"
        } else {
            "was killed (SIGKILL), most likely for running out of memory"
        };
        return Outcome::Failure(Failure::new(
            format!("the container {how} (limit {} MiB)", spec.guards.memory_mb),
            format!(
                "Raise sandbox.memory_mb if the work needs more. Exit code {}. The end of its stderr:\n{stderr_tail}",
                ended.exit_code
            ),
            Retry::Later,
        ));
    }
    if ended.exit_code == 0 {
        return Outcome::Complete(output.unwrap_or_default());
    }
    if let Some(code) = spec.bpmn_error_exit_codes.get(&ended.exit_code) {
        let output = output.unwrap_or_default();
        let code = if code.is_empty() {
            output
                .get("errorCode")
                .and_then(Value::as_str)
                .unwrap_or("ERROR")
                .to_owned()
        } else {
            code.clone()
        };
        let message = output
            .get("errorMessage")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| last_line(&ended.stderr).map(str::to_owned))
            .unwrap_or_default();
        let outputs = match output.get("outputs") {
            Some(Value::Object(map)) => map.clone(),
            _ => Map::new(),
        };
        return Outcome::BpmnError {
            code,
            message,
            outputs,
        };
    }
    let reason = last_line(&ended.stderr)
        .or_else(|| last_line(&ended.stdout))
        .unwrap_or("no output");
    Outcome::Failure(Failure::new(
        format!(
            "`{}` exited with code {}: {reason}",
            spec.image, ended.exit_code
        ),
        format!(
            "exit code {}\n--- stderr (end) ---\n{stderr_tail}\n--- stdout (end) ---\n{}",
            ended.exit_code,
            tail(&ended.stdout)
        ),
        Retry::Later,
    ))
}

/// `/out/output.json`, else the last stdout line when it is a JSON object.
fn parse_output(ended: &Ended, limit: u64) -> Result<Option<Map<String, Value>>, Failure> {
    if let Some(bytes) = &ended.output_file {
        return match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(Some(map)),
            Ok(other) => Err(Failure::new(
                "/out/output.json is not a JSON object",
                format!(
                    "Outputs must be an object of name → value; found: {}",
                    one_line(&other.to_string())
                ),
                Retry::Never,
            )),
            Err(e) => Err(Failure::new(
                format!("/out/output.json is not valid JSON: {e}"),
                format!(
                    "The file began: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                ),
                Retry::Never,
            )),
        };
    }
    let Some(line) = last_line(&ended.stdout) else {
        return Ok(None);
    };
    if line.len() as u64 > limit {
        return Err(too_large("the last stdout line", line.len() as u64, limit));
    }
    Ok(match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use procos_sandbox_contract::Guards;

    use super::*;

    fn ended(exit_code: i64, stdout: &str, output_file: Option<&str>) -> Ended {
        Ended {
            exit_code,
            oom_killed: false,
            stdout: stdout.into(),
            stderr: "Traceback…\nValueError: bad\n".into(),
            output_file: output_file.map(|s| s.as_bytes().to_vec()),
        }
    }

    fn spec() -> ContainerSpec {
        ContainerSpec {
            task_id: "t".into(),
            topic: "x".into(),
            image: "img".into(),
            command: None,
            env: vec![],
            files: vec![],
            bpmn_error_exit_codes: BTreeMap::from([(3, String::new())]),
            guards: Guards::default(),
            workspace: None,
        }
    }

    #[test]
    fn the_runners_output_line_is_taken_off_the_end_of_stdout() {
        let mut stdout = "working\n\n\u{1e}procos-output {\"x\": 1}\n".to_owned();
        assert_eq!(
            take_output_line(&mut stdout).as_deref(),
            Some(&b"{\"x\": 1}"[..])
        );
        assert_eq!(stdout, "working\n\n");
        let mut plain = "{\"x\": 1}\n".to_owned();
        assert_eq!(take_output_line(&mut plain), None);
        assert_eq!(plain, "{\"x\": 1}\n");
    }

    #[test]
    fn the_runners_end_line_settles_the_exit_code_only_as_the_last_line() {
        let printed = "working\n\u{1e}procos-output {\"x\": 1}\n\u{1e}procos-exit 3\n";
        assert_eq!(runner_exit_code(printed.as_bytes()), Some(3));
        // Not yet a whole line, or something printed after it: not the end.
        assert_eq!(runner_exit_code(b"\x1eprocos-exit 0"), None);
        assert_eq!(runner_exit_code(b"\x1eprocos-exit 0\nmore\n"), None);
        assert_eq!(runner_exit_code(b"\x1eprocos-exit zero\n"), None);
        assert_eq!(runner_exit_code(b"procos-exit 0\n"), None);
        let mut stdout = printed.to_owned();
        assert_eq!(take_exit_line(&mut stdout), Some(3));
        assert_eq!(
            take_output_line(&mut stdout).as_deref(),
            Some(&b"{\"x\": 1}"[..])
        );
        assert_eq!(stdout, "working\n");
    }

    #[test]
    fn exit_codes_become_outcomes() {
        let done = outcome(&spec(), ended(0, "log\n{\"n\": 1}\n", None));
        assert!(
            matches!(done, Outcome::Complete(ref m) if m["n"] == 1),
            "{done:?}"
        );
        let file_wins = outcome(&spec(), ended(0, "{\"n\": 1}", Some("{\"n\": 2}")));
        assert!(matches!(file_wins, Outcome::Complete(ref m) if m["n"] == 2));
        let bpmn = outcome(
            &spec(),
            ended(
                3,
                "",
                Some(r#"{"errorCode": "NO_STOCK", "errorMessage": "none left"}"#),
            ),
        );
        assert!(
            matches!(bpmn, Outcome::BpmnError { ref code, .. } if code == "NO_STOCK"),
            "{bpmn:?}"
        );
        let failed = outcome(&spec(), ended(1, "", None));
        match failed {
            Outcome::Failure(f) => {
                assert!(f.message.contains("ValueError: bad"), "{}", f.message);
                assert!(f.details.contains("Traceback"), "{}", f.details);
            }
            other => panic!("{other:?}"),
        }
        let killed = outcome(&spec(), ended(137, "", None));
        assert!(
            matches!(killed, Outcome::Failure(ref f) if f.message.contains("out of memory (limit 256 MiB)")),
            "{killed:?}"
        );
        let not_object = outcome(&spec(), ended(0, "", Some("[1]")));
        assert!(matches!(not_object, Outcome::Failure(ref f) if f.retry == Retry::Never));
    }
}
