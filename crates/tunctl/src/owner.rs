//! Owners and groups given by name or number, as the C tool reads them.

use nix::unistd::{Group, User};

/// A name or number that matches no user or group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerError {
    /// Neither a user name nor a uid.
    #[error("'{0}' is neither a username nor a numeric uid.")]
    User(String),
    /// Neither a group name nor a gid.
    #[error("'{0}' is neither a groupname nor a numeric group.")]
    Group(String),
}

/// A number in C's `strtol(…, 0)` notation: decimal, `0x` hex or leading-0 octal, all of it.
fn c_number(text: &str) -> Option<u32> {
    let (digits, radix) =
        if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            (hex, 16)
        } else if text.len() > 1 && text.starts_with('0') {
            (&text[1..], 8)
        } else {
            (text, 10)
        };
    u32::from_str_radix(digits, radix).ok()
}

/// A user name first, then a number.
pub fn uid(text: &str) -> Result<u32, OwnerError> {
    if let Ok(Some(user)) = User::from_name(text) {
        return Ok(user.uid.as_raw());
    }
    c_number(text).ok_or_else(|| OwnerError::User(text.to_owned()))
}

/// A group name first, then a number.
pub fn gid(text: &str) -> Result<u32, OwnerError> {
    if let Ok(Some(group)) = Group::from_name(text) {
        return Ok(group.gid.as_raw());
    }
    c_number(text).ok_or_else(|| OwnerError::Group(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_then_numbers() {
        assert_eq!(uid("root"), Ok(0));
        assert_eq!(gid("root"), Ok(0));
        assert_eq!(uid("1000"), Ok(1000));
        assert_eq!(uid("0x3e8"), Ok(1000));
        assert_eq!(uid("01750"), Ok(1000));
        assert_eq!(
            uid("no-such-user-x").unwrap_err().to_string(),
            "'no-such-user-x' is neither a username nor a numeric uid."
        );
        assert!(gid("12abc").is_err());
    }
}
