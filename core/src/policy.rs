//! The issuance rules: who may get a pass, for how long, and how often.

use chrono::{DateTime, Datelike, FixedOffset, Months, NaiveDate, TimeDelta, TimeZone, Utc};

use crate::applicant::{HolderName, IdentityCheck, MobileNumber, PermitNumber, PermitSituation, Sex};
use crate::ids::PassId;
use crate::keys::{HashingSecret, PassSigner};
use crate::pass::{Modes, PassContents, SignedPass, MAX_VALIDITY};

/// Applications a person may make per calendar month (China Standard Time). Issued passes
/// count, revoked ones too; refused applications do not.
pub const MONTHLY_LIMIT: u32 = 2;

/// Permits are issued for at most 10 years; a later expiry date is a typing error.
const MAX_PERMIT_YEARS_AHEAD: i32 = 11;

/// China Standard Time, UTC+8, in which months and dates are counted.
pub fn china_standard_time() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

/// A calendar month in China Standard Time: the unit of the application quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QuotaMonth {
    year: i32,
    month: u32,
}

impl QuotaMonth {
    /// The month in which `instant` falls, in China Standard Time.
    pub fn of(instant: DateTime<Utc>) -> Self {
        let local = instant.with_timezone(&china_standard_time());
        Self { year: local.year(), month: local.month() }
    }

    /// The first instant of the following month, when a new quota starts.
    pub fn next_start(self) -> DateTime<Utc> {
        let (year, month) = if self.month == 12 { (self.year + 1, 1) } else { (self.year, self.month + 1) };
        china_standard_time()
            .with_ymd_and_hms(year, month, 1, 0, 0, 0)
            .single()
            .expect("midnight at a fixed offset is unambiguous")
            .with_timezone(&Utc)
    }
}

impl std::fmt::Display for QuotaMonth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// The first instant after `date` ends in China Standard Time.
fn end_of_day(date: NaiveDate) -> DateTime<Utc> {
    let next = date.succ_opt().unwrap_or(NaiveDate::MAX);
    china_standard_time()
        .from_local_datetime(&next.and_hms_opt(0, 0, 0).expect("midnight exists"))
        .single()
        .expect("a fixed offset has no gaps")
        .with_timezone(&Utc)
}

/// The validity window of a pass issued at `issued_at`: 7 days, cut at the end of the permit's
/// expiry date when the permit is still valid (only not carried).
pub fn validity_window(
    issued_at: DateTime<Utc>,
    situation: PermitSituation,
    permit_expiry: NaiveDate,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let mut until = issued_at + MAX_VALIDITY;
    if situation == PermitSituation::NotCarried {
        until = until.min(end_of_day(permit_expiry));
    }
    (issued_at, until)
}

/// Settings of the issuance rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssuancePolicy {
    /// How old the upstream identity check may be when the application arrives.
    pub identity_check_max_age: TimeDelta,
    /// How far in the future an identity check time may lie (the upstream clock may be ahead).
    pub identity_check_clock_skew: TimeDelta,
}

impl Default for IssuancePolicy {
    /// 10 minutes: the applicant is issued the pass in the same session as the face check.
    /// 1 minute of clock skew.
    fn default() -> Self {
        Self { identity_check_max_age: TimeDelta::minutes(10), identity_check_clock_skew: TimeDelta::minutes(1) }
    }
}

/// A complete, well-formed application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    /// The permit number.
    pub permit: PermitNumber,
    /// The name as on the permit.
    pub name: HolderName,
    /// Sex as on the permit.
    pub sex: Sex,
    /// The permit's expiry date.
    pub permit_expiry: NaiveDate,
    /// Why the permit is not at hand.
    pub situation: PermitSituation,
    /// The Mainland mobile number.
    pub mobile: MobileNumber,
    /// The upstream identity check.
    pub identity_check: IdentityCheck,
    /// Modes the pass is to allow.
    pub modes: Modes,
}

/// An application that is well-formed but breaks a rule that depends on the time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplicationProblem {
    /// The identity check is older than the policy allows.
    #[error("identity check at {checked_at} is older than {max_age_minutes} minutes")]
    IdentityCheckStale {
        /// When the check passed.
        checked_at: DateTime<Utc>,
        /// The bound.
        max_age_minutes: i64,
    },
    /// The identity check lies in the future.
    #[error("identity check time {checked_at} is in the future")]
    IdentityCheckInFuture {
        /// When the check claims to have passed.
        checked_at: DateTime<Utc>,
    },
    /// Said not carried, but the permit's expiry date has passed.
    #[error("permit expired on {expiry}; apply as EXPIRED")]
    PermitHasExpired {
        /// The expiry date.
        expiry: NaiveDate,
    },
    /// Said expired, but the expiry date has not passed.
    #[error("permit is valid until {expiry}, so it has not expired")]
    PermitNotExpired {
        /// The expiry date.
        expiry: NaiveDate,
    },
    /// An expiry date no permit can have.
    #[error("permit expiry {expiry} is implausible")]
    PermitExpiryImplausible {
        /// The expiry date.
        expiry: NaiveDate,
    },
}

impl ApplicationProblem {
    /// The application field at fault, named as in the API (`applicant.permit_expiry`, ...).
    pub fn field(&self) -> &'static str {
        match self {
            Self::IdentityCheckStale { .. } | Self::IdentityCheckInFuture { .. } => "identity_check.checked_at",
            Self::PermitHasExpired { .. } | Self::PermitNotExpired { .. } => "applicant.permit_situation",
            Self::PermitExpiryImplausible { .. } => "applicant.permit_expiry",
        }
    }
}

impl Application {
    /// Checks the rules that depend on `now`, all of them, so that the caller learns every
    /// problem at once.
    pub fn check(&self, now: DateTime<Utc>, policy: &IssuancePolicy) -> Result<(), Vec<ApplicationProblem>> {
        let mut problems = Vec::new();
        let checked_at = self.identity_check.checked_at;
        if checked_at > now + policy.identity_check_clock_skew {
            problems.push(ApplicationProblem::IdentityCheckInFuture { checked_at });
        } else if now - checked_at > policy.identity_check_max_age {
            problems.push(ApplicationProblem::IdentityCheckStale {
                checked_at,
                max_age_minutes: policy.identity_check_max_age.num_minutes(),
            });
        }
        let today = now.with_timezone(&china_standard_time()).date_naive();
        let expiry = self.permit_expiry;
        // Months, not years: from 29 February, the same day 11 years on may not exist.
        let latest =
            today.checked_add_months(Months::new(12 * MAX_PERMIT_YEARS_AHEAD as u32)).unwrap_or(NaiveDate::MAX);
        let earliest = NaiveDate::from_ymd_opt(1980, 1, 1).expect("valid date");
        if expiry > latest || expiry < earliest {
            problems.push(ApplicationProblem::PermitExpiryImplausible { expiry });
        } else {
            match self.situation {
                PermitSituation::NotCarried if expiry < today => {
                    problems.push(ApplicationProblem::PermitHasExpired { expiry });
                }
                PermitSituation::Expired if expiry >= today => {
                    problems.push(ApplicationProblem::PermitNotExpired { expiry });
                }
                PermitSituation::NotCarried | PermitSituation::Expired | PermitSituation::Lost => {}
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The keyed hash the quota is counted on: the permit number never reaches the database.
    pub fn holder_key(&self, secret: &HashingSecret) -> [u8; 32] {
        holder_key(&self.permit, secret)
    }

    /// A keyed digest of everything in the application, to tell a retry of the same request
    /// from a different request that reuses its id.
    pub fn fingerprint(&self, secret: &HashingSecret) -> [u8; 32] {
        let Self { permit, name, sex, permit_expiry, situation, mobile, identity_check, modes } = self;
        let expiry = permit_expiry.to_string();
        let checked_at = identity_check.checked_at.timestamp_micros().to_be_bytes();
        let sex = format!("{sex:?}");
        let situation = format!("{situation:?}");
        let method = format!("{:?}", identity_check.method);
        secret.keyed_hash(
            "application",
            &[
                permit.as_str().as_bytes(),
                name.latin().unwrap_or_default().as_bytes(),
                name.chinese().unwrap_or_default().as_bytes(),
                sex.as_bytes(),
                expiry.as_bytes(),
                situation.as_bytes(),
                mobile.as_str().as_bytes(),
                method.as_bytes(),
                identity_check.reference.as_bytes(),
                &checked_at,
                &modes.bits().to_be_bytes(),
            ],
        )
    }

    /// The contents of the pass this application gets when issued at `now`.
    pub fn pass_contents(&self, pass_id: PassId, now: DateTime<Utc>) -> PassContents {
        let issued_at = DateTime::from_timestamp(now.timestamp(), 0).expect("whole seconds of a valid time");
        let (valid_from, valid_until) = validity_window(issued_at, self.situation, self.permit_expiry);
        PassContents {
            pass_id,
            holder: self.name.clone(),
            permit: self.permit.clone(),
            issued_at,
            valid_from,
            valid_until,
            modes: self.modes,
            entries_allowed: 1,
        }
    }

    /// Checks the application and signs its pass. The monthly quota is not checked here: it
    /// needs the store, which counts and inserts in one transaction.
    pub fn issue(
        &self,
        pass_id: PassId,
        now: DateTime<Utc>,
        policy: &IssuancePolicy,
        signer: &PassSigner,
    ) -> Result<SignedPass, Vec<ApplicationProblem>> {
        self.check(now, policy)?;
        Ok(SignedPass::sign(self.pass_contents(pass_id, now), signer))
    }
}

/// The keyed hash of a permit number that the quota is counted on.
pub fn holder_key(permit: &PermitNumber, secret: &HashingSecret) -> [u8; 32] {
    secret.keyed_hash("holder", &[permit.as_str().as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::applicant::IdentityCheckMethod;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn application(now: DateTime<Utc>, situation: PermitSituation, expiry: &str) -> Application {
        Application {
            permit: PermitNumber::parse("H12345678").unwrap(),
            name: HolderName::parse("CHAN TAI MAN", "").unwrap(),
            sex: Sex::Male,
            permit_expiry: crate::applicant::parse_date(expiry).unwrap(),
            situation,
            mobile: MobileNumber::parse("+8613800138000").unwrap(),
            identity_check: IdentityCheck {
                method: IdentityCheckMethod::SmsAndFace,
                reference: "face-1".into(),
                checked_at: now - TimeDelta::minutes(1),
            },
            modes: Modes::AIR_AND_RAIL,
        }
    }

    #[test]
    fn month_turns_at_utc_plus_8_midnight() {
        assert_eq!(QuotaMonth::of(at("2026-11-30T15:59:59Z")).to_string(), "2026-11");
        assert_eq!(QuotaMonth::of(at("2026-11-30T16:00:00Z")).to_string(), "2026-12");
        assert_eq!(QuotaMonth::of(at("2026-11-30T15:59:59Z")).next_start(), at("2026-11-30T16:00:00Z"));
        assert_eq!(QuotaMonth::of(at("2026-12-15T00:00:00Z")).next_start(), at("2026-12-31T16:00:00Z"));
    }

    #[test]
    fn pass_lasts_seven_days() {
        let now = at("2026-11-26T10:00:00Z");
        let (from, until) = validity_window(now, PermitSituation::Lost, NaiveDate::from_ymd_opt(2030, 1, 1).unwrap());
        assert_eq!(from, now);
        assert_eq!(until, at("2026-12-03T10:00:00Z"));
    }

    #[test]
    fn pass_never_outlives_a_valid_permit() {
        let now = at("2026-11-26T10:00:00Z");
        let expiry = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
        let (_, until) = validity_window(now, PermitSituation::NotCarried, expiry);
        // End of 28 November in UTC+8.
        assert_eq!(until, at("2026-11-28T16:00:00Z"));
        // An expired or lost permit does not cut the window.
        let (_, until) = validity_window(now, PermitSituation::Expired, expiry);
        assert_eq!(until, at("2026-12-03T10:00:00Z"));
    }

    #[test]
    fn identity_check_must_be_recent() {
        let now = at("2026-11-26T10:00:00Z");
        let mut app = application(now, PermitSituation::Lost, "2030-01-01");
        assert!(app.check(now, &IssuancePolicy::default()).is_ok());
        app.identity_check.checked_at = now - TimeDelta::minutes(11);
        let problems = app.check(now, &IssuancePolicy::default()).unwrap_err();
        assert!(matches!(problems[..], [ApplicationProblem::IdentityCheckStale { .. }]));
        app.identity_check.checked_at = now + TimeDelta::minutes(2);
        let problems = app.check(now, &IssuancePolicy::default()).unwrap_err();
        assert!(matches!(problems[..], [ApplicationProblem::IdentityCheckInFuture { .. }]));
    }

    #[test]
    fn situation_must_match_expiry() {
        let now = at("2026-11-26T10:00:00Z");
        let policy = IssuancePolicy::default();
        assert!(application(now, PermitSituation::NotCarried, "2026-11-26").check(now, &policy).is_ok());
        assert!(application(now, PermitSituation::NotCarried, "2026-11-25").check(now, &policy).is_err());
        assert!(application(now, PermitSituation::Expired, "2026-11-25").check(now, &policy).is_ok());
        assert!(application(now, PermitSituation::Expired, "2026-11-26").check(now, &policy).is_err());
        assert!(application(now, PermitSituation::Lost, "2099-01-01").check(now, &policy).is_err());
    }

    /// Regression: on 29 February the 11-year bound did not exist and any expiry passed.
    #[test]
    fn implausible_expiry_is_refused_on_a_leap_day() {
        let now = at("2028-02-29T04:00:00Z");
        let problems = application(now, PermitSituation::Lost, "2099-01-01").check(now, &IssuancePolicy::default());
        assert!(matches!(problems.unwrap_err()[..], [ApplicationProblem::PermitExpiryImplausible { .. }]));
    }

    /// Every field of an application, changed one at a time, changes its fingerprint: a retry
    /// that differs in any of them is another application, never a replay of the first.
    #[test]
    fn fingerprint_changes_with_any_field() {
        let secret = HashingSecret::from_bytes([1; 32]);
        let checked_at = at("2026-11-26T09:59:00Z");
        // Built from literals each time, so that the baseline is not the value under test.
        let baseline = || Application {
            permit: PermitNumber::parse("H12345678").unwrap(),
            name: HolderName::parse("CHAN TAI MAN", "陳大文").unwrap(),
            sex: Sex::Male,
            permit_expiry: NaiveDate::from_ymd_opt(2030, 1, 1).unwrap(),
            situation: PermitSituation::Lost,
            mobile: MobileNumber::parse("+8613800138000").unwrap(),
            identity_check: IdentityCheck {
                method: IdentityCheckMethod::SmsAndFace,
                reference: "face-1".into(),
                checked_at,
            },
            modes: Modes::AIR_AND_RAIL,
        };
        let expected = baseline().fingerprint(&secret);
        assert_eq!(baseline().fingerprint(&secret), expected, "the fingerprint is a function of the fields");
        assert_ne!(
            baseline().fingerprint(&HashingSecret::from_bytes([2; 32])),
            expected,
            "the fingerprint is keyed by the secret"
        );

        type Change = (&'static str, fn(&mut Application));
        let changes: Vec<Change> = vec![
            ("permit", |a| a.permit = PermitNumber::parse("H12345679").unwrap()),
            ("name (Latin)", |a| a.name = HolderName::parse("CHAN TAI MEN", "陳大文").unwrap()),
            ("name (Chinese)", |a| a.name = HolderName::parse("CHAN TAI MAN", "陳小文").unwrap()),
            ("name (Chinese left out)", |a| a.name = HolderName::parse("CHAN TAI MAN", "").unwrap()),
            ("sex", |a| a.sex = Sex::Female),
            ("permit_expiry", |a| a.permit_expiry = NaiveDate::from_ymd_opt(2030, 1, 2).unwrap()),
            ("situation (expired)", |a| a.situation = PermitSituation::Expired),
            ("situation (not carried)", |a| a.situation = PermitSituation::NotCarried),
            ("mobile", |a| a.mobile = MobileNumber::parse("+8613800138001").unwrap()),
            ("identity_check.method", |a| a.identity_check.method = IdentityCheckMethod::InPerson),
            ("identity_check.reference", |a| a.identity_check.reference = "face-2".into()),
            ("identity_check.checked_at", |a| a.identity_check.checked_at += TimeDelta::seconds(1)),
            ("modes (air)", |a| a.modes = Modes::AIR_ONLY),
            ("modes (rail)", |a| a.modes = Modes::RAIL_ONLY),
        ];
        // Names every field, without `..`: a new field of Application fails to compile here
        // until it has a change above.
        let Application {
            permit: _,
            name: _,
            sex: _,
            permit_expiry: _,
            situation: _,
            mobile: _,
            identity_check,
            modes: _,
        } = baseline();
        let IdentityCheck { method: _, reference: _, checked_at: _ } = identity_check;

        let mut seen = vec![("baseline", expected)];
        for (field, change) in changes {
            let mut changed = baseline();
            change(&mut changed);
            assert_ne!(changed, baseline(), "{field}: the change changes the application");
            let fingerprint = changed.fingerprint(&secret);
            assert_ne!(fingerprint, expected, "{field}: changing it must change the fingerprint");
            if let Some((other, _)) = seen.iter().find(|(_, f)| *f == fingerprint) {
                panic!("{field} and {other} give the same fingerprint");
            }
            seen.push((field, fingerprint));
        }
    }
}
