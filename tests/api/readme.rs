//! README's walk-through, run as a newcomer would: every `sh` block from
//! "Walk-through with grpcurl" to the end, in order, against a fresh credd, with the
//! grpcurl README names — but blocks right after a `<!-- not run by
//! tests/api/readme.rs: why -->` line (one that starts a second server). A command's trailing comment is the answer the text
//! promises, and is checked: `{}` (an empty answer), `"valid": true` or another JSON
//! fragment of the answer (`"reason": "…"`), `allowed`,
//! or a gRPC error code (`InvalidArgument`, `PermissionDenied`); any other command
//! must succeed. A README that drifts from the product fails here.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use crate::helpers::{Backend, TestDb};

/// Whether the tools the walk-through uses are installed; CI requires them.
fn tools_installed() -> bool {
    let missing: Vec<&str> = ["grpcurl", "jq", "openssl"]
        .into_iter()
        .filter(|tool| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CREDD_REQUIRE_GRPCURL").is_none(),
        "README's walk-through needs {missing:?}"
    );
    eprintln!("{missing:?} not installed: README walk-through test skipped");
    false
}

/// The marker that keeps the next block out of the run.
const NOT_RUN: &str = "<!-- not run by tests/api/readme.rs";

/// The shell commands of README's walk-through, continuation lines joined.
fn walk_through() -> Vec<String> {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let start = readme.find("## Walk-through with grpcurl").unwrap();
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut skip_next = false;
    let mut current = String::new();
    for line in readme[start..].lines() {
        if line.starts_with(NOT_RUN) {
            skip_next = true;
            continue;
        }
        if line.starts_with("```") {
            // The marker stands right before an opening fence, the next one seen.
            in_block = line == "```sh" && !std::mem::take(&mut skip_next);
            continue;
        }
        if !in_block || (current.is_empty() && (line.trim().is_empty() || line.starts_with('#'))) {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        // Complete when the line is not continued and no quote is left open (a
        // double-quoted JSON argument may span lines).
        if !line.ends_with('\\') && !open_quote(&current) {
            commands.push(std::mem::take(&mut current));
        }
    }
    commands
}

/// Whether `text` ends inside a single- or double-quoted string.
fn open_quote(text: &str) -> bool {
    let (mut single, mut double, mut escaped) = (false, false, false);
    for c in text.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if !single => escaped = true,
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            _ => {}
        }
    }
    single || double
}

/// The command as bash runs it, followed by the check of its promised answer.
fn checked(command: &str) -> String {
    // The promise is a comment after two or more spaces on the command's last line.
    let trimmed = command.trim_end();
    let last_line_start = trimmed.rfind('\n').map_or(0, |at| at + 1);
    let (body, promise) = match trimmed[last_line_start..].find("  # ") {
        Some(at) => (
            trimmed[..last_line_start + at].trim_end(),
            trimmed[last_line_start + at + 4..].trim(),
        ),
        None => (trimmed, ""),
    };
    let shown = body.replace('\'', "'\\''");
    // Assignments must run in this shell, not in a capture.
    if body.split('=').next().is_some_and(|name| {
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
    }) {
        return format!(
            "echo '$ {shown}'\n{body} || {{ echo 'FAILED: the command failed'; fail=1; }}\n"
        );
    }
    let check = if promise.starts_with("{}") {
        r#"[ "$rc" = 0 ] && [ "$(echo "$out" | tr -d ' \n')" = "{}" ]"#.to_owned()
    } else if promise.starts_with("\"valid\": true") {
        r#"[ "$rc" = 0 ] && echo "$out" | grep -q '"valid": true'"#.to_owned()
    } else if promise.starts_with("allowed") {
        r#"[ "$rc" = 0 ] && echo "$out" | grep -q '"allowed": true'"#.to_owned()
    } else if promise.starts_with('"') {
        // A JSON fragment of the answer, up to a parenthesised remark.
        let fragment = promise
            .split(" (")
            .next()
            .unwrap_or(promise)
            .replace('\'', "");
        format!(r#"[ "$rc" = 0 ] && echo "$out" | grep -qF '{fragment}'"#)
    } else if let Some(code) = ["InvalidArgument", "PermissionDenied"]
        .into_iter()
        .find(|code| promise.starts_with(code))
    {
        format!(r#"[ "$rc" != 0 ] && echo "$out" | grep -q 'Code: {code}'"#)
    } else {
        r#"[ "$rc" = 0 ]"#.to_owned()
    };
    format!(
        "echo '$ {shown}'\nout=$({body} 2>&1); rc=$?\necho \"$out\"\n{check} || {{ echo 'FAILED: not the answer README promises: {}'; fail=1; }}\n",
        promise.replace('\'', "")
    )
}

/// On SQLite as README does it (the default `./credd.db` in the current
/// directory); on PostgreSQL with `CREDD_DATABASE_URL` set for the server and for
/// the `credd token` commands alike.
async fn readme_walk_through_runs_in_order_with_the_promised_answers(backend: Backend) {
    if !tools_installed() {
        return;
    }
    let (_db, url) = TestDb::create(&backend).await;
    let database_url = matches!(backend, Backend::Postgres(_)).then_some(url);
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let credd = env!("CARGO_BIN_EXE_credd");
    let mut server = Command::new(credd);
    server
        .current_dir(dir.path())
        .env_remove("CREDD_DATABASE_URL")
        .env_remove("CREDD_BOOTSTRAP_TOKEN")
        .env("CREDD_LISTEN", &address)
        .env("CREDD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(url) = &database_url {
        server.env("CREDD_DATABASE_URL", url);
    }
    let mut server = server.spawn().unwrap();
    let stdout = server.stdout.take().unwrap();
    let export = BufReader::new(stdout)
        .lines()
        .map(Result::unwrap)
        .find(|line| line.starts_with("export CREDD_TOKEN="))
        .expect("the first start prints a token");
    let mut script = format!("{export}\nfail=0\n");
    for command in walk_through() {
        let command = command
            .replace("127.0.0.1:50051", &address)
            .replace("cargo run --release --", credd);
        script.push_str(&checked(&command));
    }
    script.push_str("exit $fail\n");
    if let Some(path) = std::env::var_os("CREDD_README_SCRIPT") {
        std::fs::write(path, &script).unwrap();
    }
    let mut bash = Command::new("bash");
    bash.arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env_remove("CREDD_TOKEN")
        .env_remove("CREDD_DATABASE_URL")
        .env("CREDD_LISTEN", &address);
    if let Some(url) = &database_url {
        bash.env("CREDD_DATABASE_URL", url);
    }
    let output = bash.output().unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let transcript = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "README's walk-through did not run as written:\n{transcript}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        transcript.matches("$ grpcurl").count() > 25,
        "the walk-through's grpcurl commands ran:\n{transcript}"
    );
}

both_backends!(readme_walk_through_runs_in_order_with_the_promised_answers);
