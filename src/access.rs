//! Who is calling: roles and callers. Authentication and the per-method rules live here too
//! (see the access layer in `server`).

use std::fmt;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The applicant-facing backend: issues and looks up passes.
    Issuer,
    /// Checkpoint scanners: verify passes and record entries.
    Checkpoint,
    /// Operators: revoke passes, key operations.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Self; 3] = [Self::Issuer, Self::Checkpoint, Self::Admin];

    /// Lower-case name, as in the configuration.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Issuer => "issuer",
            Self::Checkpoint => "checkpoint",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An authenticated caller, as the handlers see it (request extension).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    /// The name given in the configuration; it scopes idempotency keys and appears in the
    /// audit trail and logs.
    pub name: String,
    /// What it may do.
    pub role: Role,
}
