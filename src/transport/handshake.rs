//! Mutual authentication of a new peer connection, before any message frame: SPAKE2 (a
//! password-authenticated key exchange) over the cluster secret, then key confirmation.
//!
//! ```text
//! dialer   -> listener  Hello{role=dialer, cluster id, dialer id, nonce_d} | X
//! listener -> dialer    Hello{role=listener, cluster id, listener id, nonce_l} | Y | confirm_l
//! dialer   -> listener  confirm_d
//! listener -> dialer    ACCEPT
//! X, Y      = SPAKE2 (Ed25519) messages: blinded by a fresh random scalar, they say nothing
//!             about the secret to anyone who cannot also solve Diffie-Hellman
//! K         = the SPAKE2 key (equal on both sides only if both used the same secret)
//! T         = SHA-256(hello_d | X | hello_l | Y)   (cluster id, both node ids, roles, nonces)
//! confirm_x = HMAC-SHA256(K, label_x | T)
//! ```
//!
//! A passive listener learns nothing to test secret guesses against; an active one, or a
//! dialer, gets exactly one guess per connection (the peer's confirmation verifies or not), and
//! failed handshakes are counted and logged by the transport. Each side checks magic, version,
//! role and cluster id; the dialer checks that the listener is the node it meant to reach, after
//! the listener proved the secret. A recorded or reflected confirmation is useless (fresh
//! scalars and nonces, a per-role label, SPAKE2's side byte). The dialer sends frames only
//! after ACCEPT. The scalars come from a seed the transport draws from the node RNG, so a
//! simulated run replays exactly.

use hmac::{Hmac, Mac};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};
use spake2::{Ed25519Group, Identity, Password, Spake2};

use crate::raft::types::NodeId;
use crate::rt::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// First bytes of every hello.
pub const MAGIC: [u8; 4] = *b"ESCR";
/// Handshake/framing version this code speaks (2: SPAKE2; 1 was a plain HMAC challenge).
pub const VERSION: u16 = 2;
/// Nonce length.
pub const NONCE_LEN: usize = 32;
/// Key confirmation (HMAC-SHA256) length.
pub const PROOF_LEN: usize = 32;
/// A SPAKE2 message: a side byte and a compressed Ed25519 point.
pub const PAKE_MSG_LEN: usize = 33;
/// The listener's last handshake message.
pub const ACCEPT: [u8; 4] = *b"ESC+";
/// Longest cluster id, in bytes.
pub const MAX_CLUSTER_ID_LEN: usize = 255;
/// Fixed part of a hello: magic, version, role, node id, nonce, cluster id length.
pub const HELLO_FIXED_LEN: usize = 4 + 2 + 1 + 8 + NONCE_LEN + 2;

const LABEL_DIALER: &[u8] = b"esc-raft-transport/v2/dialer";
const LABEL_LISTENER: &[u8] = b"esc-raft-transport/v2/listener";

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
    /// The key confirmation does not verify (or the PAKE message is malformed): another
    /// secret, or a forgery.
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

/// Our side of a handshake: who we are and what we share with the cluster.
#[derive(Clone, Copy, Debug)]
pub struct Local<'a> {
    /// Our node id.
    pub node_id: NodeId,
    /// Our cluster id.
    pub cluster_id: &'a [u8],
    /// The cluster's shared secret.
    pub secret: &'a [u8],
    /// A fresh nonce for this handshake (sent in the clear).
    pub nonce: [u8; NONCE_LEN],
    /// Fresh secret randomness for this handshake's SPAKE2 scalar (never sent; from the node RNG).
    pub pake_seed: [u8; 32],
}

/// rand_core 0.6's traits (what spake2 0.4 takes) over a ChaCha20 stream seeded from the node
/// RNG: never the OS RNG, which would escape the simulator.
struct PakeRng(ChaCha20Rng);

impl rand_core_06::RngCore for PakeRng {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core_06::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

impl rand_core_06::CryptoRng for PakeRng {}

/// Starts our half of SPAKE2: the state to finish with and the message to send.
pub fn pake_start(role: Role, local: &Local<'_>) -> (Spake2<Ed25519Group>, Vec<u8>) {
    let password = Password::new(local.secret);
    let (a, b) = (Identity::new(LABEL_DIALER), Identity::new(LABEL_LISTENER));
    let rng = PakeRng(ChaCha20Rng::from_seed(local.pake_seed));
    match role {
        Role::Dialer => Spake2::<Ed25519Group>::start_a_with_rng(&password, &a, &b, rng),
        Role::Listener => Spake2::<Ed25519Group>::start_b_with_rng(&password, &a, &b, rng),
    }
}

/// What both confirmations of one handshake are computed over.
#[derive(Clone, Debug)]
pub struct Confirmation {
    /// The SPAKE2 key.
    pub key: Vec<u8>,
    /// SHA-256 of both hellos and both SPAKE2 messages, in protocol order.
    pub transcript: [u8; 32],
}

impl Confirmation {
    /// Finishes SPAKE2 with the peer's message and hashes the transcript.
    pub fn new(
        state: Spake2<Ed25519Group>,
        theirs: &[u8],
        hello_dialer: &[u8],
        pake_dialer: &[u8],
        hello_listener: &[u8],
        pake_listener: &[u8],
    ) -> Result<Confirmation, HandshakeError> {
        let key = state.finish(theirs).map_err(|_| HandshakeError::BadProof)?;
        let mut h = Sha256::new();
        for part in [hello_dialer, pake_dialer, hello_listener, pake_listener] {
            h.update(part);
        }
        Ok(Confirmation { key, transcript: h.finalize().into() })
    }

    fn mac(&self, role: Role) -> Hmac<Sha256> {
        // HMAC takes keys of any length; this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(role.label());
        mac.update(&self.transcript);
        mac
    }

    /// The confirmation `role` sends.
    pub fn proof(&self, role: Role) -> [u8; PROOF_LEN] {
        self.mac(role).finalize().into_bytes().into()
    }

    /// Checks a received confirmation in constant time.
    pub fn verify(&self, role: Role, proof: &[u8]) -> Result<(), HandshakeError> {
        self.mac(role).verify_slice(proof).map_err(|_| HandshakeError::BadProof)
    }
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

fn our_hello(role: Role, local: &Local<'_>) -> Vec<u8> {
    Hello { role, node_id: local.node_id, nonce: local.nonce, cluster_id: local.cluster_id.to_vec() }.encode()
}

/// Dials: authenticates the listener as node `expected`, then proves ourselves.
pub async fn dial<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    local: &Local<'_>,
    expected: NodeId,
) -> Result<(), HandshakeError> {
    let hello = our_hello(Role::Dialer, local);
    let (state, pake) = pake_start(Role::Dialer, local);
    let mut out = hello.clone();
    out.extend_from_slice(&pake);
    s.write_all(&out).await?;
    s.flush().await?;
    let theirs = read_hello(s, Role::Listener, local).await?;
    let mut rest = [0u8; PAKE_MSG_LEN + PROOF_LEN];
    s.read_exact(&mut rest).await?;
    let (their_pake, proof) = rest.split_at(PAKE_MSG_LEN);
    // Decoding checked every field, so the re-encoding is exactly the bytes received.
    let c = Confirmation::new(state, their_pake, &hello, &pake, &theirs.encode(), their_pake)?;
    c.verify(Role::Listener, proof)?;
    // Only after the proof: an unauthenticated listener learns nothing from our check.
    if theirs.node_id != expected {
        return Err(HandshakeError::WrongNode { expected, got: theirs.node_id });
    }
    s.write_all(&c.proof(Role::Dialer)).await?;
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
    let mut their_pake = [0u8; PAKE_MSG_LEN];
    s.read_exact(&mut their_pake).await?;
    let hello = our_hello(Role::Listener, local);
    let (state, pake) = pake_start(Role::Listener, local);
    let c = Confirmation::new(state, &their_pake, &theirs.encode(), &their_pake, &hello, &pake)?;
    let mut out = hello;
    out.extend_from_slice(&pake);
    out.extend_from_slice(&c.proof(Role::Listener));
    s.write_all(&out).await?;
    s.flush().await?;
    let mut proof = [0u8; PROOF_LEN];
    s.read_exact(&mut proof).await?;
    c.verify(Role::Dialer, &proof)?;
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

    fn local(secret: &'static [u8], seed: u8) -> Local<'static> {
        Local {
            node_id: u64::from(seed),
            cluster_id: b"c1",
            secret,
            nonce: [seed; 32],
            pake_seed: [seed; 32],
        }
    }

    /// Both sides of one exchange, as each computes it: (dialer's, listener's).
    fn exchange(
        dialer: &Local<'_>,
        listener: &Local<'_>,
    ) -> (Result<Confirmation, HandshakeError>, Confirmation) {
        let (hd, hl) = (our_hello(Role::Dialer, dialer), our_hello(Role::Listener, listener));
        let (sd, xd) = pake_start(Role::Dialer, dialer);
        let (sl, xl) = pake_start(Role::Listener, listener);
        let at_listener = Confirmation::new(sl, &xd, &hd, &xd, &hl, &xl).unwrap();
        (Confirmation::new(sd, &xl, &hd, &xd, &hl, &xl), at_listener)
    }

    #[test]
    fn the_same_secret_confirms_both_ways_and_nothing_else_does() {
        let (d, l) = exchange(&local(b"s3cret", 1), &local(b"s3cret", 2));
        let d = d.unwrap();
        d.verify(Role::Listener, &l.proof(Role::Listener)).unwrap();
        l.verify(Role::Dialer, &d.proof(Role::Dialer)).unwrap();
        assert!(l.verify(Role::Dialer, &l.proof(Role::Listener)).is_err(), "a reflected proof must fail");
        assert!(d.verify(Role::Listener, &d.proof(Role::Listener)[..31]).is_err(), "truncated");
        // Another secret: both sides reject the other's confirmation.
        let (d, l) = exchange(&local(b"s3cret", 1), &local(b"s3cret!", 2));
        let d = d.unwrap();
        assert!(d.verify(Role::Listener, &l.proof(Role::Listener)).is_err());
        assert!(l.verify(Role::Dialer, &d.proof(Role::Dialer)).is_err());
    }

    #[test]
    fn the_confirmation_binds_the_whole_transcript() {
        let (dl, ll) = (local(b"s3cret", 1), local(b"s3cret", 2));
        let (hd, hl) = (our_hello(Role::Dialer, &dl), our_hello(Role::Listener, &ll));
        let (sd, xd) = pake_start(Role::Dialer, &dl);
        let (sl, xl) = pake_start(Role::Listener, &ll);
        let l = Confirmation::new(sl, &xd, &hd, &xd, &hl, &xl).unwrap();
        let proof = l.proof(Role::Listener);
        // The dialer saw another listener hello (another node id, nonce or cluster): no match.
        let other = our_hello(Role::Listener, &Local { node_id: 9, ..ll });
        let d = Confirmation::new(sd, &xl, &hd, &xd, &other, &xl).unwrap();
        assert!(d.verify(Role::Listener, &proof).is_err());
    }

    #[test]
    fn pake_messages_are_blinded_and_replay_from_their_seed() {
        let one = pake_start(Role::Dialer, &local(b"s3cret", 1)).1;
        let two = pake_start(Role::Dialer, &local(b"s3cret", 2)).1;
        assert_eq!(one.len(), PAKE_MSG_LEN);
        assert_ne!(one, two, "same secret, fresh scalar: different messages");
        assert_eq!(one, pake_start(Role::Dialer, &local(b"s3cret", 1)).1, "same seed: same message");
        // A reflected PAKE message (the wrong side byte) or garbage never panics, only fails.
        let (state, _) = pake_start(Role::Listener, &local(b"s3cret", 3));
        assert!(Confirmation::new(state, &[0x42; PAKE_MSG_LEN], b"", b"", b"", b"").is_err());
        let (state, _) = pake_start(Role::Dialer, &local(b"s3cret", 3));
        assert!(Confirmation::new(state, &two, b"", b"", b"", b"").is_err(), "a dialer message reflected");
    }

    proptest! {
        #[test]
        fn arbitrary_pake_messages_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let (state, _) = pake_start(Role::Listener, &local(b"s3cret", 3));
            let _ = Confirmation::new(state, &bytes, b"", b"", b"", b"");
        }

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
