//! Who may do what on the acked protocol: credentials with roles, checked in constant time.
//!
//! Credentials are `ingest.auth_token` (every role, for compatibility) and `[[ingest.clients]]`.
//! A connection starts with the anonymous roles: `ingest.anonymous_roles` if set, else publish and
//! consume when no credential is configured (an open port) and none otherwise. A good HELLO
//! replaces them with the credential's roles; a wrong one logs the connection out (back to the
//! anonymous roles), is answered after a growing delay, and too many close the connection.
//! Membership changes (ADMIN add/remove/transfer) need the admin role, which only a credential
//! can carry: with no credential configured they are refused.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::{IngestConfig, Role};

/// A set of roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Roles(u8);

impl Roles {
    pub const NONE: Roles = Roles(0);

    fn bit(r: Role) -> u8 {
        match r {
            Role::Publish => 1,
            Role::Consume => 2,
            Role::Admin => 4,
        }
    }

    pub fn of(roles: &[Role]) -> Roles {
        Roles(roles.iter().fold(0, |acc, r| acc | Self::bit(*r)))
    }

    pub fn has(self, r: Role) -> bool {
        self.0 & Self::bit(r) != 0
    }
}

struct Credential {
    name: String,
    digest: [u8; 32],
    roles: Roles,
}

/// The configured credentials, ready to check HELLO tokens against.
pub(crate) struct Authenticator {
    credentials: Vec<Credential>,
    anonymous: Roles,
    first_delay: Duration,
    max_delay: Duration,
    max_failures: u32,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Equal in time that does not depend on where the inputs differ.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Authenticator {
    pub fn new(cfg: &IngestConfig) -> Authenticator {
        let mut credentials = Vec::new();
        if !cfg.auth_token.is_empty() {
            credentials.push(Credential {
                name: "ingest.auth_token".into(),
                digest: digest(&cfg.auth_token),
                roles: Roles::of(&Role::ALL),
            });
        }
        for c in &cfg.clients {
            credentials.push(Credential {
                name: c.name.clone(),
                digest: digest(&c.token),
                roles: Roles::of(&c.roles),
            });
        }
        let anonymous = match &cfg.anonymous_roles {
            Some(r) => Roles::of(r),
            None if credentials.is_empty() => Roles::of(&[Role::Publish, Role::Consume]),
            None => Roles::NONE,
        };
        Authenticator {
            credentials,
            anonymous,
            first_delay: Duration::from_millis(cfg.hello_failure_delay_ms),
            max_delay: Duration::from_millis(cfg.hello_failure_max_delay_ms),
            max_failures: cfg.max_failed_hellos,
        }
    }

    /// True if at least one credential is configured (HELLO tokens mean something).
    pub fn has_credentials(&self) -> bool {
        !self.credentials.is_empty()
    }

    /// What a connection may do before (or without) a successful HELLO.
    pub fn anonymous(&self) -> Roles {
        self.anonymous
    }

    /// The credential `token` belongs to. Every credential is compared, each in constant time
    /// over a fixed-length digest, so neither the position nor the length of a mismatch shows.
    /// With no credential configured any token is accepted with the anonymous roles.
    pub fn check(&self, token: &str) -> Option<(&str, Roles)> {
        if self.credentials.is_empty() {
            return Some(("anonymous", self.anonymous));
        }
        let d = digest(token);
        let mut found = None;
        for c in &self.credentials {
            if ct_eq(&c.digest, &d) && found.is_none() {
                found = Some((c.name.as_str(), c.roles));
            }
        }
        found
    }

    /// How long to hold the answer to the `n`-th failed HELLO on a connection (n ≥ 1).
    pub fn failure_delay(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// Failed HELLOs after which the connection is closed.
    pub fn max_failures(&self) -> u32 {
        self.max_failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientCredential;

    fn cfg(token: &str, clients: &[(&str, &str, &[Role])]) -> IngestConfig {
        IngestConfig {
            auth_token: token.into(),
            clients: clients
                .iter()
                .map(|(n, t, r)| ClientCredential {
                    name: (*n).into(),
                    token: (*t).into(),
                    roles: r.to_vec(),
                })
                .collect(),
            ..IngestConfig::default()
        }
    }

    #[test]
    fn an_open_port_publishes_and_consumes_but_never_administers() {
        let a = Authenticator::new(&cfg("", &[]));
        assert!(!a.has_credentials());
        let anon = a.anonymous();
        assert!(anon.has(Role::Publish) && anon.has(Role::Consume) && !anon.has(Role::Admin));
        assert_eq!(a.check("anything").map(|(_, r)| r), Some(anon));
    }

    #[test]
    fn tokens_map_to_their_roles_and_the_legacy_token_has_all() {
        let a = Authenticator::new(&cfg(
            "old-token",
            &[("writer", "writer-token", &[Role::Publish]), ("ops", "ops-token-1", &[Role::Admin])],
        ));
        assert_eq!(a.anonymous(), Roles::NONE);
        let (name, r) = a.check("writer-token").unwrap();
        assert_eq!(name, "writer");
        assert!(r.has(Role::Publish) && !r.has(Role::Consume) && !r.has(Role::Admin));
        let (_, r) = a.check("old-token").unwrap();
        assert!(Role::ALL.iter().all(|x| r.has(*x)));
        assert!(a.check("ops-token-1").unwrap().1.has(Role::Admin));
        assert!(a.check("ops-token-2").is_none());
        assert!(a.check("").is_none());
    }

    #[test]
    fn the_failure_delay_doubles_up_to_its_cap() {
        let a = Authenticator::new(&IngestConfig {
            hello_failure_delay_ms: 100,
            hello_failure_max_delay_ms: 1_000,
            ..IngestConfig::default()
        });
        let ms: Vec<u128> = (1..=6).map(|n| a.failure_delay(n).as_millis()).collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(a.failure_delay(200).as_millis(), 1_000);
    }
}
