//! UUID text: the hyphenated form PostgreSQL prints, and every form DynamoDB data holds
//! (hyphenated, 32 bare hex digits, either in braces).
//!
//! Input: text or 16 bytes. Output: the other. Nothing here knows DynamoDB or PostgreSQL.

/// The hyphenated lowercase text of a UUID.
#[must_use]
pub fn format_uuid(bytes: &[u8; 16]) -> String {
    let h: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Hex digit values; 0xFF marks a byte that is not one.
const HEX: [u8; 256] = {
    let mut t = [0xFFu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, 32 bare hex digits, or either in braces.
#[must_use]
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let s = s
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .unwrap_or(s);
    let b = s.as_bytes();
    let mut out = [0u8; 16];
    let mut bad = 0u8;
    let mut put = |i: usize, hi: u8, lo: u8| {
        let (h, l) = (HEX[hi as usize], HEX[lo as usize]);
        bad |= h | l;
        out[i] = (h << 4) | (l & 0x0F);
    };
    match b.len() {
        36 => {
            if b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
                return None;
            }
            // Byte i of the UUID starts at this offset of the hyphenated text.
            const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
            for (i, &p) in AT.iter().enumerate() {
                put(i, b[p], b[p + 1]);
            }
        }
        32 => {
            for i in 0..16 {
                put(i, b[2 * i], b[2 * i + 1]);
            }
        }
        _ => return None,
    }
    // Valid digits are < 16; the invalid marker 0xFF sets the high bits.
    (bad & 0xF0 == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_text_both_ways() {
        let b = parse_uuid("{123E4567-E89B-12D3-A456-426614174000}").expect("braced");
        assert_eq!(format_uuid(&b), "123e4567-e89b-12d3-a456-426614174000");
        assert_eq!(parse_uuid("123e4567e89b12d3a456426614174000"), Some(b));
        assert_eq!(parse_uuid("123e4567-e89b-12d3-a456-42661417400g"), None);
        assert_eq!(parse_uuid("123e4567-e89b-12d3-a456+426614174000"), None);
        assert_eq!(parse_uuid(""), None);
    }
}
