//! `tapwire`: the CNI plugin (`"type": "tapwire"`), run by a container runtime once per
//! CNI command with `CNI_*` variables and the network configuration on stdin. It asks the
//! node agent (`tapwire-control`) over its API socket to do the work and prints the CNI
//! result, version or error object on stdout — nothing else goes to stdout; the one log
//! line on failure goes to stderr. The protocol logic is [`tapwire_control::cni`].

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

use tapwire_control::api;
use tapwire_control::cni::{self, Environment};

fn main() -> ExitCode {
    let env = Environment::from_process();
    let stdin = io::stdin();
    // Someone trying `CNI_COMMAND=VERSION tapwire` in a shell should not hang waiting for
    // a configuration; runtimes always pipe one in.
    let outcome = if stdin.is_terminal() {
        cni::run(&env, &mut io::empty(), api::call)
    } else {
        cni::run(&env, &mut stdin.lock(), api::call)
    };
    if env.command.is_none() {
        eprintln!(
            "tapwire: the tapwire CNI plugin (CNI spec {}); run by a container runtime with \
             CNI_COMMAND set",
            cni::SUPPORTED_VERSIONS.join(", ")
        );
    } else if !outcome.success {
        eprintln!(
            "tapwire: {} failed: {}",
            env.command.as_deref().unwrap_or_default(),
            outcome.stdout.trim_end()
        );
    }
    let mut stdout = io::stdout().lock();
    let written = stdout
        .write_all(outcome.stdout.as_bytes())
        .and_then(|()| stdout.flush());
    if let Err(err) = written {
        eprintln!("tapwire: writing the result to stdout failed: {err}");
        return ExitCode::FAILURE;
    }
    if outcome.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
