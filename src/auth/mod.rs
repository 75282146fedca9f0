//! Authentication stage: decides which SOCKS5 method the server requires and checks
//! RFC 1929 credentials.
//!
//! Receives the username and password the handshake decoded; answers only "accepted"
//! or "refused" (with a reason for the log, never shown to the client). Passwords are
//! compared in constant time, argon2 hashes are verified off the async workers, and an
//! unknown user costs the same as a wrong password so that timing does not reveal
//! which names exist.

mod password;

use std::collections::HashMap;
use std::sync::Arc;

pub use password::{hash_password, is_argon2_phc};

use crate::config::{AuthConfig, SocksMethod};
use password::Credential;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("unknown user")]
    UnknownUser,
    #[error("wrong password")]
    WrongPassword,
    #[error("password hash of user {user} is not a valid argon2 PHC string")]
    BadHash { user: String },
    #[error("password check did not complete")]
    Interrupted(#[source] tokio::task::JoinError),
}

/// The configured method and users; cheap to clone and share between connections.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    method: SocksMethod,
    users: HashMap<Vec<u8>, Credential>,
    /// Verified against when the user is unknown, so that the answer takes as long as
    /// for a known user. Same kind as the configured credentials (hash if any is one).
    decoy: Credential,
}

impl Authenticator {
    pub fn from_config(config: &AuthConfig) -> Result<Self, AuthError> {
        let mut users = HashMap::new();
        for user in &config.users {
            let credential = match (&user.password, &user.password_hash) {
                (_, Some(hash)) => {
                    Credential::hashed(hash.expose()).ok_or_else(|| AuthError::BadHash {
                        user: user.username.clone(),
                    })?
                }
                (Some(plain), None) => Credential::Plain(plain.expose().as_bytes().to_vec()),
                (None, None) => continue,
            };
            users.insert(user.username.as_bytes().to_vec(), credential);
        }
        let any_hashed = users.values().any(Credential::is_hashed);
        let decoy = Credential::decoy(any_hashed);
        Ok(Self {
            inner: Arc::new(Inner {
                method: config.socks_method,
                users,
                decoy,
            }),
        })
    }

    pub fn method(&self) -> SocksMethod {
        self.inner.method
    }

    /// Checks a username and password. Hash verification (tens of milliseconds of
    /// CPU) runs on the blocking pool so it does not stall other connections.
    pub async fn verify(&self, username: &[u8], password: &[u8]) -> Result<(), AuthError> {
        let known = self.inner.users.contains_key(username);
        let credential = self.inner.users.get(username).unwrap_or(&self.inner.decoy);
        let matches = if credential.is_hashed() {
            let inner = Arc::clone(&self.inner);
            let (username, password) = (username.to_vec(), password.to_vec());
            tokio::task::spawn_blocking(move || {
                let credential = inner.users.get(&username).unwrap_or(&inner.decoy);
                credential.matches(&password)
            })
            .await
            .map_err(AuthError::Interrupted)?
        } else {
            credential.matches(password)
        };
        match (known, matches) {
            (true, true) => Ok(()),
            (true, false) => Err(AuthError::WrongPassword),
            (false, _) => Err(AuthError::UnknownUser),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, UserEntry};

    fn config(users: Vec<UserEntry>) -> AuthConfig {
        AuthConfig {
            socks_method: SocksMethod::Userpass,
            users,
        }
    }

    fn user(name: &str, password: Option<&str>, hash: Option<String>) -> UserEntry {
        UserEntry {
            username: name.into(),
            password: password.map(Secret::new),
            password_hash: hash.map(Secret::new),
        }
    }

    #[tokio::test]
    async fn plain_and_hashed_passwords_are_checked() {
        let hash = hash_password("s3cret").unwrap();
        let auth = Authenticator::from_config(&config(vec![
            user("alice", Some("secret"), None),
            user("bob", None, Some(hash)),
        ]))
        .unwrap();
        assert!(auth.verify(b"alice", b"secret").await.is_ok());
        assert!(matches!(
            auth.verify(b"alice", b"secreT").await,
            Err(AuthError::WrongPassword)
        ));
        assert!(matches!(
            auth.verify(b"alice", b"").await,
            Err(AuthError::WrongPassword)
        ));
        assert!(auth.verify(b"bob", b"s3cret").await.is_ok());
        assert!(matches!(
            auth.verify(b"bob", b"secret").await,
            Err(AuthError::WrongPassword)
        ));
        assert!(matches!(
            auth.verify(b"carol", b"secret").await,
            Err(AuthError::UnknownUser)
        ));
    }

    #[test]
    fn bad_hash_is_refused_with_the_user_named() {
        let err = Authenticator::from_config(&config(vec![user("eve", None, Some("$x$".into()))]))
            .err()
            .expect("error");
        assert_eq!(
            err.to_string(),
            "password hash of user eve is not a valid argon2 PHC string"
        );
    }
}
