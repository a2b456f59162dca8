//! `promscale-operator --help` documents every flag with its environment variable.

use std::process::Command;

use clap::CommandFactory;
use promscale_operator::config::Config;

#[test]
fn help_documents_every_flag_and_its_environment_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_promscale-operator"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let mut flags = 0;
    for arg in Config::command()
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
        assert!(env.starts_with("PROMSCALE_OPERATOR_") || env == "POD_NAME", "{env}");
        assert!(help.contains(&format!("[env: {env}")), "--help does not mention {env}");
        assert!(arg.get_help().is_some(), "--{long} has no help text");
        flags += 1;
    }
    assert!(flags >= 15, "only {flags} flags found");
}
