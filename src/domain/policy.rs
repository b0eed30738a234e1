//! An org's credential policy: how long its secrets live, how long a pending one
//! may wait, how many may wait, whether imports are allowed, how long a
//! rotation's grace may be — and the rules that apply it when a secret is issued
//! or activated.
//!
//! A policy applies to secrets issued after it: a secret's lifetime end and its
//! wait for activation are fixed when it is issued, so shortening the policy
//! later does not cut short a secret a client already holds (a rotation planned
//! against its announced end stays valid); the next rotation follows the new
//! policy. `ListClientSecrets` with `expire_before` finds the secrets that a
//! shorter policy would now refuse.

use chrono::{DateTime, Duration, Utc};

use super::Violation;

/// The defaults of a policy never set.
pub const DEFAULT_PENDING_TTL: Duration = Duration::days(7);
/// How many secrets may wait for activation at once, by default.
pub const DEFAULT_MAX_PENDING: u32 = 10;
/// The longest grace period, by default.
pub const DEFAULT_MAX_GRACE: Duration = Duration::days(30);
/// The longest grace period or lifetime any policy may set: a bound, so that
/// durations stay far from overflow.
pub const MAX_DURATION: Duration = Duration::days(3650);

/// The rules an org's secrets follow. `None`: no limit (or no end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialPolicy {
    /// The longest lifetime a new secret may have.
    pub max_secret_lifetime: Option<Duration>,
    /// The lifetime of a new secret that names none.
    pub default_secret_lifetime: Option<Duration>,
    /// How long a PENDING secret may wait for activation.
    pub pending_ttl: Option<Duration>,
    /// How many PENDING secrets an org may hold at once.
    pub max_pending_secrets: Option<u32>,
    /// Whether imports are allowed.
    pub allow_import: bool,
    /// The longest grace period an activation may give.
    pub max_grace_period: Option<Duration>,
}

impl Default for CredentialPolicy {
    fn default() -> Self {
        Self {
            max_secret_lifetime: None,
            default_secret_lifetime: None,
            pending_ttl: Some(DEFAULT_PENDING_TTL),
            max_pending_secrets: Some(DEFAULT_MAX_PENDING),
            allow_import: true,
            max_grace_period: Some(DEFAULT_MAX_GRACE),
        }
    }
}

/// When a new secret should stop verifying, as its request names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiration {
    /// At this time (`expire_time`).
    At(DateTime<Utc>),
    /// After this long (`ttl`).
    After(Duration),
}

impl CredentialPolicy {
    /// Checks a policy's values, naming the field (`credential_policy.<field>`).
    pub fn validate(&self) -> Result<(), Vec<Violation>> {
        let mut violations = Vec::new();
        for (field, value) in [
            ("max_secret_lifetime", self.max_secret_lifetime),
            ("default_secret_lifetime", self.default_secret_lifetime),
            ("pending_ttl", self.pending_ttl),
            ("max_grace_period", self.max_grace_period),
        ] {
            if let Some(value) = value
                && (value <= Duration::zero() || value > MAX_DURATION)
            {
                violations.push(Violation::new(
                    format!("credential_policy.{field}"),
                    "must be zero (no limit) or a positive duration of at most 3650 days",
                ));
            }
        }
        if let (Some(default), Some(max)) = (self.default_secret_lifetime, self.max_secret_lifetime)
            && default > max
        {
            violations.push(Violation::new(
                "credential_policy.default_secret_lifetime",
                format!(
                    "must not be longer than max_secret_lifetime ({})",
                    seconds(max)
                ),
            ));
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(violations)
        }
    }

    /// The lifetime end of a secret issued at `now` with `requested` (or the
    /// default lifetime): INVALID_ARGUMENT naming `ttl` or `expire_time` when it
    /// is in the past or beyond the policy's maximum.
    pub fn lifetime_end(
        &self,
        now: DateTime<Utc>,
        requested: Option<Expiration>,
    ) -> Result<Option<DateTime<Utc>>, Violation> {
        let (field, end) = match requested {
            None => return Ok(self.default_secret_lifetime.map(|d| now + d)),
            Some(Expiration::At(at)) => ("expire_time", at),
            Some(Expiration::After(ttl)) => {
                if ttl <= Duration::zero() {
                    return Err(Violation::new("ttl", "must be positive"));
                }
                if ttl > MAX_DURATION {
                    return Err(Violation::new("ttl", "must be at most 3650 days"));
                }
                ("ttl", now + ttl)
            }
        };
        if end <= now {
            return Err(Violation::new(field, "must be in the future"));
        }
        if let Some(max) = self.max_secret_lifetime
            && end > now + max
        {
            return Err(Violation::new(
                field,
                format!(
                    "is longer than the org's credential_policy.max_secret_lifetime ({})",
                    seconds(max)
                ),
            ));
        }
        Ok(Some(end))
    }

    /// When a secret issued at `now` stops waiting for activation.
    pub fn pending_end(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.pending_ttl.map(|ttl| now + ttl)
    }

    /// Checks a grace period against the policy, naming `field`.
    pub fn check_grace(&self, field: &str, grace: Duration) -> Result<(), Violation> {
        match self.max_grace_period {
            Some(max) if grace > max => Err(Violation::new(
                field,
                format!(
                    "is longer than the org's credential_policy.max_grace_period ({})",
                    seconds(max)
                ),
            )),
            _ if grace > MAX_DURATION => Err(Violation::new(field, "must be at most 3650 days")),
            _ => Ok(()),
        }
    }
}

/// A duration as protobuf's JSON writes it (`7776000s`).
pub fn seconds(duration: Duration) -> String {
    format!("{}s", duration.num_seconds())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn lifetimes_default_and_are_bounded_by_the_maximum() {
        let policy = CredentialPolicy {
            max_secret_lifetime: Some(Duration::days(90)),
            default_secret_lifetime: Some(Duration::days(30)),
            ..CredentialPolicy::default()
        };
        assert_eq!(
            policy.lifetime_end(now(), None),
            Ok(Some(now() + Duration::days(30)))
        );
        assert_eq!(
            policy.lifetime_end(now(), Some(Expiration::After(Duration::days(90)))),
            Ok(Some(now() + Duration::days(90)))
        );
        let too_long = policy
            .lifetime_end(now(), Some(Expiration::After(Duration::days(91))))
            .unwrap_err();
        assert_eq!(too_long.field, "ttl");
        assert!(too_long.reason.contains("7776000s"), "{}", too_long.reason);
        let past = policy
            .lifetime_end(now(), Some(Expiration::At(now() - Duration::seconds(1))))
            .unwrap_err();
        assert_eq!(past.field, "expire_time");
        assert_eq!(
            CredentialPolicy::default().lifetime_end(now(), None),
            Ok(None),
            "no default lifetime: no end"
        );
    }

    #[test]
    fn grace_is_bounded_by_the_policy() {
        let policy = CredentialPolicy::default();
        assert!(
            policy
                .check_grace("grace_period", Duration::days(30))
                .is_ok()
        );
        let err = policy
            .check_grace("grace_period", Duration::days(31))
            .unwrap_err();
        assert_eq!(err.field, "grace_period");
        assert!(err.reason.contains("2592000s"));
        let unlimited = CredentialPolicy {
            max_grace_period: None,
            ..policy
        };
        assert!(
            unlimited
                .check_grace("grace_period", Duration::days(300))
                .is_ok()
        );
    }

    #[test]
    fn a_policy_names_its_broken_fields() {
        let bad = CredentialPolicy {
            max_secret_lifetime: Some(Duration::days(10)),
            default_secret_lifetime: Some(Duration::days(20)),
            pending_ttl: Some(Duration::seconds(-1)),
            ..CredentialPolicy::default()
        };
        let fields: Vec<String> = bad
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            [
                "credential_policy.pending_ttl",
                "credential_policy.default_secret_lifetime"
            ]
        );
        assert!(CredentialPolicy::default().validate().is_ok());
    }
}
