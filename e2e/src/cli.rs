//! Checks of a binary's command line, as a user reads it in `--help`.

use std::process::Command;

/// Every long flag of `command` appears in `binary --help` with help text and an environment
/// variable that starts with one of `env_prefixes` or is one of `extra_env` (downward-API
/// names such as POD_NAME); returns how many flags were checked.
pub fn assert_help_documents_every_flag(
    binary: &std::path::Path,
    command: clap::Command,
    env_prefix: &str,
    extra_env: &[&str],
) -> usize {
    let out = Command::new(binary).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let mut flags = 0;
    for arg in command
        .get_arguments()
        .filter(|a| a.get_long().is_some_and(|l| l != "help" && l != "version"))
    {
        let long = arg.get_long().unwrap();
        assert!(help.contains(&format!("--{long}")), "--help does not mention --{long}");
        let env = arg
            .get_env()
            .unwrap_or_else(|| panic!("--{long} has no environment variable"))
            .to_str()
            .unwrap();
        assert!(
            env.starts_with(env_prefix) || extra_env.contains(&env),
            "--{long}: {env}"
        );
        assert!(help.contains(&format!("[env: {env}")), "--help does not mention {env}");
        assert!(arg.get_help().is_some(), "--{long} has no help text");
        flags += 1;
    }
    flags
}
