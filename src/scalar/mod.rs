//! Values with no DynamoDB or PostgreSQL in them: exact decimals ([`number`]), dates and
//! times both ways ([`time`]), UUID text ([`uuid`]). Every layer above may use them.

pub mod number;
pub mod time;
pub mod uuid;

use std::borrow::Cow;

/// The first 60 characters of a value, for messages.
#[must_use]
pub fn clip(s: &str) -> Cow<'_, str> {
    if s.chars().count() <= 60 {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("{}…", s.chars().take(60).collect::<String>()))
    }
}
