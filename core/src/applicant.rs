//! The applicant's particulars, parsed into types that cannot hold invalid values.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};

/// Inputs longer than this many bytes are refused before any other processing.
const MAX_INPUT_BYTES: usize = 256;

/// A Home Return Permit number, normalised: `H` or `M` then 8 digits, or 10 digits.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PermitNumber(String);

/// Why a permit number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PermitNumberError {
    /// Nothing given.
    #[error("permit number is empty")]
    Empty,
    /// Far longer than any permit number.
    #[error("permit number is too long ({len} bytes)")]
    TooLong {
        /// Length of the input in bytes.
        len: usize,
    },
    /// Not one of the two permit number forms.
    #[error("permit number must be H or M followed by 8 digits, or 10 digits")]
    Malformed,
}

impl PermitNumber {
    /// Parses a permit number, ignoring case and spaces.
    pub fn parse(input: &str) -> Result<Self, PermitNumberError> {
        if input.len() > MAX_INPUT_BYTES {
            return Err(PermitNumberError::TooLong { len: input.len() });
        }
        let normalised: String = input.chars().filter(|c| *c != ' ').map(|c| c.to_ascii_uppercase()).collect();
        if normalised.is_empty() {
            return Err(PermitNumberError::Empty);
        }
        let bytes = normalised.as_bytes();
        let well_formed = match bytes {
            [b'H' | b'M', digits @ ..] => digits.len() == 8 && digits.iter().all(u8::is_ascii_digit),
            digits => digits.len() == 10 && digits.iter().all(u8::is_ascii_digit),
        };
        if well_formed {
            Ok(Self(normalised))
        } else {
            Err(PermitNumberError::Malformed)
        }
    }

    /// The normalised number. It belongs in the signed pass and in keyed hashes, never in logs
    /// or in the database.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number with all but its region letter and last two digits hidden, for display.
    pub fn masked(&self) -> String {
        mask_permit_number(&self.0)
    }
}

/// Masks a normalised permit number the way [`PermitNumber::masked`] does.
pub fn mask_permit_number(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    let keep_head = usize::from(chars.first().is_some_and(char::is_ascii_alphabetic));
    let keep_tail = 2.min(chars.len().saturating_sub(keep_head));
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| if i < keep_head || i >= chars.len() - keep_tail { *c } else { '*' })
        .collect()
}

// The full number must never reach a log line through `{:?}`.
impl fmt::Debug for PermitNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PermitNumber({})", self.masked())
    }
}

/// The holder's name as on the permit: Latin letters, Chinese characters, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderName {
    latin: Option<String>,
    chinese: Option<String>,
}

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Neither a Latin nor a Chinese name was given.
    #[error("a Latin or a Chinese name is required")]
    Missing,
    /// Longer than the limit.
    #[error("name is too long ({chars} characters, at most {max})")]
    TooLong {
        /// Characters given.
        chars: usize,
        /// The limit.
        max: usize,
    },
    /// Only punctuation, no letter or character of the name itself.
    #[error("a {script} name needs at least one letter")]
    NoLetter {
        /// "Latin" or "Chinese".
        script: &'static str,
    },
    /// A character that does not belong in this kind of name.
    #[error("name contains {found:?}, which is not allowed in a {script} name")]
    BadCharacter {
        /// The offending character.
        found: char,
        /// "Latin" or "Chinese".
        script: &'static str,
    },
}

/// Which of the two names an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameField {
    /// The Latin-letter name.
    Latin,
    /// The Chinese-character name.
    Chinese,
}

impl HolderName {
    /// Longest Latin name, in characters.
    pub const MAX_LATIN_CHARS: usize = 64;
    /// Longest Chinese name, in characters.
    pub const MAX_CHINESE_CHARS: usize = 20;

    /// Parses the two names; an empty string means "not given". Latin names are upper-cased and
    /// their spaces collapsed, as printed on permits. Control characters are refused in both,
    /// and in a Latin name so is every other whitespace than the space (a tab or a line break
    /// is not a space that was meant).
    pub fn parse(latin: &str, chinese: &str) -> Result<Self, (NameField, NameError)> {
        let latin = parse_latin(latin).map_err(|e| (NameField::Latin, e))?;
        let chinese = parse_chinese(chinese).map_err(|e| (NameField::Chinese, e))?;
        if latin.is_none() && chinese.is_none() {
            return Err((NameField::Latin, NameError::Missing));
        }
        Ok(Self { latin, chinese })
    }

    /// The Latin-letter name, if given.
    pub fn latin(&self) -> Option<&str> {
        self.latin.as_deref()
    }

    /// The Chinese-character name, if given.
    pub fn chinese(&self) -> Option<&str> {
        self.chinese.as_deref()
    }
}

fn parse_latin(input: &str) -> Result<Option<String>, NameError> {
    let chars = input.chars().count();
    if input.len() > MAX_INPUT_BYTES || chars > HolderName::MAX_LATIN_CHARS * 2 {
        return Err(NameError::TooLong { chars, max: HolderName::MAX_LATIN_CHARS });
    }
    // Before collapsing, which would turn a tab or a CR into a space and hide it.
    if let Some(found) = input.chars().find(|c| c.is_control() || (c.is_whitespace() && *c != ' ')) {
        return Err(NameError::BadCharacter { found, script: "Latin" });
    }
    let collapsed = input.split(' ').filter(|part| !part.is_empty()).collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return Ok(None);
    }
    if let Some(found) =
        collapsed.chars().find(|c| !(c.is_ascii_alphabetic() || matches!(c, ' ' | '-' | '\'' | ',' | '.')))
    {
        return Err(NameError::BadCharacter { found, script: "Latin" });
    }
    if !collapsed.chars().any(|c| c.is_ascii_alphabetic()) {
        return Err(NameError::NoLetter { script: "Latin" });
    }
    let chars = collapsed.chars().count();
    if chars > HolderName::MAX_LATIN_CHARS {
        return Err(NameError::TooLong { chars, max: HolderName::MAX_LATIN_CHARS });
    }
    Ok(Some(collapsed.to_ascii_uppercase()))
}

fn is_han(c: char) -> bool {
    matches!(c as u32,
        0x3400..=0x4DBF      // extension A
        | 0x4E00..=0x9FFF    // unified ideographs
        | 0x20000..=0x2A6DF  // extension B
        | 0x2A700..=0x2EE5F  // extensions C to F and I
        | 0x30000..=0x323AF) // extensions G and H
                             // Compatibility ideographs (U+F900.., U+2F800..) are left out: Unicode normalisation
                             // turns them into other characters, so the same name could be written two ways.
}

fn parse_chinese(input: &str) -> Result<Option<String>, NameError> {
    let chars = input.chars().count();
    if input.len() > MAX_INPUT_BYTES {
        return Err(NameError::TooLong { chars, max: HolderName::MAX_CHINESE_CHARS });
    }
    // Before trimming, which would drop a trailing line break unseen.
    if let Some(found) = input.chars().find(|c| c.is_control()) {
        return Err(NameError::BadCharacter { found, script: "Chinese" });
    }
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    // The middle dot separates parts of transliterated names.
    if let Some(found) = trimmed.chars().find(|c| !(is_han(*c) || *c == '·')) {
        return Err(NameError::BadCharacter { found, script: "Chinese" });
    }
    if !trimmed.chars().any(is_han) {
        return Err(NameError::NoLetter { script: "Chinese" });
    }
    let chars = trimmed.chars().count();
    if chars > HolderName::MAX_CHINESE_CHARS {
        return Err(NameError::TooLong { chars, max: HolderName::MAX_CHINESE_CHARS });
    }
    Ok(Some(trimmed.to_owned()))
}

/// A Mainland mobile number: `+86` then 11 digits starting with 1.
#[derive(Clone, PartialEq, Eq)]
pub struct MobileNumber(String);

/// Why a mobile number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MobileNumberError {
    /// Nothing given.
    #[error("mobile number is empty")]
    Empty,
    /// Not a Mainland mobile number.
    #[error("mobile number must be +86 followed by 11 digits starting with 1")]
    Malformed,
}

impl MobileNumber {
    /// Parses a mobile number, ignoring spaces and hyphens.
    pub fn parse(input: &str) -> Result<Self, MobileNumberError> {
        if input.len() > MAX_INPUT_BYTES {
            return Err(MobileNumberError::Malformed);
        }
        let compact: String = input.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        if compact.is_empty() {
            return Err(MobileNumberError::Empty);
        }
        let national = compact.strip_prefix("+86").ok_or(MobileNumberError::Malformed)?;
        let ok = national.len() == 11 && national.starts_with('1') && national.bytes().all(|b| b.is_ascii_digit());
        if ok {
            Ok(Self(compact))
        } else {
            Err(MobileNumberError::Malformed)
        }
    }

    /// The normalised number, `+86` and 11 digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MobileNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tail = &self.0[self.0.len() - 4..];
        write!(f, "MobileNumber(+86*******{tail})")
    }
}

/// Sex as on the permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sex {
    /// Female.
    Female,
    /// Male.
    Male,
}

/// Why the applicant travels without a valid permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermitSituation {
    /// Still valid but left at home: the pass never outlives the permit.
    NotCarried,
    /// The permit has expired.
    Expired,
    /// The permit is lost.
    Lost,
}

/// How the upstream service checked the applicant's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityCheckMethod {
    /// SMS code to the Mainland number plus face recognition.
    SmsAndFace,
    /// In person, by an officer.
    InPerson,
}

/// The upstream identity check that precedes every application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityCheck {
    /// How the identity was checked.
    pub method: IdentityCheckMethod,
    /// The upstream system's reference.
    pub reference: String,
    /// When the check passed.
    pub checked_at: DateTime<Utc>,
}

/// A caller-chosen token that is empty, too long, not printable ASCII, or starts or ends with
/// a space.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be 1 to {max} printable ASCII characters (U+0020 to U+007E), not starting or ending with a space")]
pub struct TokenError {
    /// The limit.
    pub max: usize,
}

/// Checks an opaque caller-chosen token (request id, scan id, reference, checkpoint id):
/// 1 to `max` printable ASCII characters, U+0020 to U+007E. Spaces are allowed inside
/// (`SZX T3 Gate 1`), but not first or last: two ids that differ only there would look the
/// same in every listing.
pub fn parse_token(input: &str, max: usize) -> Result<&str, TokenError> {
    let ok = !input.is_empty()
        && input.len() <= max
        && input.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
        && !input.starts_with(' ')
        && !input.ends_with(' ');
    if ok {
        Ok(input)
    } else {
        Err(TokenError { max })
    }
}

/// A date that is not `YYYY-MM-DD`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be a date written YYYY-MM-DD")]
pub struct DateError;

/// Parses a calendar date written exactly `YYYY-MM-DD`.
pub fn parse_date(input: &str) -> Result<NaiveDate, DateError> {
    let b = input.as_bytes();
    let shape_ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape_ok {
        return Err(DateError);
    }
    NaiveDate::parse_from_str(input, "%Y-%m-%d").map_err(|_| DateError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permit_numbers_normalise_case_and_spaces() {
        assert_eq!(PermitNumber::parse("h1234 5678").unwrap().as_str(), "H12345678");
        assert_eq!(PermitNumber::parse(" M87654321 ").unwrap().as_str(), "M87654321");
        assert_eq!(PermitNumber::parse("01234 56789").unwrap().as_str(), "0123456789");
    }

    #[test]
    fn permit_numbers_reject_other_forms() {
        for bad in ["H1234567", "H123456789", "X12345678", "123456789", "H1234567A", "H-12345678", "Ｈ12345678"] {
            assert_eq!(PermitNumber::parse(bad), Err(PermitNumberError::Malformed), "{bad}");
        }
        assert_eq!(PermitNumber::parse("   "), Err(PermitNumberError::Empty));
        assert!(matches!(PermitNumber::parse(&"1".repeat(1000)), Err(PermitNumberError::TooLong { .. })));
    }

    #[test]
    fn permit_numbers_mask_for_display() {
        assert_eq!(PermitNumber::parse("H12345678").unwrap().masked(), "H******78");
        assert_eq!(PermitNumber::parse("0123456789").unwrap().masked(), "********89");
        assert!(!format!("{:?}", PermitNumber::parse("H12345678").unwrap()).contains("12345678"));
    }

    #[test]
    fn names_are_normalised_and_checked() {
        let name = HolderName::parse("  chan   tai-man ", "陳大文").unwrap();
        assert_eq!(name.latin(), Some("CHAN TAI-MAN"));
        assert_eq!(name.chinese(), Some("陳大文"));
        assert!(HolderName::parse("", "").is_err());
        assert_eq!(
            HolderName::parse("CHAN 1", ""),
            Err((NameField::Latin, NameError::BadCharacter { found: '1', script: "Latin" }))
        );
        assert!(matches!(HolderName::parse("", "陳 大文"), Err((NameField::Chinese, _))));
        assert!(matches!(HolderName::parse(&"A".repeat(65), ""), Err((NameField::Latin, NameError::TooLong { .. }))));
        assert!(HolderName::parse("", "阿卜杜·热合曼").is_ok());
        assert!(HolderName::parse("", "\u{F900}").is_err());
        // Regression: names of punctuation alone reached the signer.
        assert_eq!(HolderName::parse("-", ""), Err((NameField::Latin, NameError::NoLetter { script: "Latin" })));
        assert_eq!(HolderName::parse("", "·"), Err((NameField::Chinese, NameError::NoLetter { script: "Chinese" })));
    }

    /// Regression (issue 12): CR and TAB in a Latin name were turned into spaces and accepted,
    /// while other control characters were refused.
    #[test]
    fn names_refuse_every_control_character() {
        for found in ['\r', '\t', '\n', '\u{0}', '\u{1b}', '\u{7f}', '\u{85}', '\u{a0}', '\u{2028}', '\u{3000}'] {
            for latin in [format!("CHAN{found}TAI MAN"), format!("CHAN TAI MAN{found}"), format!("{found}CHAN")] {
                assert_eq!(
                    HolderName::parse(&latin, ""),
                    Err((NameField::Latin, NameError::BadCharacter { found, script: "Latin" })),
                    "{latin:?}"
                );
            }
        }
        for found in ['\r', '\t', '\n', '\u{0}', '\u{85}'] {
            assert_eq!(
                HolderName::parse("", &format!("陳大文{found}")),
                Err((NameField::Chinese, NameError::BadCharacter { found, script: "Chinese" })),
                "{found:?}"
            );
        }
        // Spaces are still collapsed and trimmed.
        assert_eq!(HolderName::parse("  CHAN   TAI MAN ", " 陳大文 ").unwrap().latin(), Some("CHAN TAI MAN"));
    }

    #[test]
    fn mobile_numbers_must_be_mainland() {
        assert_eq!(MobileNumber::parse("+86 138-0013-8000").unwrap().as_str(), "+8613800138000");
        for bad in ["13800138000", "+85291234567", "+8623800138000", "+861380013800", "+86138001380000"] {
            assert_eq!(MobileNumber::parse(bad), Err(MobileNumberError::Malformed), "{bad}");
        }
        assert_eq!(MobileNumber::parse(""), Err(MobileNumberError::Empty));
    }

    #[test]
    fn dates_are_strict() {
        assert_eq!(parse_date("2027-02-28").unwrap(), NaiveDate::from_ymd_opt(2027, 2, 28).unwrap());
        for bad in ["2027-2-28", "2027-02-30", "27-02-28", "2027/02/28", "+2027-02-2", ""] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_are_printable_ascii() {
        assert!(parse_token("req-1", 128).is_ok());
        assert!(parse_token("", 128).is_err());
        // Regression (issue 12): "printable ASCII" refused the space.
        assert_eq!(parse_token("SZX T3 Gate 1", 128), Ok("SZX T3 Gate 1"));
        assert!(parse_token("a  b", 128).is_ok());
        for bad in [" a", "a ", " ", "a\tb", "a\nb", "a\u{7f}b", "a\u{a0}b"] {
            assert!(parse_token(bad, 128).is_err(), "{bad:?}");
        }
        assert!(parse_token(&"a".repeat(129), 128).is_err());
    }
}
