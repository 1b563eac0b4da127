//! C strings inside fixed-size fields.

/// The bytes before the first NUL, or all of them when there is none.
pub(crate) fn until_nul(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&b| b == 0) {
        Some(nul) => &bytes[..nul],
        None => bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::until_nul;

    #[test]
    fn stops_at_the_first_nul() {
        assert_eq!(until_nul(b"ab\0cd\0"), b"ab");
        assert_eq!(until_nul(b"abc"), b"abc");
        assert_eq!(until_nul(b""), b"");
    }
}
