//! `--tls-ca` / `--tls-server-name`: how the client subcommands reach a TLS client port.

use eventstreamcore::tls::ClientTls;

use crate::{Cli, Command};

/// The TLS settings for the subcommand, or none without `--tls-ca`; exits with a message if the
/// CA file is unusable or the subcommand talks to no client port (a flag it would ignore).
pub fn client_tls_or_exit(cli: &Cli) -> Option<ClientTls> {
    client_tls(cli).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    })
}

fn client_tls(cli: &Cli) -> Result<Option<ClientTls>, String> {
    let Some(ca) = &cli.tls_ca else { return Ok(None) };
    let connects = matches!(
        cli.command,
        Command::Publish { .. } | Command::Fetch { .. } | Command::Tail { .. } | Command::Admin { .. }
    );
    if !connects {
        return Err("--tls-ca applies to publish, fetch, tail and admin only".into());
    }
    let tls = ClientTls::from_ca_file(ca).map_err(|e| e.to_string())?;
    match &cli.tls_server_name {
        Some(name) => tls.with_server_name(name).map(Some).map_err(|e| e.to_string()),
        None => Ok(Some(tls)),
    }
}
