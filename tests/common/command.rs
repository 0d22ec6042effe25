//! The `epass` binary as the tests run it: hermetic, whatever the environment `cargo test` was
//! started in. Shared by `#[path]` so that every test file that runs the binary builds its
//! command the same way.

// Each test file uses a different part of the helper.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Read as _;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const EPASS: &str = env!("CARGO_BIN_EXE_epass");

/// `epass`, with no `EPASS_*` variable of the test's own environment (a developer's
/// `EPASS_DATA_DIR`, `EPASS_SERVER`, `EPASS_TOKEN` or `EPASS_CONFIG` would change what the
/// command talks to and with which credentials) and logs at `warn`. The test sets what it means
/// to set, after this.
pub fn epass() -> Command {
    let mut command = Command::new(EPASS);
    hermetic(&mut command);
    command
}

/// Takes every `EPASS_*` variable out of the environment a command inherits, and `RUST_LOG`
/// down to `warn`: for commands that start `epass` through another program (`sh -c`).
pub fn hermetic(command: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        if is_epass_variable(&name) {
            command.env_remove(&name);
        }
    }
    command.env("RUST_LOG", "warn")
}

fn is_epass_variable(name: &OsStr) -> bool {
    name.to_str().is_some_and(|name| name.starts_with("EPASS_"))
}

/// Runs a command that must end by itself, as [`Command::output`] does, but kills it and fails
/// the test if it is still running after `limit`: a regression that makes it run on (a server
/// that should have refused to start) fails the test instead of hanging the suite. Not a timing
/// assertion: the limit is far beyond any expected duration.
pub fn output_within(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
    // Read both pipes as the command writes, so that it never blocks on a full one.
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout is piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr is piped")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the command") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.join().unwrap_or_default();
            panic!("{command:?} still running after {limit:?}; killed. stderr:\n{}", String::from_utf8_lossy(&stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: stdout.join().expect("stdout reader"), stderr: stderr.join().expect("stderr reader") }
}
