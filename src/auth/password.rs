//! Password storage: plain secrets compared in constant time, or argon2 PHC hashes.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use subtle::ConstantTimeEq;

pub(super) enum Credential {
    Plain(Vec<u8>),
    /// A parsed PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`).
    Hashed(String),
}

impl Credential {
    pub(super) fn hashed(phc: &str) -> Option<Self> {
        is_argon2_phc(phc).then(|| Self::Hashed(phc.to_owned()))
    }

    /// A credential no password matches, of the same cost as the real ones: hashed
    /// with `params` (those of the configured hashes) when there are any.
    pub(super) fn decoy(params: Option<&Params>) -> Self {
        match params {
            // A fixed salt is fine: nothing is ever meant to match this hash.
            Some(params) => Self::hash_with(
                b"decoy password that is never configured",
                params,
                &SaltString::from_b64("ZGVjb3lkZWNveWRlY295").expect("valid b64 salt"),
            ),
            None => Self::Plain(vec![0xFF; 32]),
        }
    }

    /// A plain password turned into a hash of the given cost, so that checking it
    /// takes as long as checking the configured hashes.
    pub(super) fn hardened(self, params: &Params) -> Self {
        match self {
            Self::Plain(password) => {
                Self::hash_with(&password, params, &SaltString::generate(&mut OsRng))
            }
            hashed => hashed,
        }
    }

    fn hash_with(password: &[u8], params: &Params, salt: &SaltString) -> Self {
        let hash = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
            .hash_password(password, salt)
            .expect("parameters taken from a valid hash are valid");
        Self::Hashed(hash.to_string())
    }

    /// The argon2 parameters (memory, iterations, lanes) of a hashed credential.
    pub(super) fn params(&self) -> Option<Params> {
        match self {
            Self::Hashed(phc) => {
                let hash = PasswordHash::new(phc).ok()?;
                Params::try_from(&hash).ok()
            }
            Self::Plain(_) => None,
        }
    }

    pub(super) fn is_hashed(&self) -> bool {
        matches!(self, Self::Hashed(_))
    }

    pub(super) fn matches(&self, password: &[u8]) -> bool {
        match self {
            // `ct_eq` on slices of different lengths returns false at once; the length
            // of a password is not the secret worth protecting here.
            Self::Plain(expected) => bool::from(expected.as_slice().ct_eq(password)),
            Self::Hashed(phc) => match PasswordHash::new(phc) {
                Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
                Err(_) => false,
            },
        }
    }
}

/// True when `s` is a PHC string for one of the argon2 variants.
pub fn is_argon2_phc(s: &str) -> bool {
    match PasswordHash::new(s) {
        Ok(h) => {
            let alg = h.algorithm.as_str();
            h.hash.is_some() && matches!(alg, "argon2id" | "argon2i" | "argon2d")
        }
        Err(_) => false,
    }
}

/// Hashes a password with argon2id, default parameters and a random salt.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_round_trip_and_phc_detection() {
        let phc = hash_password("pw").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(is_argon2_phc(&phc));
        assert!(!is_argon2_phc("pw"));
        assert!(!is_argon2_phc("$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA"));
        let c = Credential::hashed(&phc).unwrap();
        assert!(c.matches(b"pw"));
        assert!(!c.matches(b"pw2"));
        let params = c.params().expect("argon2 parameters");
        assert!(!Credential::decoy(Some(&params)).matches(b""));
        let hardened = Credential::Plain(b"pw".to_vec()).hardened(&params);
        assert!(hardened.is_hashed());
        assert!(hardened.matches(b"pw") && !hardened.matches(b"pw2"));
    }
}
