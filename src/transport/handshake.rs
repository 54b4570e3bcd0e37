//! Mutual authentication of a new peer connection, before any message frame.
//!
//! ```text
//! dialer   -> listener  Hello{role=dialer, cluster id, dialer id, nonce_d}
//! listener -> dialer    Hello{role=listener, cluster id, listener id, nonce_l} + proof_l
//! dialer   -> listener  proof_d
//! listener -> dialer    ACCEPT
//! proof_x = HMAC-SHA256(secret, label_x | nonce_d | nonce_l | len(cluster id) | cluster id | id_x)
//! ```
//!
//! Each side checks magic, version, role and cluster id, and the dialer checks that the listener
//! is the node it meant to reach. The proofs bind both fresh nonces and a per-role label, so a
//! recorded or reflected proof is useless. Either side closes on any mismatch; the dialer sends
//! frames only after ACCEPT.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::raft::types::NodeId;
use crate::rt::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// First bytes of every hello.
pub const MAGIC: [u8; 4] = *b"ESCR";
/// Handshake/framing version this code speaks.
pub const VERSION: u16 = 1;
/// Nonce length.
pub const NONCE_LEN: usize = 32;
/// Proof (HMAC-SHA256) length.
pub const PROOF_LEN: usize = 32;
/// The listener's last handshake message.
pub const ACCEPT: [u8; 4] = *b"ESC+";
/// Longest cluster id, in bytes.
pub const MAX_CLUSTER_ID_LEN: usize = 255;
/// Fixed part of a hello: magic, version, role, node id, nonce, cluster id length.
pub const HELLO_FIXED_LEN: usize = 4 + 2 + 1 + 8 + NONCE_LEN + 2;

const LABEL_DIALER: &[u8] = b"esc-raft-transport/v1/dialer";
const LABEL_LISTENER: &[u8] = b"esc-raft-transport/v1/listener";

/// Which end of the connection a hello or proof comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Opened the connection (and sends messages on it).
    Dialer,
    /// Accepted it (and receives messages on it).
    Listener,
}

impl Role {
    fn tag(self) -> u8 {
        match self {
            Role::Dialer => 1,
            Role::Listener => 2,
        }
    }

    fn label(self) -> &'static [u8] {
        match self {
            Role::Dialer => LABEL_DIALER,
            Role::Listener => LABEL_LISTENER,
        }
    }
}

/// The first message each side sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Sender's role.
    pub role: Role,
    /// Sender's node id.
    pub node_id: NodeId,
    /// Fresh random bytes from the sender.
    pub nonce: [u8; NONCE_LEN],
    /// Sender's cluster id (at most [`MAX_CLUSTER_ID_LEN`] bytes).
    pub cluster_id: Vec<u8>,
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Not our protocol (random bytes, another service).
    #[error("bad magic {0:02x?}")]
    BadMagic([u8; 4]),
    /// Our protocol, another version.
    #[error("unsupported version {0}")]
    BadVersion(u16),
    /// The hello came from the wrong end (or an unknown role tag).
    #[error("unexpected role tag {0}")]
    BadRole(u8),
    /// Cluster id longer than [`MAX_CLUSTER_ID_LEN`].
    #[error("cluster id of {0} bytes is too long")]
    ClusterIdTooLong(usize),
    /// The peer belongs to another cluster.
    #[error("peer is in cluster {theirs:?}, not {ours:?}")]
    WrongCluster {
        /// Our cluster id.
        ours: String,
        /// Theirs (lossy UTF-8).
        theirs: String,
    },
    /// The listener at the peer's address is another node.
    #[error("expected node {expected}, the listener is node {got}")]
    WrongNode {
        /// The id we dialed for.
        expected: NodeId,
        /// The id it proved.
        got: NodeId,
    },
    /// A node claimed our own id.
    #[error("peer claims our own node id {0}")]
    OwnId(NodeId),
    /// The proof does not verify: another secret, or a forgery.
    #[error("authentication failed (wrong secret?)")]
    BadProof,
    /// The listener did not accept our proof.
    #[error("listener refused the handshake")]
    NotAccepted,
    /// The handshake did not finish within `handshake_timeout_ms`.
    #[error("handshake timed out")]
    Timeout,
    /// The connection failed or closed mid-handshake.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl Hello {
    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HELLO_FIXED_LEN + self.cluster_id.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.push(self.role.tag());
        out.extend_from_slice(&self.node_id.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        let len = u16::try_from(self.cluster_id.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.cluster_id[..usize::from(len)]);
        out
    }

    /// Checks the fixed part; returns the hello (without its cluster id) and the cluster id length
    /// still to read. Never panics, whatever the bytes.
    pub fn decode_fixed(fixed: &[u8; HELLO_FIXED_LEN]) -> Result<(Hello, usize), HandshakeError> {
        let magic = [fixed[0], fixed[1], fixed[2], fixed[3]];
        if magic != MAGIC {
            return Err(HandshakeError::BadMagic(magic));
        }
        let version = u16::from_be_bytes([fixed[4], fixed[5]]);
        if version != VERSION {
            return Err(HandshakeError::BadVersion(version));
        }
        let role = match fixed[6] {
            1 => Role::Dialer,
            2 => Role::Listener,
            tag => return Err(HandshakeError::BadRole(tag)),
        };
        let mut id = [0u8; 8];
        id.copy_from_slice(&fixed[7..15]);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&fixed[15..15 + NONCE_LEN]);
        let len = usize::from(u16::from_be_bytes([fixed[HELLO_FIXED_LEN - 2], fixed[HELLO_FIXED_LEN - 1]]));
        if len > MAX_CLUSTER_ID_LEN {
            return Err(HandshakeError::ClusterIdTooLong(len));
        }
        Ok((Hello { role, node_id: u64::from_be_bytes(id), nonce, cluster_id: Vec::new() }, len))
    }

    /// Decodes a whole hello from `bytes` (exactly). Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Hello, HandshakeError> {
        let eof = || HandshakeError::Io(std::io::ErrorKind::UnexpectedEof.into());
        let fixed: &[u8; HELLO_FIXED_LEN] =
            bytes.get(..HELLO_FIXED_LEN).and_then(|b| b.try_into().ok()).ok_or_else(eof)?;
        let (mut hello, len) = Hello::decode_fixed(fixed)?;
        let rest = &bytes[HELLO_FIXED_LEN..];
        if rest.len() != len {
            return Err(eof());
        }
        hello.cluster_id = rest.to_vec();
        Ok(hello)
    }
}

/// What both proofs of one handshake are computed over.
#[derive(Clone, Debug)]
pub struct Transcript<'a> {
    /// The shared secret.
    pub secret: &'a [u8],
    /// The cluster id (equal on both sides once checked).
    pub cluster_id: &'a [u8],
    /// The dialer's nonce.
    pub nonce_dialer: [u8; NONCE_LEN],
    /// The listener's nonce.
    pub nonce_listener: [u8; NONCE_LEN],
}

impl Transcript<'_> {
    fn mac(&self, role: Role, node_id: NodeId) -> Hmac<Sha256> {
        // HMAC takes keys of any length; this cannot fail.
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(self.secret).expect("HMAC accepts any key length");
        mac.update(role.label());
        mac.update(&self.nonce_dialer);
        mac.update(&self.nonce_listener);
        mac.update(&(self.cluster_id.len() as u64).to_be_bytes());
        mac.update(self.cluster_id);
        mac.update(&node_id.to_be_bytes());
        mac
    }

    /// The proof `role` sends for node `node_id`.
    pub fn proof(&self, role: Role, node_id: NodeId) -> [u8; PROOF_LEN] {
        self.mac(role, node_id).finalize().into_bytes().into()
    }

    /// Checks a received proof in constant time.
    pub fn verify(&self, role: Role, node_id: NodeId, proof: &[u8]) -> Result<(), HandshakeError> {
        self.mac(role, node_id).verify_slice(proof).map_err(|_| HandshakeError::BadProof)
    }
}

/// Our side of a handshake: who we are and what we share with the cluster.
#[derive(Clone, Copy, Debug)]
pub struct Local<'a> {
    /// Our node id.
    pub node_id: NodeId,
    /// Our cluster id.
    pub cluster_id: &'a [u8],
    /// The cluster's shared secret.
    pub secret: &'a [u8],
    /// A fresh nonce for this handshake.
    pub nonce: [u8; NONCE_LEN],
}

async fn read_hello<S: AsyncRead + Unpin>(
    s: &mut S,
    want: Role,
    local: &Local<'_>,
) -> Result<Hello, HandshakeError> {
    let mut fixed = [0u8; HELLO_FIXED_LEN];
    s.read_exact(&mut fixed).await?;
    let (mut hello, len) = Hello::decode_fixed(&fixed)?;
    if hello.role != want {
        return Err(HandshakeError::BadRole(fixed[6]));
    }
    let mut cluster = vec![0u8; len];
    s.read_exact(&mut cluster).await?;
    if cluster != local.cluster_id {
        return Err(HandshakeError::WrongCluster {
            ours: String::from_utf8_lossy(local.cluster_id).into_owned(),
            theirs: String::from_utf8_lossy(&cluster).into_owned(),
        });
    }
    if hello.node_id == local.node_id {
        return Err(HandshakeError::OwnId(hello.node_id));
    }
    hello.cluster_id = cluster;
    Ok(hello)
}

/// Dials: authenticates the listener as node `expected`, then proves ourselves.
pub async fn dial<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    local: &Local<'_>,
    expected: NodeId,
) -> Result<(), HandshakeError> {
    let hello = Hello {
        role: Role::Dialer,
        node_id: local.node_id,
        nonce: local.nonce,
        cluster_id: local.cluster_id.to_vec(),
    };
    s.write_all(&hello.encode()).await?;
    s.flush().await?;
    let theirs = read_hello(s, Role::Listener, local).await?;
    let mut proof = [0u8; PROOF_LEN];
    s.read_exact(&mut proof).await?;
    let t = Transcript {
        secret: local.secret,
        cluster_id: local.cluster_id,
        nonce_dialer: local.nonce,
        nonce_listener: theirs.nonce,
    };
    t.verify(Role::Listener, theirs.node_id, &proof)?;
    // Only after the proof: an unauthenticated listener learns nothing from our check.
    if theirs.node_id != expected {
        return Err(HandshakeError::WrongNode { expected, got: theirs.node_id });
    }
    s.write_all(&t.proof(Role::Dialer, local.node_id)).await?;
    s.flush().await?;
    let mut accept = [0u8; ACCEPT.len()];
    s.read_exact(&mut accept).await?;
    if accept != ACCEPT {
        return Err(HandshakeError::NotAccepted);
    }
    Ok(())
}

/// Listens: returns the dialer's authenticated node id.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    local: &Local<'_>,
) -> Result<NodeId, HandshakeError> {
    let theirs = read_hello(s, Role::Dialer, local).await?;
    let t = Transcript {
        secret: local.secret,
        cluster_id: local.cluster_id,
        nonce_dialer: theirs.nonce,
        nonce_listener: local.nonce,
    };
    let hello = Hello {
        role: Role::Listener,
        node_id: local.node_id,
        nonce: local.nonce,
        cluster_id: local.cluster_id.to_vec(),
    };
    let mut out = hello.encode();
    out.extend_from_slice(&t.proof(Role::Listener, local.node_id));
    s.write_all(&out).await?;
    s.flush().await?;
    let mut proof = [0u8; PROOF_LEN];
    s.read_exact(&mut proof).await?;
    t.verify(Role::Dialer, theirs.node_id, &proof)?;
    s.write_all(&ACCEPT).await?;
    s.flush().await?;
    Ok(theirs.node_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hello() -> Hello {
        Hello { role: Role::Dialer, node_id: 42, nonce: [7; NONCE_LEN], cluster_id: b"prod-eu".to_vec() }
    }

    #[test]
    fn hello_round_trips_and_rejects_bad_headers() {
        let h = hello();
        let bytes = h.encode();
        assert_eq!(bytes.len(), HELLO_FIXED_LEN + 7);
        assert_eq!(Hello::decode(&bytes).unwrap(), h);
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(matches!(Hello::decode(&bad), Err(HandshakeError::BadMagic(_))));
        let mut bad = bytes.clone();
        bad[5] = 9;
        assert!(matches!(Hello::decode(&bad), Err(HandshakeError::BadVersion(9))));
        let mut bad = bytes.clone();
        bad[6] = 3;
        assert!(matches!(Hello::decode(&bad), Err(HandshakeError::BadRole(3))));
        let mut bad = bytes.clone();
        bad[HELLO_FIXED_LEN - 2..HELLO_FIXED_LEN].copy_from_slice(&1000u16.to_be_bytes());
        assert!(matches!(Hello::decode(&bad), Err(HandshakeError::ClusterIdTooLong(1000))));
        assert!(matches!(Hello::decode(&bytes[..bytes.len() - 1]), Err(HandshakeError::Io(_))));
    }

    #[test]
    fn proofs_bind_secret_role_nonces_cluster_and_node() {
        let t = Transcript {
            secret: b"s3cret",
            cluster_id: b"c1",
            nonce_dialer: [1; 32],
            nonce_listener: [2; 32],
        };
        let p = t.proof(Role::Dialer, 5);
        t.verify(Role::Dialer, 5, &p).unwrap();
        assert!(t.verify(Role::Listener, 5, &p).is_err(), "a reflected proof must fail");
        assert!(t.verify(Role::Dialer, 6, &p).is_err(), "another node id must fail");
        assert!(t.verify(Role::Dialer, 5, &p[..31]).is_err(), "a truncated proof must fail");
        for other in [
            Transcript { secret: b"s3cret!", ..t.clone() },
            Transcript { cluster_id: b"c2", ..t.clone() },
            Transcript { nonce_dialer: [9; 32], ..t.clone() },
            Transcript { nonce_listener: [9; 32], ..t.clone() },
        ] {
            assert!(other.verify(Role::Dialer, 5, &p).is_err(), "{other:?}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_hello_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Hello::decode(&bytes);
            if let Some(fixed) = bytes.get(..HELLO_FIXED_LEN) {
                let _ = Hello::decode_fixed(fixed.try_into().unwrap());
            }
        }

        #[test]
        fn hellos_round_trip(id in any::<u64>(), nonce in any::<[u8; 32]>(), cluster in proptest::collection::vec(any::<u8>(), 0..=MAX_CLUSTER_ID_LEN), dialer in any::<bool>()) {
            let h = Hello { role: if dialer { Role::Dialer } else { Role::Listener }, node_id: id, nonce, cluster_id: cluster };
            prop_assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
        }
    }
}
