//! Argon2id password hashes in PHC string form.

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};

use zeroize::Zeroize as _;

use crate::AuthError;

const SALT_LEN: usize = 16;

/// Bounds on the parameters a stored hash may ask for, so that a corrupted or
/// planted row cannot make one login attempt allocate gigabytes. A policy
/// above these still verifies its own hashes: the bound is the larger of the
/// two.
const MAX_VERIFY_M_COST_KIB: u32 = 256 * 1024;
const MAX_VERIFY_T_COST: u32 = 16;
const MAX_VERIFY_P_COST: u32 = 16;

/// Argon2id cost parameters used for new hashes. Verification reads the
/// parameters from each stored hash, so raising the policy never locks
/// anyone out.
#[derive(Clone, Copy, Debug)]
pub struct PasswordPolicy {
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self::recommended()
    }
}

impl PasswordPolicy {
    /// OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
    pub fn recommended() -> Self {
        Self { m_cost_kib: 19 * 1024, t_cost: 2, p_cost: 1 }
    }

    /// The cheapest parameters argon2 accepts.
    ///
    /// **Danger: for tests only.** Hashes made with this policy are
    /// brute-forceable; never use it for real passwords.
    pub fn danger_test_minimum() -> Self {
        Self { m_cost_kib: Params::MIN_M_COST, t_cost: Params::MIN_T_COST, p_cost: Params::MIN_P_COST }
    }

    /// A PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) with a random salt.
    pub fn hash(&self, password: &str) -> Result<String, AuthError> {
        let mut salt = [0u8; SALT_LEN];
        aws_lc_rs::rand::fill(&mut salt).map_err(|_| AuthError::Crypto("system RNG failed"))?;
        let hash = self
            .hasher()?
            .hash_password_with_salt(password.as_bytes(), &salt)
            .map_err(|_| AuthError::Password("argon2 refused the input"))?;
        Ok(hash.to_string())
    }

    /// Whether `password` matches `phc`. A malformed hash, another algorithm,
    /// or out-of-bounds parameters are a plain `false`.
    pub fn verify(&self, phc: &str, password: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        if parsed.algorithm.as_str() != argon2::ARGON2ID_IDENT.as_str() {
            return false;
        }
        let Ok(params) = Params::try_from(&parsed) else {
            return false;
        };
        if params.m_cost() > self.m_cost_kib.max(MAX_VERIFY_M_COST_KIB)
            || params.t_cost() > self.t_cost.max(MAX_VERIFY_T_COST)
            || params.p_cost() > self.p_cost.max(MAX_VERIFY_P_COST)
        {
            return false;
        }
        // The default instance only supplies the algorithm family; the
        // parameters, version and salt come from the PHC string.
        Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
    }

    /// Spends what a [`PasswordPolicy::verify`] against a hash of this
    /// policy spends, for logins of unknown users, so response time does not
    /// reveal which accounts exist.
    pub fn dummy_verify(&self, password: &str) {
        const DUMMY_SALT: [u8; SALT_LEN] = *b"wiresocket-dummy";
        let mut out = [0u8; 32];
        if let Ok(hasher) = self.hasher() {
            let ok = hasher.hash_password_into(password.as_bytes(), &DUMMY_SALT, &mut out).is_ok();
            std::hint::black_box((ok, &out));
            out.zeroize();
        }
    }

    fn hasher(&self) -> Result<Argon2<'static>, AuthError> {
        let params = Params::new(self.m_cost_kib, self.t_cost, self.p_cost, None)
            .map_err(|_| AuthError::Password("invalid argon2 parameters"))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn policy() -> PasswordPolicy {
        PasswordPolicy::danger_test_minimum()
    }

    #[test]
    fn hash_then_verify() {
        let phc = policy().hash("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{phc}");
        assert!(policy().verify(&phc, "correct horse battery"));
        assert!(!policy().verify(&phc, "correct horse batterY"));
        assert!(!policy().verify(&phc, ""));
    }

    #[test]
    fn salts_are_random() {
        assert_ne!(policy().hash("same").unwrap(), policy().hash("same").unwrap());
    }

    #[test]
    fn params_come_from_the_hash() {
        let cheap = PasswordPolicy { m_cost_kib: 16, t_cost: 2, p_cost: 2 };
        let phc = cheap.hash("pw").unwrap();
        assert!(phc.contains("m=16,t=2,p=2"), "{phc}");
        assert!(PasswordPolicy::recommended().verify(&phc, "pw"));
    }

    #[test]
    fn malformed_hashes_are_false() {
        let phc = policy().hash("pw").unwrap();
        let argon2i = phc.replacen("argon2id", "argon2i", 1);
        let truncated = &phc[..phc.len() - 5];
        let huge_memory = phc.replace("m=8,", "m=4000000000,");
        for bad in [
            "",
            "pw",
            "$argon2id$",
            "$argon2id$v=19$m=8,t=1,p=1$",
            "$2b$12$abcdefghijklmnopqrstuu5r6bJ3Z8HEb6XKo8dWfKuQ6I2nJvD3i",
            argon2i.as_str(),
            truncated,
            huge_memory.as_str(),
        ] {
            assert!(!policy().verify(bad, "pw"), "{bad}");
        }
    }

    #[test]
    fn recommended_is_owasp() {
        let p = PasswordPolicy::default();
        assert_eq!((p.m_cost_kib, p.t_cost, p.p_cost), (19456, 2, 1));
    }

    #[test]
    fn dummy_verify_runs() {
        policy().dummy_verify("anything");
        // An impossible policy must not panic either.
        PasswordPolicy { m_cost_kib: 0, t_cost: 0, p_cost: 0 }.dummy_verify("anything");
    }

    #[test]
    fn invalid_policy_is_an_error() {
        let bad = PasswordPolicy { m_cost_kib: 1, t_cost: 1, p_cost: 1 };
        assert!(matches!(bad.hash("pw"), Err(AuthError::Password(_))));
    }
}
