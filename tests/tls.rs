//! TLS on the client port (`[ingest.tls]`) against a real `esc serve`: the Rust client and the
//! `esc` CLI with `--tls-ca` publish and read over TLS; a plain client, a client trusting another
//! CA, or a certificate for another name gets nothing; bad certificate files stop the server at
//! start with the file named. (The Python client's `ssl` test is in tests/python_client.rs; an
//! `openssl s_client` check runs here too when `openssl` is installed.)
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real processes, files and ports

#[path = "common/certs.rs"]
mod certs;
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use certs::{make_pki, tls_sets};
use common::{EscServer, esc, start_esc, temp_dir};
use eventstreamcore::client::{Client, ClientError, ClusterClient};
use eventstreamcore::event::{Event, Priority};
use eventstreamcore::tls::ClientTls;
use eventstreamcore::wire::AckItem;

fn serve_tls(what: &str) -> (EscServer, certs::TestPki, std::path::PathBuf) {
    let dir = temp_dir(what);
    let pki = make_pki(&dir);
    let data = dir.join("data");
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--set".into(),
        "cluster.raft_listen=127.0.0.1:0".into(),
        "--set".into(),
        format!("cluster.data_dir={:?}", data.display().to_string()),
    ];
    args.extend(tls_sets(&pki));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (start_esc(&args), pki, dir)
}

#[tokio::test]
async fn the_rust_client_publishes_and_fetches_over_tls_and_nothing_else_gets_in() {
    let (s, pki, _dir) = serve_tls("tls-rust");
    let addr: SocketAddr = s.addr.parse().unwrap();

    let mut client = ClusterClient::new(vec![addr], "tls-test", "");
    client.tls = Some(ClientTls::from_ca_file(&pki.ca).unwrap());
    let acks = client.publish(vec![Event::new("tls/t", Priority::High, "secret payload")]).await.unwrap();
    assert!(matches!(&acks[..], [AckItem::Stored { offset: 0, duplicate: false, .. }]), "{acks:?}");
    let page = client.fetch("tls/t", 0, 10).await.unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(&page.events[0].event.payload[..], b"secret payload");

    // A plain client: the server expects a TLS ClientHello, so HELLO gets no answer but a close.
    let mut plain = Client::connect(addr).await.unwrap();
    plain.set_timeout(Duration::from_secs(5));
    let r = plain.hello("plain", "").await;
    assert!(matches!(r, Err(ClientError::Closed | ClientError::Io(_) | ClientError::Protocol(_))), "{r:?}");

    // A client that trusts another CA refuses the server's certificate.
    let other = make_pki(&temp_dir("tls-rust-other"));
    let r = Client::connect_with(addr, Some(&ClientTls::from_ca_file(&other.ca).unwrap())).await;
    let e = r.err().expect("a certificate from an unknown CA is refused");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");

    // The right CA but a name the certificate does not carry.
    let wrong_name = ClientTls::from_ca_file(&pki.ca).unwrap().with_server_name("esc.example").unwrap();
    let r = Client::connect_with(addr, Some(&wrong_name)).await;
    let e = r.err().expect("a certificate for another name is refused");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    drop(s);
}

#[test]
fn the_esc_cli_publishes_and_fetches_with_tls_ca() {
    let (s, pki, _dir) = serve_tls("tls-cli");
    let ca = pki.ca.display().to_string();
    let (ok, out, err) = esc(&["publish", "--tls-ca", &ca, "--addr", &s.addr, "--topic", "cli", "over tls"]);
    assert!(ok, "publish over TLS failed: {out}{err}");
    assert!(out.contains("1 stored"), "{out}");
    let (ok, out, err) = esc(&["fetch", "--tls-ca", &ca, "--addr", &s.addr, "--topic", "cli", "--json"]);
    assert!(ok, "fetch over TLS failed: {out}{err}");
    assert!(out.contains("over tls"), "{out}");
    // Legacy frames ride the same TLS port.
    let (ok, out, err) =
        esc(&["publish", "--legacy", "--tls-ca", &ca, "--addr", &s.addr, "--topic", "cli", "legacy"]);
    assert!(ok, "legacy publish over TLS failed: {out}{err}");
    // Without --tls-ca the CLI cannot talk to a TLS port (and gives up instead of hanging).
    let (ok, _, _) = esc(&["fetch", "--addr", &s.addr, "--topic", "cli"]);
    assert!(!ok, "a plain fetch from a TLS port succeeded");
    // --tls-ca on a command that connects to no client port is refused, not ignored.
    let (ok, _, err) = esc(&["config", "check", "--tls-ca", &ca, "config/esc.toml"]);
    assert!(!ok && err.contains("--tls-ca"), "{err}");
}

#[test]
fn a_standard_tls_client_openssl_s_client_completes_the_handshake() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!(
            "openssl not installed: the Python ssl test (tests/python_client.rs) covers a standard client"
        );
        return;
    }
    let (s, pki, _dir) = serve_tls("tls-openssl");
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &s.addr, "-CAfile"])
        .arg(&pki.ca)
        .args(["-verify_return_error", "-verify_ip", "127.0.0.1", "-brief"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Nothing to send: closing stdin ends the session right after the handshake.
    child.stdin.take().unwrap().flush().unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("Verification: OK") || text.contains("Verify return code: 0"), "{text}");
    assert!(text.contains("CONNECTION ESTABLISHED") || text.contains("Protocol"), "{text}");
}

#[test]
fn bad_certificate_files_stop_the_server_at_start_naming_the_file() {
    let dir = temp_dir("tls-bad");
    let pki = make_pki(&dir);
    let other = make_pki(&temp_dir("tls-bad-other"));
    let data = format!("cluster.data_dir={:?}", dir.join("data").display().to_string());
    let run = |cert: &std::path::Path, key: &std::path::Path| {
        esc(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--set",
            "cluster.raft_listen=127.0.0.1:0",
            "--set",
            &data,
            "--set",
            &format!("ingest.tls.cert_file={:?}", cert.display().to_string()),
            "--set",
            &format!("ingest.tls.key_file={:?}", key.display().to_string()),
        ])
    };
    let missing = dir.join("missing.pem");
    let (ok, _, err) = run(&missing, &pki.key);
    assert!(!ok && err.contains("missing.pem") && err.contains("certificate"), "{err}");
    // A key file given as the certificate: no CERTIFICATE block.
    let (ok, _, err) = run(&pki.key, &pki.key);
    assert!(!ok && err.contains("no PEM `CERTIFICATE` block"), "{err}");
    // A certificate given as the key.
    let (ok, _, err) = run(&pki.cert, &pki.cert);
    assert!(!ok && err.contains("no PEM private key"), "{err}");
    // A key that does not belong to the certificate.
    let (ok, _, err) = run(&pki.cert, &other.key);
    assert!(!ok && err.contains("server.pem") && err.contains("server.key"), "{err}");
}

/// `[cluster.tls]` (the same certificate on every member, signed by one CA): a 3-member cluster
/// elects a leader and replicates an acknowledged event to every member over TLS peer links.
#[tokio::test]
async fn a_three_member_cluster_replicates_over_tls_peer_links() {
    use eventstreamcore::tls::PeerTlsFiles;
    let dir = temp_dir("tls-peers");
    let pki = make_pki(&dir);
    let mut procs = Vec::new();
    for mut c in common::member_configs(&dir, 3, "tls-cluster-secret-0123456789") {
        c.cluster.tick_ms = 20;
        c.cluster.tls = Some(PeerTlsFiles {
            cert_file: pki.cert.clone(),
            key_file: pki.key.clone(),
            ca_file: pki.ca.clone(),
        });
        let path = dir.join(format!("node{}.toml", c.node.id));
        std::fs::write(&path, toml::to_string(&c).unwrap()).unwrap();
        procs.push(start_esc(&["serve", "--config", path.to_str().unwrap()]));
    }
    let addrs: Vec<SocketAddr> = procs.iter().map(|p| p.addr.parse().unwrap()).collect();
    let mut client = ClusterClient::new(addrs.clone(), "tls-peers", "");
    let acks = client.publish(vec![Event::new("peers/t", Priority::High, "replicated")]).await.unwrap();
    assert!(matches!(&acks[..], [AckItem::Stored { offset: 0, .. }]), "{acks:?}");
    // Every member applies it (a fetch is served from the member's own state).
    for a in &addrs {
        let mut member = ClusterClient::new(vec![*a], "tls-peers-read", "");
        let mut seen = Vec::new();
        for _ in 0..100 {
            seen = member.fetch("peers/t", 0, 10).await.unwrap().events;
            if !seen.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(seen.len(), 1, "member {a} did not get the event over TLS peer links");
        assert_eq!(&seen[0].event.payload[..], b"replicated");
    }
}

/// A member whose peer certificate is not signed by the cluster's CA is refused at the TLS
/// layer when the others dial it (it can still dial them: peers are not asked for a client
/// certificate, the SPAKE2 handshake authenticates them): the two members with the right CA form
/// a majority and serve, the third never receives anything (with plain peer links it would).
#[tokio::test]
async fn a_member_with_a_certificate_from_another_ca_is_refused_by_its_peers() {
    use eventstreamcore::tls::PeerTlsFiles;
    let dir = temp_dir("tls-peers-bad");
    let good = make_pki(&dir);
    let bad = make_pki(&temp_dir("tls-peers-bad-other"));
    let mut procs = Vec::new();
    for mut c in common::member_configs(&dir, 3, "tls-cluster-secret-0123456789") {
        let pki = if c.node.id == 3 { &bad } else { &good };
        c.cluster.tick_ms = 20;
        // Member 3 trusts the good CA (so it could dial) but presents a certificate from another.
        c.cluster.tls = Some(PeerTlsFiles {
            cert_file: pki.cert.clone(),
            key_file: pki.key.clone(),
            ca_file: good.ca.clone(),
        });
        let path = dir.join(format!("node{}.toml", c.node.id));
        std::fs::write(&path, toml::to_string(&c).unwrap()).unwrap();
        procs.push(start_esc(&["serve", "--config", path.to_str().unwrap()]));
    }
    let addrs: Vec<SocketAddr> = procs.iter().map(|p| p.addr.parse().unwrap()).collect();
    let mut client = ClusterClient::new(addrs[..2].to_vec(), "tls-peers", "");
    let acks = client.publish(vec![Event::new("peers/t", Priority::High, "two of three")]).await.unwrap();
    assert!(matches!(&acks[..], [AckItem::Stored { offset: 0, .. }]), "{acks:?}");
    // Nobody can dial member 3 (its certificate is refused), so nothing reaches it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut third = ClusterClient::new(vec![addrs[2]], "tls-peers-read", "");
    third.max_attempts = 3;
    let seen = third.fetch("peers/t", 0, 10).await.map(|p| p.events.len()).unwrap_or(0);
    assert_eq!(seen, 0, "a member with a certificate from another CA received replicated events");
}
