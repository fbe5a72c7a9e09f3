//! Percent-encoding (RFC 3986), the little the gateway needs: decoding CloudEvents binary-mode
//! headers and a SAS token's fields, and encoding a token's fields. Pure.

/// Decodes `%XX` escapes; `None` if an escape is broken or the result is not UTF-8. Nothing else
/// is special (a `+` stays a `+`), which is what both the CloudEvents HTTP binding and IoT Hub's
/// tokens mean.
pub(crate) fn percent_decode(value: &[u8]) -> Option<String> {
    let mut decoded = Vec::with_capacity(value.len());
    let mut index = 0;
    while index < value.len() {
        if value[index] == b'%' {
            let hex = value.get(index + 1..index + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(value[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// Encodes every byte except RFC 3986's unreserved characters (letters, digits, `-._~`), as
/// `encodeURIComponent` and Python's `quote(text, safe="")` do, with upper-case hex.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refusals() {
        assert_eq!(percent_encode("devices/pump-1:a b+=/"), "devices%2Fpump-1%3Aa%20b%2B%3D%2F");
        assert_eq!(percent_decode(b"devices%2Fpump-1%3aa%20b+"), Some("devices/pump-1:a b+".to_string()));
        let text = "x/y+z=é";
        assert_eq!(percent_decode(percent_encode(text).as_bytes()).as_deref(), Some(text));
        assert_eq!(percent_decode(b"%zz"), None);
        assert_eq!(percent_decode(b"%2"), None);
        assert_eq!(percent_decode(b"%ff"), None);
    }
}
